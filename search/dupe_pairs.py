"""Near-copy pairs among a collection's indexed images, for :mod:`vtsearch.search.dupes` to
group: each pair once, with its similarity by one of two measures.

Pairs are found through the collection's vector index, never by comparing every pair in Python:
each stored vector is a range-search query (``VectorIndex.range_search``: exact on a flat index,
the nearest neighbours with a score check on the approximate kinds), in chunks.

Two images are near copies when one of two measures reaches the threshold:

- ``regions`` (collections with a region-token cache: the default model's): the cosine of the
  images' 7x7 region tokens compared in place, each region by its 32 leading principal
  components less the image's mean region (a 1,568-d unit vector per image: its layout). The
  image vectors only propose the candidates (the ``MOST`` nearest scoring ``CANDIDATE_FLOOR`` or
  more). The vectors alone cannot tell a copy from another photo of the same kind of scene: they
  are trained to match captions. On planted copies of Flickr8k dev no vector threshold reached
  an F1 above 0.80 (at 0.85: precision 0.99, recall 0.66, and 9% of the photos halved to 112 px
  found); the region measure reached 0.998 (at 0.56: precision 0.999, recall 0.996).
- ``vectors`` (any other collection): the cosine of the stored image vectors.

Cost, measured on 2 cores with 1152-d vectors: a flat index (up to 50,000 images, the factory's
limit) is scanned once per query chunk, so its pass grows with the collection's square; an HNSW
index answers each query in about the same time whatever its size. Building a throwaway HNSW
graph for a flat collection cost more than its scan at every size a flat index holds (20 s to
build at 20,000 against a 9 s scan), so each kind is searched as it is. The whole pass
(``bench/dupes.py``): 0.46 ms an image at 1,625 (flat), 1.15 ms at 20,000 (flat), 1.09 ms at
60,000 (HNSW). The region check reads each image's tokens once, keeps 1.6 kB of int8 codes per
image and costs a 1,568-d dot product per candidate pair.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from vtsearch.errors import ConfigError
from vtsearch.storage.catalog import Catalog
from vtsearch.storage.schema import ImageRow
from vtsearch.storage.tokens import TokenCache
from vtsearch.storage.vectors import VectorIndex

REGIONS, VECTORS = "regions", "vectors"
#: Similarity from which two images are near copies, per measure. Chosen on Flickr8k dev with
#: `python bench/dupes.py --split dev` (1,000 photos and 625 planted copies: resized to 50%, JPEG
#: quality 40, a 90% centre crop, a small text overlay, byte copies): the best F1 of the grouped
#: pairs among thresholds with a precision of 0.95 or more (the full sweep: docs/dupes.md):
#:
#:   regions  0.50: P 0.944 R 0.999   0.52: P 0.989 R 0.999   0.56: P 0.999 R 0.996 (F1 0.998)
#:            0.60: P 0.999 R 0.989   0.65: P 1.000 R 0.970   0.70: P 1.000 R 0.922
#:   vectors  0.80: P 0.432 R 0.768   0.83: P 0.944 R 0.689   0.85: P 0.991 R 0.662 (F1 0.794)
#:            0.90: P 1.000 R 0.524   0.95: P 1.000 R 0.164
DEFAULT_THRESHOLD = {REGIONS: 0.56, VECTORS: 0.85}
#: Region measure: a candidate pair's vectors score at least this. On dev every true pair scored
#: 0.48 or more (halved copies are the lowest), so 0.4 leaves room.
CANDIDATE_FLOOR = 0.4
#: Partners kept per image, the best first. On dev every true pair was among the 64 nearest by
#: vector (99.7% among 32); it also keeps a folder of thousands of identical frames to a few pairs
#: per image (still one group), not millions.
MOST = 64
#: Leading principal components of each region token in the region measure (dev, F1 over all
#: pairs: 0.984 with 16, 0.989 with 32 or 64, 0.993 with all 256 at eight times the memory).
REGION_COMPONENTS = 32
#: Stored vectors searched at once: one FAISS call, one read lock held (an indexer's sync waits
#: for one chunk at most, not for the whole pass).
CHUNK = 1024


def check_threshold(threshold: float) -> float:
    """``threshold`` as a float in (0, 1], or ``ConfigError``."""
    try:
        t = float(threshold)
    except (TypeError, ValueError):
        t = math.nan
    if not 0.0 < t <= 1.0:
        raise ConfigError(
            f"the duplicate threshold is a cosine similarity in (0, 1], not {threshold!r}; "
            f"the default is {DEFAULT_THRESHOLD[REGIONS]} with the default model "
            f"(region measure), {DEFAULT_THRESHOLD[VECTORS]} with others"
        )
    return t


def _stored_vectors(catalog: Catalog, chunk: int):
    """``(ids, vectors)`` of every indexed row, ``chunk`` rows at a time."""
    ids: list[int] = []
    blobs: list[bytes] = []
    for row_id, blob in catalog.live_vectors(chunk):
        if blob is None:
            continue
        ids.append(row_id)
        blobs.append(blob)
        if len(ids) == chunk:
            yield _batch(ids, blobs)
            ids, blobs = [], []
    if ids:
        yield _batch(ids, blobs)


def _batch(ids: list[int], blobs: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    vecs = np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(ids), -1)
    return np.asarray(ids, dtype=np.int64), vecs


@dataclass
class _Table:
    """Vectors by sorted id: ``codes[i] * scale[i]`` is the vector of ``ids[i]``."""

    ids: np.ndarray
    codes: np.ndarray
    scale: np.ndarray

    @classmethod
    def empty(cls, dim: int) -> _Table:
        return cls(np.zeros(0, np.int64), np.zeros((0, dim), np.float32), np.zeros(0, np.float32))


def _vectors_of(catalog: Catalog, ids: np.ndarray) -> _Table:
    """The stored vectors of those of ``ids`` that are indexed."""
    got: dict[int, bytes] = {}
    wanted = [int(i) for i in np.unique(ids)]
    with Session(catalog.engine) as s:
        for i in range(0, len(wanted), 500):
            stmt = select(ImageRow.id, ImageRow.vector).where(
                ImageRow.id.in_(wanted[i : i + 500]), ImageRow.status == "indexed"
            )
            got.update((int(r), v) for r, v in s.execute(stmt) if v is not None)
    order = sorted(got)
    if not order:
        return _Table.empty(1)
    vecs = _batch(order, [got[i] for i in order])[1]
    return _Table(np.array(order, dtype=np.int64), vecs, np.ones(len(order), np.float32))


def _regions(tokens: TokenCache, ids: np.ndarray) -> _Table:
    """The region-measure vectors of those of ``ids`` whose tokens are cached: each image's
    regions in place, each by its ``REGION_COMPONENTS`` leading components less their mean over
    the image, as one unit vector (int8 codes and a scale: 1.6 kB an image).

    Taking away the image's mean region leaves its layout: without it two photos of one texture
    (grass and gravel in data/samples) matched as copies, their regions all alike."""
    ids = np.unique(np.asarray(ids, dtype=np.int64))
    c = min(REGION_COMPONENTS, tokens.dim)
    have, codes, scales = [], [], []
    for start in range(0, len(ids), 4096):
        part = ids[start : start + 4096]
        for i, t in zip(part, tokens.get(part), strict=True):
            if t is None:
                continue
            v = (t[:, :c] - t[:, :c].mean(0)).reshape(-1)
            n, top = float(np.linalg.norm(v)), float(np.abs(v).max())
            if n > 0:
                have.append(i)
                codes.append(np.rint(v * (127 / top)).astype(np.int8))
                scales.append(top / 127 / n)
    if not have:
        return _Table.empty(tokens.n_tokens * c)
    return _Table(np.array(have, np.int64), np.stack(codes), np.array(scales, np.float32))


def _pair_scores(table: _Table, a: np.ndarray, b: np.ndarray, batch: int = 8192) -> np.ndarray:
    """Inner products of the vectors of the pairs ``(a, b)``; NaN where either has none."""
    out = np.full(len(a), np.nan, dtype=np.float32)
    ids = table.ids
    if not len(ids):
        return out
    ia = np.minimum(np.searchsorted(ids, a), len(ids) - 1)
    ib = np.minimum(np.searchsorted(ids, b), len(ids) - 1)
    known = np.flatnonzero((ids[ia] == a) & (ids[ib] == b))
    for start in range(0, len(known), batch):
        k = known[start : start + batch]
        va = table.codes[ia[k]].astype(np.float32)
        vb = table.codes[ib[k]].astype(np.float32)
        out[k] = np.einsum("ij,ij->i", va, vb) * table.scale[ia[k]] * table.scale[ib[k]]
    return out


def candidate_pairs(
    catalog: Catalog,
    vindex: VectorIndex,
    floor: float,
    most: int = MOST,
    chunk: int = CHUNK,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs of indexed images whose vectors score ``floor`` or more in ``vindex`` (each image
    keeps its ``most`` best): ``(a, b, score)``, ``a < b``, each pair once with its best score.
    Scores are the index's own (approximate on lossy kinds)."""
    parts_a, parts_b, parts_s = [], [], []
    for ids, vecs in _stored_vectors(catalog, chunk):
        lims, scores, found = vindex.range_search(vecs, floor, most)
        query = np.repeat(ids, np.diff(lims))
        other = (found != query) & (found >= 0)
        parts_a.append(np.minimum(query, found)[other])
        parts_b.append(np.maximum(query, found)[other])
        parts_s.append(scores[other])
    if not parts_a:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    a, b, s = np.concatenate(parts_a), np.concatenate(parts_b), np.concatenate(parts_s)
    # Each pair is usually found from both ends: keep one, with its best score.
    order = np.lexsort((-s, b, a))
    a, b, s = a[order], b[order], s[order]
    first = np.ones(len(a), dtype=bool)
    first[1:] = (a[1:] != a[:-1]) | (b[1:] != b[:-1])
    return a[first], b[first], s[first]


