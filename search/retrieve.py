"""From query vectors to ranked catalog rows."""

from __future__ import annotations

import numpy as np

from vtsearch.search.results import Result
from vtsearch.storage.catalog import Catalog
from vtsearch.storage.schema import ImageRow
from vtsearch.storage.vectors import VectorIndex


def combine(vectors: np.ndarray, weights: list[float]) -> np.ndarray:
    """Weighted sum of query vectors, scaled to their weighted mean length: the query direction
    at the length the model gives its queries (1 for most; vtsearch-lite's carry the scale that
    makes its caption and label scores comparable, see ``LiteHeads.text_vectors``)."""
    w = np.asarray(weights, dtype=np.float32)
    v = (w[:, None] * vectors).sum(0)
    n = float(np.linalg.norm(v))
    if n == 0:
        return v
    lengths = np.linalg.norm(vectors.astype(np.float32), axis=1)
    return v * (float((np.abs(w) * lengths).sum() / np.abs(w).sum()) / n)


#: An IVF-PQ index ranks by lossy codes (R@10 0.37 at 100k synthetic vectors): it is asked for
#: this many candidates per wanted result, which are re-scored on the catalog's float vectors.
RESCORE_FACTOR = 4


def rescored(vindex: VectorIndex) -> bool:
    """Whether hits of ``vindex`` are re-scored on stored vectors (its codes are lossy)."""
    return vindex.kind == "ivfpq"


#: An id set (a filter) this small is not searched in an IVF-PQ index at all: every member is
#: scored on its stored vector, so its ranking is exact, as a flat or HNSW index gives it (see
#: ``VectorIndex.search``). Reading the rows costs 6 ms for 256 at 100k rows (24 for 1,024).
RESCORE_ALL = 256


#: From this many vectors on, the codes lose more of the order and an IVF-PQ index is asked for
#: ``RESCORE_FACTOR_DEEP`` candidates per wanted result. ``python bench/scale.py`` (synthetic
#: 1152-d vectors, PQ96): re-scoring 4 x k kept 0.896 of the exact top-10 at 1M and 0.741 at 5M,
#: 16 x k kept 0.988 and 0.945; the 120 more rows cost about 3 ms of catalog reads a query.
RESCORE_DEEP_FROM = 1_000_000
RESCORE_FACTOR_DEEP = 16


def search_depth(vindex: VectorIndex, k: int) -> int:
    """How many candidates to ask ``vindex`` for, to return ``k`` results."""
    if not rescored(vindex):
        return k
    deep = len(vindex) >= RESCORE_DEEP_FROM
    return k * (RESCORE_FACTOR_DEEP if deep else RESCORE_FACTOR)


def rescore(
    hits: list[tuple[int, float]], vectors: dict[int, np.ndarray], query: np.ndarray, k: int
) -> list[tuple[int, float]]:
    """The best ``k`` of ``hits`` by exact inner product with their stored ``vectors`` (a hit
    without a stored vector, removed since the index snapshot, drops out)."""
    exact = [(i, float(vectors[i] @ query)) for i, _ in hits if i in vectors]
    return sorted(exact, key=lambda h: -h[1])[:k]


def retrieve(
    query: np.ndarray,
    vindex: VectorIndex,
    catalog: Catalog,
    k: int,
    among: np.ndarray | None = None,
) -> list[Result]:
    """Top-``k`` results for one query vector, with their catalog metadata; with ``among``
    (catalog ids: what a filter lets through), only those are searched."""
    return retrieve_rows(query, vindex, catalog, k, among)[0]


def retrieve_rows(
    query: np.ndarray,
    vindex: VectorIndex,
    catalog: Catalog,
    k: int,
    among: np.ndarray | None = None,
) -> tuple[list[Result], dict[int, ImageRow]]:
    """:func:`retrieve`, and the catalog rows it read (with their vectors) by id."""
    if len(vindex) == 0 or (among is not None and len(among) == 0):
        return [], {}
    if among is not None and rescored(vindex) and len(among) <= RESCORE_ALL:
        hits = [(int(i), 0.0) for i in among]  # all of them, re-scored below
    else:
        scores, ids = vindex.search(query[None, :], search_depth(vindex, k), ids=among)
        hits = [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0]
    # Only indexed rows are results: an index never names a failed row of a consistent catalog,
    # but a reader must not trust that when the two disagree.
    rows = {i: r for i, r in catalog.rows(i for i, _ in hits).items() if r.status == "indexed"}
    if rescored(vindex):
        # The rows carry their vectors: exact scores cost no further read.
        stored = {i: np.frombuffer(r.vector, dtype=np.float32) for i, r in rows.items() if r.vector}
        hits = rescore(hits, stored, query, k)
    results = [
        Result(i, rows[i].path, s, rows[i].width, rows[i].height, rows[i].taken_at, bi_score=s)
        for i, s in hits
        if i in rows  # a row deleted after the index snapshot is simply not shown
    ]
    return results, rows


def apply_rerank(
    results: list,
    fusion: np.ndarray | None,
    mix: float,
    k: int,
    prior: np.ndarray | None = None,
) -> list:
    """Final score = bi-encoder score - ``prior`` + ``mix`` x fusion logit; the best ``k`` by it.
    ``fusion`` None: the scorer was not run (its weight is 0), ``rerank_score`` stays None."""
    prior = np.zeros(len(results)) if prior is None else prior
    logits = [None] * len(results) if fusion is None else [float(f) for f in fusion]
    for r, f, p in zip(results, logits, prior, strict=True):
        r.rerank_score, r.prior = f, float(p)
        r.score = float(r.bi_score) - float(p) + (mix * f if f is not None else 0.0)
    return sorted(results, key=lambda r: -r.score)[:k]
