"""From query vectors to ranked catalog rows."""

from __future__ import annotations

import numpy as np

from vtsearch.search.results import Result
from vtsearch.storage.catalog import Catalog
from vtsearch.storage.vectors import VectorIndex


def combine(vectors: np.ndarray, weights: list[float]) -> np.ndarray:
    """Weighted sum of unit vectors, re-normalised: the query direction."""
    v = (np.asarray(weights, dtype=np.float32)[:, None] * vectors).sum(0)
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


def retrieve(query: np.ndarray, vindex: VectorIndex, catalog: Catalog, k: int) -> list[Result]:
    """Top-``k`` results for one query vector, with their catalog metadata."""
    if len(vindex) == 0:
        return []
    scores, ids = vindex.search(query[None, :], k)
    hits = [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0]
    rows = catalog.rows(i for i, _ in hits)
    return [
        Result(i, rows[i].path, s, rows[i].width, rows[i].height, rows[i].taken_at, bi_score=s)
        for i, s in hits
        if i in rows  # a row deleted after the index snapshot is simply not shown
    ]


def apply_rerank(
    results: list, fusion: np.ndarray, mix: float, k: int, prior: np.ndarray | None = None
) -> list:
    """Final score = bi-encoder score - ``prior`` + ``mix`` x fusion logit; the best ``k`` by it."""
    prior = np.zeros(len(results)) if prior is None else prior
    for r, f, p in zip(results, fusion, prior, strict=True):
        r.rerank_score, r.prior = float(f), float(p)
        r.score = float(r.bi_score) - float(p) + mix * float(f)
    return sorted(results, key=lambda r: -r.score)[:k]
