"""Tag calibrations: how a model's image-label similarity maps to the chance the label fits.

A calibration is fitted per model revision (``vtsearch train tag-calibration``, on Flickr8k dev
with caption mentions as the truth) and shipped beside the weights in
``weights/tag-calibration.json``; a model without one (a hub model, or retrained weights whose
calibration was not refitted) tags by rank alone.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from vtsearch.models.base import Embedder

CALIBRATIONS = Path(__file__).parent / "weights" / "tag-calibration.json"


@dataclass(frozen=True)
class TagCalibration:
    """``confidence = sigmoid(slope * similarity + bias)``; labels at ``threshold`` or more are
    kept (where it was fitted, the lowest threshold at which half the kept labels are right)."""

    slope: float
    bias: float
    threshold: float
    fitted_on: str = ""

    def confidence(self, similarity: np.ndarray) -> np.ndarray:
        z = np.clip(self.slope * np.asarray(similarity, np.float64) + self.bias, -60.0, 60.0)
        return 1.0 / (1.0 + np.exp(-z))


def calibration_key(embedder: Embedder) -> str:
    return f"{embedder.model_id}@{embedder.revision}"


def load_tag_calibration(embedder: Embedder, path: Path = CALIBRATIONS) -> TagCalibration | None:
    """The calibration fitted for this model revision, or None."""
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    entry = stored.get(calibration_key(embedder))
    if not entry:
        return None
    return TagCalibration(**{k: entry[k] for k in ("slope", "bias", "threshold", "fitted_on")})


def save_tag_calibration(
    embedder: Embedder, calibration: TagCalibration, path: Path = CALIBRATIONS
) -> None:
    """Record ``calibration`` for this model revision, keeping the others'."""
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError):
        stored = {}
    stored[calibration_key(embedder)] = asdict(calibration)
    path.write_text(json.dumps(stored, indent=2, sort_keys=True) + "\n")