def near_pairs(
    catalog: Catalog,
    vindex: VectorIndex,
    threshold: float,
    tokens: TokenCache | None = None,
    most: int = MOST,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair of indexed images that are near copies at ``threshold``: ``(a, b, score)``
    with ``a < b``, each pair once, by range search through ``vindex``.

    With ``tokens`` the score is the region measure and the vectors only propose candidates
    (``CANDIDATE_FLOOR``); images without cached tokens are left out. Without, it is the
    vectors' cosine, exact: an index whose codes are lossy (8-bit HNSW, IVF-PQ) is searched with
    some slack and its candidates are re-scored on the catalog's float vectors.
    """
    threshold = check_threshold(threshold)
    if tokens is not None:
        a, b, _ = candidate_pairs(catalog, vindex, min(CANDIDATE_FLOOR, threshold), most)
        table = _regions(tokens, np.concatenate([a, b]))
    else:
        # The most a kind's score may be off: float16 re-scoring, or product-quantised codes.
        tol = vindex.reconstruct_tolerance
        slack = 0.0 if tol <= 1e-5 else min(0.1, 2 * tol)
        a, b, s = candidate_pairs(catalog, vindex, threshold - slack, most)
        if slack == 0.0:
            hit = s >= threshold
            return a[hit], b[hit], s[hit].astype(np.float32)
        table = _vectors_of(catalog, np.concatenate([a, b]))
    s = _pair_scores(table, a, b)
    hit = s >= threshold  # False for NaN: a side without tokens, or removed since
    return a[hit], b[hit], s[hit]
