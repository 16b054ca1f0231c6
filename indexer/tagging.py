"""Zero-shot tags: score every indexed image against a set of labels and keep the likely ones.

Each label becomes one text vector: the label put into several prompt templates ("a photo of a
{}.", ...), each embedded, the vectors averaged (CLIP's prompt ensemble), which is steadier than
any one wording. An image's similarity to it goes through the
model's calibration (``vtsearch.models.calibration``) to a confidence; labels at the calibrated
threshold or above are kept, at most ``limit``, and an image that keeps none keeps its ``top_k``
most likely labels instead. A model without a calibration keeps the ``top_k`` alone.

The stored vectors are scored, so tagging loads the text tower only; tags of a set are written
with the mark that their image was scored, a chunk per transaction, so a stopped run resumes and
a later run (after new images) scores only the new ones.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vtsearch.errors import ConfigError
from vtsearch.models.base import Embedder
from vtsearch.models.calibration import TagCalibration, calibration_key
from vtsearch.storage.catalog import Catalog

#: Generic wordings from CLIP's ImageNet prompt ensemble (none names a domain).
TEMPLATES = (
    "a photo of a {}.",
    "a photo of the {}.",
    "a close-up photo of a {}.",
    "a good photo of a {}.",
    "a cropped photo of a {}.",
    "a bright photo of a {}.",
    "a photo of a small {}.",
    "a photo of a large {}.",
)
MAX_LABELS = 10_000
_VOWEL_A = re.compile(r"\ba (?=[aeiouAEIOU])")


@dataclass
class TagReport:
    """What a tagging run did: ``scored`` images now (``already`` had been), ``tags`` kept, of
    them ``fallback`` images that kept their top-k only; ``replaced``: the set's earlier tags were
    dropped because its labels, prompts, model or rule changed."""

    name: str
    labels: int
    scored: int = 0
    already: int = 0
    tags: int = 0
    fallback: int = 0
    calibrated: bool = False
    threshold: float | None = None
    replaced: bool = False
    stopped: bool = False


def read_labels(spec: str | Path | Sequence[str]) -> list[str]:
    """Labels from a list, a file (one per line; ``#`` starts a comment) or a comma-separated
    string; stripped, blanks and repeats (ignoring case) dropped, order kept.

    Raises:
        ConfigError: no labels, too many, or an unreadable file.
    """
    if isinstance(spec, str | Path) and Path(spec).expanduser().is_file():
        path = Path(spec).expanduser()
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"cannot read labels from {path}: {e}") from None
        items = [line.split("#", 1)[0] for line in text.splitlines()]
    elif isinstance(spec, str | Path):
        items = str(spec).split(",")
    else:
        items = list(spec)
    seen: set[str] = set()
    labels = []
    for item in items:
        label = " ".join(str(item).split())
        if label and label.casefold() not in seen:
            seen.add(label.casefold())
            labels.append(label)
    if not labels:
        raise ConfigError("no labels given: pass a file with one label per line, or 'cat,dog'")
    if len(labels) > MAX_LABELS:
        raise ConfigError(f"{len(labels)} labels; at most {MAX_LABELS} at once")
    return labels


def prompts(label: str, templates: Sequence[str] = TEMPLATES) -> list[str]:
    """The label in each template, with "an" before a vowel."""
    return [_VOWEL_A.sub("an ", t.format(label)) for t in templates]


def label_vectors(
    embedder: Embedder, labels: Sequence[str], templates: Sequence[str] = TEMPLATES
) -> tuple[np.ndarray, np.ndarray]:
    """One vector per label, the mean of its prompts' vectors (so its score with an image is the
    mean of the prompts' scores), and whether each is a label-kind text. A label's prompts are
    all embedded as one kind: a model that scores labels and captions on two scales decides by
    the first prompt, and the calibration puts the two scales on one."""
    groups = [prompts(label, templates) for label in labels]
    kinds = np.array([embedder.reads_as_label(g[0]) for g in groups], dtype=bool)
    out = np.zeros((len(labels), embedder.dim), np.float32)
    for kind in (False, True):
        rows = np.flatnonzero(kinds == kind)
        texts = [t for i in rows for t in groups[i]]
        vecs = [
            embedder.encode_as(texts[j : j + 256], label=kind).vectors.float().cpu().numpy()
            for j in range(0, len(texts), 256)
        ]
        if len(rows):
            out[rows] = np.concatenate(vecs).reshape(len(rows), len(templates), -1).mean(axis=1)
    return out, kinds


def choose(
    scores: np.ndarray,
    calibration: TagCalibration | None,
    threshold: float | None,
    top_k: int,
    limit: int,
    kinds: np.ndarray | None = None,
) -> list[tuple[list[tuple[int, float, float | None]], bool]]:
    """Per image (a row of ``scores``), the kept ``(label index, score, confidence)``, most
    likely first (by confidence, or by score without a calibration): those at ``threshold``
    confidence or more (at most ``limit``), else the ``top_k`` most likely, with whether it came
    to that fallback; ``kinds`` marks label-kind labels (see ``label_vectors``)."""
    conf = calibration.confidence(scores, kinds) if calibration is not None else None
    order = np.argsort(-(conf if conf is not None else scores), axis=1, kind="stable")
    out = []
    for row in range(scores.shape[0]):
        keep = []
        if conf is not None and threshold is not None:
            keep = [j for j in order[row, :limit] if conf[row, j] >= threshold]
        fallback = not keep
        if fallback:
            keep = list(order[row, :top_k])
        picks = [
            (int(j), float(scores[row, j]), None if conf is None else float(conf[row, j]))
            for j in keep
        ]
        out.append((picks, fallback and conf is not None))
    return out


def tag_images(
    catalog: Catalog,
    embedder: Embedder,
    labels: Sequence[str],
    *,
    name: str = "default",
    calibration: TagCalibration | None = None,
    threshold: float | None = None,
    top_k: int = 1,
    limit: int = 5,
    templates: Sequence[str] = TEMPLATES,
    progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TagReport:
    """Tag the collection's images with ``labels`` as the set ``name`` (see the module's doc);
    ``threshold`` (a confidence, 0..1) defaults to the calibration's own.

    Raises:
        ConfigError: a threshold outside 0..1, or one given for a model without calibration;
            ``top_k`` or ``limit`` below what makes sense.
    """
    labels = list(labels)
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise ConfigError(f"threshold {threshold} is a confidence: give one between 0 and 1")
    if threshold is not None and calibration is None:
        raise ConfigError(
            f"model {embedder.model_id} has no tag calibration, so there is no confidence to "
            "cut at: tag with --top-k alone, or fit one (`vtsearch train tag-calibration`)"
        )
    if top_k < 0 or limit < 1:
        raise ConfigError("top_k must be 0 or more and limit 1 or more")
    if calibration is None and top_k == 0:
        raise ConfigError("without a calibrated threshold, top_k 0 would keep no tag")
    if threshold is None and calibration is not None:
        threshold = calibration.threshold
    model = calibration_key(embedder)
    # A refitted calibration (same weights) ranks and keeps differently: part of the rule.
    curves = None if calibration is None else dataclasses.astuple(calibration)
    rule = {"threshold": threshold, "top_k": top_k, "limit": limit, "calibration": curves}
    signature = hashlib.sha256(
        json.dumps([labels, list(templates), model, rule], sort_keys=True).encode()
    ).hexdigest()
    report = TagReport(name, len(labels), calibrated=calibration is not None, threshold=threshold)
    report.replaced = catalog.start_tag_set(name, labels, signature, model, threshold, top_k)
    todo = catalog.count_untagged(name)
    report.already = sum(s.images for s in catalog.tag_sets() if s.name == name)
    if todo == 0:
        return report
    vectors, kinds = label_vectors(embedder, labels, templates)
    if progress:
        progress(0, todo)
    for ids, images in catalog.untagged_vectors(name):
        if should_stop and should_stop():
            report.stopped = True
            break
        kept = choose(images @ vectors.T, calibration, threshold, top_k, limit, kinds)
        rows = [
            (int(i), labels[j], score, conf)
            for i, (picks, _) in zip(ids, kept, strict=True)
            for j, score, conf in picks
        ]
        catalog.write_tags(name, ids, rows)
        report.scored += len(ids)
        report.tags += len(rows)
        report.fallback += sum(fell for _, fell in kept)
        if progress:
            progress(report.scored, todo)
    return report
