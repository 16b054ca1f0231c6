"""Rebuilding a collection's vector index from the catalog, and ``vtsearch optimize``: move an
index into the kind its size calls for, or compact the slots of removed vectors."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from vtsearch.storage.index_kinds import (
    SQ8_MIN,
    IndexSpec,
    choose_index,
    spec_for_kind,
)
from vtsearch.storage.vectors import IMAGES, VectorIndex

if TYPE_CHECKING:
    from vtsearch.storage.catalog import Catalog

#: Share of dead (removed or replaced) slots in an HNSW/IVF index that makes it worth compacting.
DEAD_SHARE = 0.2
#: An IVF index is re-trained once the collection is this many times larger than it was built for.
IVF_GROWTH = 4.0


def needs_rebuild(vindex: VectorIndex, n: int, memory_bytes: int | None = None) -> str | None:
    """Why ``vindex`` should be rebuilt for a collection of ``n`` vectors, or None.

    Example:
        >>> needs_rebuild(VectorIndex(4), 10)  # a small flat index is right
    """
    want = choose_index(n, vindex.dim, memory_bytes)
    if want.kind != vindex.kind:
        return f"{n} vectors call for a {want.kind} index, not {vindex.kind}"
    if want.kind == "hnsw" and want.codec != vindex.spec.codec:
        return f"an HNSW graph over {want.codec} vectors is faster and smaller"
    if vindex.index.ntotal and vindex.dead / vindex.index.ntotal > DEAD_SHARE:
        return f"{vindex.dead} of {vindex.index.ntotal} slots hold removed vectors"
    if vindex.kind == "ivfpq" and n > IVF_GROWTH * max(vindex.spec.built_for, 1):
        return f"the IVF quantizer was trained for {vindex.spec.built_for} vectors, not {n}"
    return None


def _tables(kind: str):
    from vtsearch.storage.schema import ImageRow, Meta, TextRow

    if kind == "image":
        return ImageRow, ImageRow.status == "indexed", Meta
    return TextRow, True, Meta


def iter_catalog_vectors(
    catalog: Catalog, kind: str = "image", chunk: int = 8192
) -> tuple[int, int, Iterator[tuple[np.ndarray, np.ndarray]]]:
    """``(seq, count, batches of (ids, vectors))`` of every live vector, read in one snapshot.

    Batches are read lazily, ``chunk`` rows at a time, so a rebuild never holds every vector as
    Python objects at once. Consume the iterator fully (it holds a read transaction).
    """
    from sqlalchemy import func, select
    from sqlalchemy.orm import Session

    row, live, meta = _tables(kind)
    session = Session(catalog.snapshot)
    session.begin()
    seq = int(session.scalar(select(meta.value).where(meta.key == "seq")) or 0)
    count = int(session.scalar(select(func.count()).select_from(row).where(live)) or 0)

    def batches() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        try:
            stmt = select(row.id, row.vector).where(live).order_by(row.id)
            result = session.execute(stmt.execution_options(yield_per=chunk))
            for part in result.partitions(chunk):
                ids = np.fromiter((r[0] for r in part), dtype=np.int64, count=len(part))
                vecs = np.frombuffer(b"".join(r[1] for r in part), dtype=np.float32)
                yield ids, vecs.reshape(len(part), -1)
        finally:
            session.close()

    return seq, count, batches()


def training_sample(catalog: Catalog, kind: str, spec: IndexSpec) -> np.ndarray:
    """The catalog vectors an index of ``spec`` is trained on: 64 per inverted list, at least
    50,000 (or all there are)."""
    return _training_sample(catalog, kind, max(64 * spec.nlist, 50_000))


def _training_sample(catalog: Catalog, kind: str, size: int, seed: int = 0) -> np.ndarray:
    """``size`` vectors drawn at random from the catalog (IVF training)."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    row, live, _ = _tables(kind)
    with Session(catalog.engine) as s:
        ids = np.array(s.scalars(select(row.id).where(live)).all(), dtype=np.int64)
        rng = np.random.default_rng(seed)
        pick = np.sort(rng.choice(ids, size=min(size, len(ids)), replace=False)).tolist()
        out = []
        for i in range(0, len(pick), 500):
            stmt = select(row.vector).where(row.id.in_(pick[i : i + 500]))
            out.extend(np.frombuffer(v, dtype=np.float32) for v in s.scalars(stmt))
    return np.stack(out)


