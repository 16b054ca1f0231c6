"""Fit a model's tag calibration on Flickr8k dev: how its image-label similarity (the prompt
ensemble of ``vtsearch.indexer.tagging``) maps to the chance that the label fits the image.

The truth is whether any of an image's five captions names the label (or its plural); the
labels are concrete nouns common in Flickr8k *train* captions, fixed below, none taken from the
zero-shot dev sets. Captions leave out much of what a photo shows, so "not named" is a noisy
negative and the fitted confidences are, if anything, modest. A logistic curve (Platt scaling:
two parameters for the model, none per label) is fitted by Newton steps, and the threshold kept
is the lowest at which kept labels are right at least ``PRECISION`` of the time over all (image,
label) pairs: a tag should more often be right than wrong, and the top-k fallback gives every
image one anyway. (The F1-best threshold, 0.17 for vtsearch-lite, kept 4 to 7 of 5 to 10 labels
per photo on the zero-shot dev sets, at precision 0.12 to 0.23 outside ImageNet.)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from vtsearch.errors import DatasetError
from vtsearch.indexer.decode import decode_loader
from vtsearch.indexer.tagging import label_vectors
from vtsearch.models.base import Embedder
from vtsearch.models.calibration import TagCalibration
from vtsearch.training.datasets import load_flickr_split

#: Concrete nouns among the 250 words most Flickr8k train images' captions use.
NOUNS = (
    "man", "dog", "boy", "woman", "shirt", "girl", "water", "child", "grass", "field", "ball",
    "street", "snow", "jacket", "beach", "bike", "park", "hat", "wall", "building", "crowd",
    "mountain", "rock", "toy", "dirt", "hill", "ocean", "road", "shorts", "sidewalk", "sand",
    "bicycle", "helmet", "lake", "city", "pool", "tree", "coat", "pants", "fence", "skateboard",
    "jeans", "stick", "dress", "baby", "uniform", "yard", "track", "ramp", "car", "river", "woods",
)  # fmt: skip
_IRREGULAR = {"man": ("men",), "woman": ("women",), "child": ("children",)}
PRECISION = 0.5


@dataclass
class CalibrationFit:
    calibration: TagCalibration
    pairs: int
    positives: int
    precision: float
    recall: float
    f1: float
    #: Precision of keeping each image's most likely label only, for comparison.
    top1_precision: float


def named(captions: list[str], noun: str) -> bool:
    words = {w for c in captions for w in re.findall(r"[a-z]+", c.lower())}
    forms = {noun, noun + "s", noun + "es", *_IRREGULAR.get(noun, ())}
    return bool(words & forms)


def image_vectors(embedder: Embedder, paths: list[Path], batch_size: int = 64) -> np.ndarray:
    """The model's image vectors, decoded the way the indexer decodes."""
    out = []
    loader = decode_loader([str(p) for p in paths], embedder.transform, batch_size, 2)
    with torch.inference_mode():
        for pixels, decoded in loader:
            bad = [d for d in decoded if d.error is not None]
            if bad:
                raise DatasetError(f"cannot read image {paths[bad[0].index]}: {bad[0].error}")
            out.append(embedder.encode_images(pixels.to(embedder.device)).vectors.float().cpu())
    return torch.cat(out).numpy()


def fit_platt(scores: np.ndarray, truth: np.ndarray, steps: int = 50) -> tuple[float, float]:
    """Slope and bias of ``sigmoid(slope * score + bias)`` that best predict ``truth``, by
    Newton's method on the log loss (with Platt's smoothed targets)."""
    pos = truth.sum()
    neg = truth.size - pos
    target = np.where(truth, (pos + 1) / (pos + 2), 1 / (neg + 2))
    x = np.stack([scores, np.ones_like(scores)], axis=1).astype(np.float64)
    w = np.zeros(2)
    for _ in range(steps):
        p = 1 / (1 + np.exp(-np.clip(x @ w, -60, 60)))
        grad = x.T @ (p - target)
        hess = (x * (p * (1 - p))[:, None]).T @ x + 1e-9 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-9:
            break
    return float(w[0]), float(w[1])


def fit_tag_calibration(embedder: Embedder, flickr_dir: Path, split: str = "dev") -> CalibrationFit:
    """Fit the calibration of ``embedder`` on a Flickr8k split (dev: never test)."""
    if split == "test":
        raise DatasetError("a calibration is a choice: fit it on dev, never on test")
    paths, captions = load_flickr_split(flickr_dir, split)
    images = image_vectors(embedder, paths)
    labels, kinds = label_vectors(embedder, NOUNS)
    scores = images @ labels.T
    truth = np.array([[named(c, n) for n in NOUNS] for c in captions])
    # One curve per kind of text (a model may score labels and captions on two scales).
    caption = ~kinds
    slope, bias = fit_platt(scores[:, caption].ravel(), truth[:, caption].ravel())
    label_slope = label_bias = None
    if kinds.any():
        label_slope, label_bias = fit_platt(scores[:, kinds].ravel(), truth[:, kinds].ravel())
    cal = TagCalibration(slope, bias, 0.5, "", label_slope, label_bias)
    conf = cal.confidence(scores, kinds)
    for t in np.linspace(0.05, 0.95, 91):
        kept = conf >= t
        tp = (kept & truth).sum()
        prec = tp / max(kept.sum(), 1)
        if prec >= PRECISION:
            break
    rec = tp / max(truth.sum(), 1)
    f1 = 2 * prec * rec / max(prec + rec, 1e-12)
    top = conf.argmax(axis=1)
    top1 = float(truth[np.arange(len(top)), top].mean())
    fitted = f"flickr8k {split}, {len(NOUNS)} nouns ({int(kinds.sum())} read as labels)"
    cal = replace(cal, threshold=round(float(t), 2), fitted_on=fitted)
    return CalibrationFit(
        cal, truth.size, int(truth.sum()), float(prec), float(rec), float(f1), top1
    )
