"""Duplicate photos: exact copies (the same content hash) and near copies (resized, re-encoded,
cropped a little, a small edit) of one another, in groups a person can pick from.

Near copies are found through the collection's vector index, never by comparing every pair in
Python: each stored vector is a range-search query (``VectorIndex.range_search``: exact on a flat
index, the nearest neighbours with a score check on the approximate kinds), in chunks, and the
pairs found join groups by union-find. Exact copies come from the catalog's ``sha256`` column.

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
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from vtsearch.errors import ConfigError
from vtsearch.storage.catalog import Catalog
from vtsearch.storage.records import root_of
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


@dataclass
class DupeFile:
    """One file of a duplicate group, with what a person needs to choose which to keep."""

    id: int
    path: str
    #: The indexed folder holding the file.
    root: str | None
    #: Size of the file when it was indexed.
    bytes: int
    width: int | None
    height: int | None
    format: str | None
    taken_at: datetime | None
    sha256: str | None
    mtime_ns: int
    #: The one to keep: largest resolution, then largest file, then oldest.
    keep: bool = False
    #: Byte-identical to the file to keep (the same content hash).
    exact: bool = False
    #: Similarity to the kept file by the measure that matched them (regions or vectors); 1.0
    #: for the kept file and byte copies, NaN when it cannot be computed.
    similarity: float = 1.0

    @property
    def pixels(self) -> int:
        return (self.width or 0) * (self.height or 0)

    def to_dict(self) -> dict:
        from vtsearch.search.results import path_fields

        d = {k: v for k, v in self.__dict__.items() if k != "mtime_ns"}
        d["taken_at"] = self.taken_at.isoformat() if self.taken_at else None
        d["similarity"] = round(self.similarity, 4) if math.isfinite(self.similarity) else None
        d.update(path_fields(self.path))
        if self.root is not None:
            d["root"] = path_fields(self.root)["path"]
        return d


@dataclass
class DupeGroup:
    """Files that are copies of one another, the one to keep first."""

    files: list[DupeFile] = field(default_factory=list)

    @property
    def keep(self) -> DupeFile:
        return self.files[0]

    @property
    def kind(self) -> str:
        """``exact`` when every file is byte-identical to the kept one, else ``near``."""
        return "exact" if all(f.exact for f in self.files) else "near"

    @property
    def spare_bytes(self) -> int:
        """What removing every file but the kept one would free."""
        return sum(f.bytes for f in self.files[1:])

    def to_dict(self) -> dict:
        return {"kind": self.kind, "files": [f.to_dict() for f in self.files]}


class DupeGroups(list):
    """The groups found (a list of :class:`DupeGroup`), with the measure and threshold used."""

    def __init__(self, groups=(), measure: str = VECTORS, threshold: float = 1.0) -> None:
        super().__init__(groups)
        self.measure, self.threshold = measure, threshold


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


def exact_groups(catalog: Catalog) -> list[list[int]]:
    """Ids of indexed rows that share a content hash, one list per hash."""
    with Session(catalog.engine) as s:
        shared = (
            select(ImageRow.sha256)
            .where(ImageRow.status == "indexed", ImageRow.sha256.is_not(None))
            .group_by(ImageRow.sha256)
            .having(func.count() > 1)
        )
        rows = s.execute(
            select(ImageRow.sha256, ImageRow.id)
            .where(ImageRow.status == "indexed", ImageRow.sha256.in_(shared))
            .order_by(ImageRow.sha256, ImageRow.id)
        ).all()
    groups: dict[str, list[int]] = {}
    for sha, row_id in rows:
        groups.setdefault(sha, []).append(int(row_id))
    return list(groups.values())


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


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[int, int] = {}

    def find(self, x: int) -> int:
        root = self.parent.setdefault(x, x)
        while root != self.parent[root]:
            root = self.parent[root]
        while x != root:  # path compression
            self.parent[x], x = root, self.parent[x]
        return root

    def union(self, x: int, y: int) -> None:
        rx, ry = self.find(x), self.find(y)
        if rx != ry:
            self.parent[max(rx, ry)] = min(rx, ry)

    def groups(self) -> list[list[int]]:
        out: dict[int, list[int]] = {}
        for x in self.parent:
            out.setdefault(self.find(x), []).append(x)
        return [sorted(g) for g in out.values() if len(g) > 1]


def group_pairs(
    a: np.ndarray, b: np.ndarray, exact: list[list[int]] | None = None
) -> list[list[int]]:
    """Connected groups of ids (sorted, two or more each) from pairs and exact-copy groups."""
    uf = _UnionFind()
    for x, y in zip(a.tolist(), b.tolist(), strict=True):
        uf.union(x, y)
    for ids in exact or []:
        for y in ids[1:]:
            uf.union(ids[0], y)
    return uf.groups()


def keep_order(f: DupeFile) -> tuple:
    """Sort key putting the file to keep first: largest resolution, then largest file, then the
    oldest (by when it was taken, else by modification time), then the first indexed."""
    return (
        -f.pixels,
        -f.bytes,
        f.taken_at is None,
        f.taken_at or datetime.max,
        f.mtime_ns,
        f.id,
    )


def find_duplicates(
    catalog: Catalog,
    vindex: VectorIndex | None,
    threshold: float | None = None,
    *,
    tokens: TokenCache | None = None,
    exact_only: bool = False,
) -> DupeGroups:
    """Groups of exact and near copies among the indexed images, each with the file to keep
    first; groups ordered by the kept file's path.

    Args:
        catalog: the collection's catalog (content hashes, stored vectors, file metadata).
        vindex: its image index, caught up with the catalog; unused with ``exact_only``.
        threshold: similarity from which two images are near copies; default
            ``DEFAULT_THRESHOLD`` of the measure used.
        tokens: the collection's region-token cache: near copies by the region measure (see the
            module docstring); None: by the vectors' cosine.
        exact_only: byte-identical files only (no vectors read).

    Example:
        >>> for g in find_duplicates(catalog, vindex, tokens=cache):  # doctest: +SKIP
        ...     print(g.kind, [(f.path, f.keep) for f in g.files])
    """
    measure = REGIONS if tokens is not None else VECTORS
    threshold = check_threshold(DEFAULT_THRESHOLD[measure] if threshold is None else threshold)
    exact = exact_groups(catalog)
    a = b = np.zeros(0, np.int64)
    if not exact_only and vindex is not None and len(vindex):
        a, b, _ = near_pairs(catalog, vindex, threshold, tokens)
    members = group_pairs(a, b, exact)
    out = DupeGroups(measure="exact" if exact_only else measure, threshold=threshold)
    if not members:
        return out
    every = np.array([i for g in members for i in g], dtype=np.int64)
    rows = catalog.rows(every.tolist())
    roots = catalog.roots()
    # Each file's similarity to the one kept, by the measure that matched them.
    table = _regions(tokens, every) if tokens is not None else _vectors_of(catalog, every)
    for ids in members:
        found = [rows[i] for i in ids if i in rows and rows[i].status == "indexed"]
        if len(found) < 2:
            continue  # removed since the search
        files = sorted((_file(r, roots) for r in found), key=keep_order)
        keep = files[0]
        keep.keep = True
        ids_here = np.array([f.id for f in files], dtype=np.int64)
        sims = _pair_scores(table, np.full_like(ids_here, keep.id), ids_here)
        for f, sim in zip(files, sims.tolist(), strict=True):
            f.exact = f.sha256 is not None and f.sha256 == keep.sha256
            f.similarity = 1.0 if f.exact else min(1.0, sim)
        out.append(DupeGroup(files))
    out.sort(key=lambda g: g.keep.path)
    return out


def _file(row: ImageRow, roots: list[str]) -> DupeFile:
    return DupeFile(
        id=row.id,
        path=row.path,
        root=root_of(row.path, roots),
        bytes=row.size,
        width=row.width,
        height=row.height,
        format=row.format,
        taken_at=row.taken_at,
        sha256=row.sha256,
        mtime_ns=row.mtime_ns,
    )