def build(
    spec: IndexSpec,
    dim: int,
    ids: np.ndarray,
    vectors: np.ndarray,
    seq: int = 0,
) -> VectorIndex:
    """A new index of ``spec`` over in-memory ``vectors`` (IVF trained on a sample of them).

    Example:
        >>> v = np.eye(4, dtype="float32")
        >>> build(IndexSpec("hnsw"), 4, np.arange(4), v).search(v[:1], 1)[1].tolist()
        [[0]]
    """
    vi = VectorIndex(dim, spec, seq=seq)
    if not vi.is_trained:
        rng = np.random.default_rng(0)
        n_train = min(len(vectors), max(64 * spec.nlist, 50_000))
        vi.train(vectors[np.sort(rng.choice(len(vectors), n_train, replace=False))])
    for i in range(0, len(ids), 65536):
        vi.index.add_with_ids(
            np.ascontiguousarray(vectors[i : i + 65536], dtype=np.float32),
            np.ascontiguousarray(ids[i : i + 65536], dtype=np.int64),
        )
    return vi


def rebuild(
    catalog: Catalog,
    dim: int,
    spec: IndexSpec | None = None,
    kind: str = "image",
    memory_bytes: int | None = None,
) -> VectorIndex:
    """A fresh index of the catalog's vectors, of ``spec`` (default: :func:`choose_index`).

    Vectors stream from the catalog in chunks; dead slots of the old index are gone. The result
    reflects the catalog's sequence number at the start of the read.
    """
    seq, count, batches = iter_catalog_vectors(catalog, kind)
    spec = spec or choose_index(count, dim, memory_bytes)
    spec = replace(spec, built_for=count)
    if spec.quantised_graph and count < SQ8_MIN:
        spec = replace(spec, codec="flat", refine=0)  # too few vectors to learn 8-bit ranges
    vi = VectorIndex(dim, spec, seq=seq)
    if not vi.is_trained:
        if count < spec.train_min():
            batches.close()
            raise ValueError(f"{count} vectors are too few to train a {spec.kind} index on")
        vi.train(training_sample(catalog, kind, spec))
    for ids, vecs in batches:
        vi.index.add_with_ids(vecs, ids)
    return vi


@dataclass
class OptimizeReport:
    """What ``optimize`` found (and did) for one index of a collection."""

    name: str
    count: int
    before: IndexSpec
    after: IndexSpec
    #: Why it was rebuilt (None: it was already right).
    reason: str | None
    rebuilt: bool
    seconds: float = 0.0
    bytes_before: int = 0
    bytes_after: int = 0


#: (file stem, catalog kind, meta key prefix) of each index a collection may hold.
_INDEXES = ((IMAGES, "image", "index"), ("texts", "text", "text_index"))


def optimize(
    folder: Path,
    catalog: Catalog,
    *,
    kind: str | None = None,
    force: bool = False,
    dry_run: bool = False,
    memory_bytes: int | None = None,
    names: tuple[str, ...] | None = None,
) -> list[OptimizeReport]:
    """Rebuild each index of the collection in ``folder`` whose kind no longer fits its size.

    ``names`` limits this to some of the indexes (``"vectors"`` for images, ``"texts"``).
    ``kind`` forces a kind instead of :func:`choose_index`; ``force`` rebuilds even when the
    index is right (compacting removed vectors); ``dry_run`` only reports. The new kind and its
    parameters are recorded in the catalog meta (``index_kind``, ``index_params``; the text
    set's under ``text_index_*``). The caller holds the collection's write lock.
    """
    import time

    dim = int(catalog.get_meta("dim") or 0)
    reports = []
    for name, cat_kind, key in _INDEXES:
        if not dim or (name != IMAGES and not (folder / f"{name}.faiss").exists()):
            continue
        if names is not None and name not in ((names,) if isinstance(names, str) else names):
            continue
        vi = VectorIndex.load(folder, dim, name=name)
        vi.sync(catalog, cat_kind)
        n = len(vi)
        if kind is not None:
            want = spec_for_kind(kind, n, dim, memory_bytes)
            if want.kind != vi.kind:
                reason = f"{kind} asked for"
            elif want.codec != vi.spec.codec:
                reason = f"{kind} over {want.codec} vectors asked for"
            else:
                reason = None
        else:
            want = choose_index(n, dim, memory_bytes)
            reason = needs_rebuild(vi, n, memory_bytes)
        if reason is None and force:
            reason = "rebuild forced"
        report = OptimizeReport(name, n, vi.spec, want if reason else vi.spec, reason, False)
        if reason is None or dry_run:
            reports.append(report)
            continue
        t0 = time.perf_counter()
        report.bytes_before = vi.memory_bytes()
        del vi
        fresh = rebuild(catalog, dim, want, cat_kind, memory_bytes)
        fresh.save(folder, name)
        catalog.set_meta(f"{key}_kind", fresh.kind)
        catalog.set_meta(f"{key}_params", fresh.spec.to_json())
        report.after, report.rebuilt = fresh.spec, True
        report.bytes_after = fresh.memory_bytes()
        report.seconds = time.perf_counter() - t0
        reports.append(report)
    return reports
