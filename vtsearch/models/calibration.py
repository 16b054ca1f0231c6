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
    kept (where it was fitted, the lowest threshold at which half the kept labels are right).
    A model that scores labels and captions on two scales (``Embedder.reads_as_label``) has a
    second curve, ``label_slope`` and ``label_bias``, for the labels, so that confidences of
    both kinds compare."""

    slope: float
    bias: float
    threshold: float
    fitted_on: str = ""
    label_slope: float | None = None
    label_bias: float | None = None

    def confidence(self, similarity: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
        """Per similarity; ``labels`` (broadcast against it) marks those of label-kind texts."""
        s = np.asarray(similarity, np.float64)
        z = self.slope * s + self.bias
        if labels is not None and self.label_slope is not None:
            z = np.where(labels, self.label_slope * s + self.label_bias, z)
        return 1.0 / (1.0 + np.exp(-np.clip(z, -60.0, 60.0)))


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
    return TagCalibration(
        **{k: v for k, v in entry.items() if k in TagCalibration.__dataclass_fields__}
    )


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
