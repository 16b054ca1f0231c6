"""The interface every embedding backend implements."""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image


def file_revision(path: Path | str) -> str:
    """Short content hash of a weights file; vectors or tokens of two revisions must not mix."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()[:12]


def module_revision(module: torch.nn.Module) -> str:
    """Short hash of a module's parameters and buffers: names what it computes, whatever file
    it came in (a fine-tuned scorer keeps its frozen parts, and so their revision)."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().float().numpy().tobytes())
    return h.hexdigest()[:12]


@dataclass
class ImageEmbedding:
    """Pooled L2-normalised vectors ``[B, D]`` and region tokens ``[B, N, C]`` for re-ranking."""

    vectors: torch.Tensor
    tokens: torch.Tensor


@dataclass
class TextEmbedding:
    """Pooled unit vectors ``[B, D]``, token states ``[B, T, C]`` and their mask ``[B, T]``."""

    vectors: torch.Tensor
    states: torch.Tensor
    mask: torch.Tensor


class Embedder(ABC):
    """A bi-encoder that maps images and texts into one space.

    ``transform`` turns a decoded RGB ``PIL.Image`` into a ``[3, H, W]`` tensor; it is kept apart
    from the network so DataLoader workers can run it without a copy of the weights.
    """

    model_id: str
    dim: int
    #: Identifies the weights behind ``model_id`` (e.g. a content hash); vectors of two revisions
    #: are not comparable. Empty when the name alone pins the weights.
    revision: str = ""
    device: torch.device = torch.device("cpu")

    @property
    @abstractmethod
    def transform(self) -> Callable[[Image.Image], torch.Tensor]: ...

    @abstractmethod
    def encode_images(self, pixels: torch.Tensor) -> ImageEmbedding:
        """Embed a batch of transformed images ``[B, 3, H, W]``."""

    @abstractmethod
    def encode_texts(self, texts: Sequence[str]) -> TextEmbedding:
        """Embed a batch of texts, truncated to the model's token limit."""

    def encode_as(self, texts: Sequence[str], label: bool) -> TextEmbedding:
        """Embed ``texts`` all as labels or all as captions, for a model that scores the two
        differently (vtsearch-lite: see ``reads_as_label``); others as ``encode_texts`` does.
        Stored texts and text-to-text queries are captions, so their scores compare."""
        return self.encode_texts(texts)

    def reads_as_label(self, text: str) -> bool:
        """Whether ``encode_texts`` scores ``text`` as a label (never, for most models)."""
        return False

    def text_tokens(self, text: str) -> list[str]:
        """The tokens of ``text`` whose states ``encode_texts([text])`` gives, in order (WordPiece
        pieces as the tokenizer writes them, e.g. ``["[CLS]", "skate", "##board", "[SEP]"]``)."""
        raise NotImplementedError(f"model '{self.model_id}' does not list its text tokens")

    @abstractmethod
    def to(self, device: torch.device | str) -> Embedder: ...

    def encode_pil(self, images: Sequence[Image.Image]) -> ImageEmbedding:
        batch = torch.stack([self.transform(im.convert("RGB")) for im in images])
        return self.encode_images(batch)
