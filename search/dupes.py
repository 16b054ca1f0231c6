"""Duplicate photos: exact copies (the same content hash) and near copies (resized, re-encoded,
cropped a little, a small edit) of one another, in groups a person can pick from.

Exact copies come from the catalog's ``sha256`` column; near copies from
:mod:`vtsearch.search.dupe_pairs` (range search through the collection's vector index, by the
region measure or the vectors' cosine, with the thresholds chosen on Flickr8k dev). The pairs
and the exact copies join groups by union-find, and each group puts the file to keep first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from vtsearch.search.dupe_pairs import (
    CANDIDATE_FLOOR,
    CHUNK,
    DEFAULT_THRESHOLD,
    MOST,
    REGION_COMPONENTS,
    REGIONS,
    VECTORS,
    _pair_scores,
    _regions,
    _vectors_of,
    candidate_pairs,
    check_threshold,
    near_pairs,
)
from vtsearch.storage.catalog import Catalog
from vtsearch.storage.records import root_of
from vtsearch.storage.schema import ImageRow
from vtsearch.storage.tokens import TokenCache
from vtsearch.storage.vectors import VectorIndex

# Callers know one module for duplicates: the pair finding's public names are exported here too.
__all__ = [
    "CANDIDATE_FLOOR",
    "CHUNK",
    "DEFAULT_THRESHOLD",
    "MOST",
    "REGIONS",
    "REGION_COMPONENTS",
    "VECTORS",
    "DupeFile",
    "DupeGroup",
    "DupeGroups",
    "candidate_pairs",
    "check_threshold",
    "exact_groups",
    "find_duplicates",
    "group_pairs",
    "keep_order",
    "near_pairs",
]


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
