"""Hugging Face CLIP-family bi-encoders (CLIP, SigLIP) by hub name or local folder."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from vtsearch.errors import ModelNotFoundError
from vtsearch.models.base import Embedder, ImageEmbedding, TextEmbedding

SUPPORTED = ("clip", "siglip", "siglip2")


class HFTransform:
    """Image processor of the checkpoint as a PIL -> tensor callable (picklable for workers)."""

    def __init__(self, processor) -> None:
        self.processor = processor

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return self.processor(images=image, return_tensors="pt")["pixel_values"][0]


def _pooled(out) -> torch.Tensor:
    # transformers 5 returns an output object; 4.x returned the projected tensor itself.
    return out if isinstance(out, torch.Tensor) else out.pooler_output


class HFEmbedder(Embedder):
    """A ``CLIPModel``/``SiglipModel`` checkpoint.

    Example:
        >>> emb = HFEmbedder("openai/clip-vit-base-patch32")  # doctest: +SKIP
        >>> emb.encode_texts(["a red car"]).vectors.shape  # doctest: +SKIP
        torch.Size([1, 512])
    """

    def __init__(self, name_or_path: str, device: torch.device | str = "cpu") -> None:
        from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        local = Path(name_or_path).expanduser()
        source = str(local.resolve()) if local.is_dir() else name_or_path
        try:
            config = AutoConfig.from_pretrained(source)
            if config.model_type not in SUPPORTED:
                raise ModelNotFoundError(
                    f"model '{name_or_path}' is a '{config.model_type}' checkpoint; vtsearch "
                    f"embeds with {', '.join(SUPPORTED)} checkpoints or 'vtsearch-lite'"
                )
            self.model = AutoModel.from_pretrained(source).eval()
            self.tokenizer = AutoTokenizer.from_pretrained(source)
            self._transform = HFTransform(AutoImageProcessor.from_pretrained(source))
        except OSError as e:
            if local.is_dir():
                # A folder that is there but cannot be read whole: say what failed, not "offline".
                raise ModelNotFoundError(
                    f"cannot load model from the folder {source}: {e}; check that its files are "
                    "readable (chmod a+r) and complete"
                ) from e
            raise ModelNotFoundError(
                f"cannot load model '{name_or_path}': it is not a local folder and could not be "
                "downloaded from the Hugging Face hub (no network?). Download it on a machine "
                "with a network (huggingface-cli download NAME --local-dir DIR) and pass "
                "--model DIR."
            ) from e
        # A local folder is recorded by its absolute path, so the collection's model check does
        # not depend on the directory vtsearch was started from.
        self.model_id = source if local.is_dir() else name_or_path
        self.model_type = config.model_type
        self.dim = int(getattr(config, "projection_dim", None) or config.text_config.hidden_size)
        self.max_tokens = int(config.text_config.max_position_embeddings)
        self.to(device)

    @property
    def transform(self) -> HFTransform:
        return self._transform

    def to(self, device: torch.device | str) -> HFEmbedder:
        self.device = torch.device(device)
        self.model.to(self.device)
        return self

    @torch.inference_mode()
    def encode_images(self, pixels: torch.Tensor) -> ImageEmbedding:
        out = self.model.get_image_features(pixel_values=pixels.to(self.device))
        tokens = out.last_hidden_state if not isinstance(out, torch.Tensor) else out[:, None]
        return ImageEmbedding(F.normalize(_pooled(out).float(), dim=-1), tokens)

    @torch.inference_mode()
    def encode_texts(self, texts: Sequence[str]) -> TextEmbedding:
        # SigLIP was trained on max_length padding; CLIP pads to the longest text.
        padding = "max_length" if self.model_type.startswith("siglip") else True
        enc = self.tokenizer(
            list(texts),
            padding=padding,
            truncation=True,
            max_length=self.max_tokens,
            return_tensors="pt",
        ).to(self.device)
        kwargs = {"input_ids": enc["input_ids"]}
        if "attention_mask" in enc and not self.model_type.startswith("siglip"):
            kwargs["attention_mask"] = enc["attention_mask"]
        out = self.model.get_text_features(**kwargs)
        states = out.last_hidden_state if not isinstance(out, torch.Tensor) else out[:, None]
        mask = enc.get("attention_mask", torch.ones_like(enc["input_ids"])).bool()
        return TextEmbedding(F.normalize(_pooled(out).float(), dim=-1), states, mask)
