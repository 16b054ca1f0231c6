"""Frozen tower features, extracted once and cached on disk.

The towers of vtsearch-lite are locked, so training and evaluation only ever need their outputs.
Decoding and running EfficientNet-Lite0 over Flickr8k takes minutes on a laptop CPU; the cache
turns every later run into a file read. Cache files are keyed by a hash of the inputs, so a changed
image list or caption list never reads stale features.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file, save_file

from vtsearch.errors import DatasetError
from vtsearch.indexer.decode import decode_loader
from vtsearch.models.towers import quiet_text_tower

DEFAULT_CACHE_DIR = Path(__file__).resolve().parents[1] / ".cache" / "features"
# Bump when a tower or its preprocessing changes so old caches are ignored.
FEATURE_VERSION = "lite0-minilm-v1"


def _key(kind: str, items: Sequence[str]) -> str:
    h = hashlib.sha1(f"{FEATURE_VERSION}:{kind}".encode())
    for item in items:
        h.update(item.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def image_features(
    paths: Sequence[Path | str],
    cache_dir: Path | str | None = None,
    *,
    tower: torch.nn.Module | None = None,
    batch_size: int = 64,
    num_workers: int = 2,
) -> dict[str, np.ndarray]:
    """Pooled features and ImageNet logits of EfficientNet-Lite0 for each image, cached.

    Args:
        paths: image files, in the order the rows should come back.
        cache_dir: where the ``.safetensors`` cache lives (default ``<repo>/.cache/features``).
        tower: an ``ImageTower`` to reuse; built on demand only when the cache misses.
        batch_size: images per forward pass.
        num_workers: DataLoader processes that decode and resize.

    Returns:
        ``{"pooled": float32 [N, 1280], "logits": float32 [N, 1000]}``.

    Example:
        >>> feats = image_features([Path("a.jpg"), Path("b.jpg")])  # doctest: +SKIP
        >>> feats["pooled"].shape
        (2, 1280)
    """
    paths = [Path(p) for p in paths]
    cache = Path(cache_dir) if cache_dir is not None else DEFAULT_CACHE_DIR
    file = cache / f"img-{_key('image', [str(p.resolve()) for p in paths])}.safetensors"
    if file.exists():
        return load_file(str(file))
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise DatasetError(f"{len(missing)} image(s) missing, e.g. {missing[0]}")

    from vtsearch.models.towers import ImageTower, lite_transform

    tower = tower if tower is not None else ImageTower()
    # The indexer's own decoder, so training sees exactly the pixels that indexing will.
    loader = decode_loader([str(p) for p in paths], lite_transform(), batch_size, num_workers)
    pooled, logits = [], []
    with torch.inference_mode():
        for pixels, decoded in loader:
            bad = [d for d in decoded if d.error is not None]
            if bad:
                raise DatasetError(f"cannot read image {paths[bad[0].index]}: {bad[0].error}")
            p, _, lg = tower(pixels)
            pooled.append(p.float().numpy())
            logits.append(lg.float().numpy())
    out = {"pooled": np.concatenate(pooled), "logits": np.concatenate(logits)}
    cache.mkdir(parents=True, exist_ok=True)
    save_file(out, str(file))
    return out


def text_features(
    texts: Sequence[str],
    cache_dir: Path | str | None = None,
    *,
    tower: torch.nn.Module | None = None,
    batch_size: int = 256,
) -> np.ndarray:
    """L2-normalised mean-pooled all-MiniLM-L6-v2 vectors for each text, cached.

    Args:
        texts: the sentences, in row order.
        cache_dir: where the cache lives (default ``<repo>/.cache/features``).
        tower: a ``TextTower`` to reuse; built on demand only when the cache misses.
        batch_size: texts per forward pass.

    Returns:
        float32 ``[N, 384]``.

    Example:
        >>> text_features(["a dog runs", "two people"]).shape  # doctest: +SKIP
        (2, 384)
    """
    texts = list(texts)
    cache = Path(cache_dir) if cache_dir is not None else DEFAULT_CACHE_DIR
    file = cache / f"txt-{_key('text', texts)}.safetensors"
    if file.exists():
        return load_file(str(file))["pooled"]

    from vtsearch.models.towers import TextTower

    tower = tower if tower is not None else quiet_text_tower()
    # Sorting by length keeps padding, and so wasted compute, small.
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = np.zeros((len(texts), TextTower.feature_dim), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            pooled, _, _ = tower([texts[i] for i in idx])
            out[idx] = pooled.float().numpy()
    cache.mkdir(parents=True, exist_ok=True)
    save_file({"pooled": out}, str(file))
    return out
