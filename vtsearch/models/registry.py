"""Pick an embedding backend by name."""

from __future__ import annotations

import torch

from vtsearch.models.base import Embedder

LITE = "vtsearch-lite"


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """The device asked for, else CUDA when present, else the CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_embedder(name: str, device: str | torch.device | None = None) -> Embedder:
    """``vtsearch-lite`` (offline default) or any CLIP/SigLIP hub name or local folder.

    Example:
        >>> emb = load_embedder("vtsearch-lite")  # doctest: +SKIP
    """
    dev = resolve_device(device)
    if name == LITE:
        from vtsearch.models.lite import load_lite

        return load_lite(device=dev)
    from vtsearch.models.hf import HFEmbedder

    return HFEmbedder(name, device=dev)
