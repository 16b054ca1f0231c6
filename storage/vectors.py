"""The FAISS vector index of a collection, keyed by catalog row id.

The index is a derived cache of the vectors in the catalog. It is saved atomically together with
the catalog sequence number it reflects, so a reader can bring a stale file up to date with
``Catalog.changes_since`` instead of rebuilding it.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from vtsearch.storage.catalog import Catalog

#: File stem of the image index; the text set's index is saved as ``texts``.
IMAGES = "vectors"


def _faiss():
    import faiss

    return faiss


def make_index(kind: str, dim: int):
    """A FAISS index of the given kind, wrapped so it is addressed by catalog ids.

    ``flat`` is exact inner-product search; ``hnsw`` is a graph index for large collections.
    """
    faiss = _faiss()
    if kind == "flat":
        base = faiss.IndexFlatIP(dim)
    elif kind == "hnsw":
        base = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
        base.hnsw.efConstruction = 80
        base.hnsw.efSearch = 64
    else:
        raise ValueError(f"unknown index kind {kind!r}")
    return faiss.IndexIDMap2(base)


class VectorIndex:
    """Inner-product search over L2-normalised vectors with int64 ids.

    Example:
        >>> vi = VectorIndex(4)
        >>> vi.add(np.array([7]), np.eye(4, dtype="float32")[:1])
        >>> vi.search(np.eye(4, dtype="float32")[:1], 1)[1].tolist()
        [[7]]
    """

    def __init__(self, dim: int, kind: str = "flat", index=None, seq: int = 0) -> None:
        self.dim = dim
        self.kind = kind
        self.index = index if index is not None else make_index(kind, dim)
        #: The catalog sequence number this index reflects.
        self.seq = seq

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids) == 0:
            return
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        # Re-adding an id must replace its vector, never duplicate it.
        self.remove(ids)
        self.index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), ids)

    def remove(self, ids: np.ndarray) -> None:
        if len(ids) == 0 or self.index.ntotal == 0:
            return
        self.index.remove_ids(np.ascontiguousarray(ids, dtype=np.int64))

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` ``(scores, ids)`` per query; missing slots have id -1."""
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        k = max(1, min(k, max(len(self), 1)))
        return self.index.search(q, k)

    def reconstruct(self, row_id: int) -> np.ndarray:
        return self.index.reconstruct(int(row_id))

    def apply_changes(
        self, seq: int, added: list[tuple[int, int, bytes]], removed: list[tuple[int, int]]
    ) -> None:
        """Bring the index up to catalog sequence ``seq`` (see ``Catalog.changes_since``)."""
        if removed:
            self.remove(np.array([r[0] for r in removed], dtype=np.int64))
        if added:
            ids = np.array([a[0] for a in added], dtype=np.int64)
            vecs = np.stack([np.frombuffer(a[2], dtype=np.float32) for a in added])
            self.add(ids, vecs)
        self.seq = seq

    def sync(self, catalog: Catalog, kind: str = "image") -> None:
        """Apply every catalog change newer than this index's sequence number."""
        seq, added, removed = catalog.changes_since(self.seq, kind)
        if seq != self.seq:
            self.apply_changes(seq, added, removed)

    def save(self, folder: Path, name: str = IMAGES) -> None:
        """Write the index and its sequence number atomically (temp file, then rename)."""
        faiss = _faiss()
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}-", suffix=".tmp")
        os.close(fd)
        try:
            faiss.write_index(self.index, tmp)
            meta = {"seq": self.seq, "kind": self.kind, "dim": self.dim}
            meta_tmp = tmp + ".json"
            Path(meta_tmp).write_text(json.dumps(meta))
            # The sequence number is written last: an index newer than its meta is only ever
            # "stale" and gets re-applied changes, which are idempotent.
            os.replace(tmp, folder / f"{name}.faiss")
            os.replace(meta_tmp, folder / f"{name}.json")
        finally:
            for leftover in (tmp, tmp + ".json"):
                if os.path.exists(leftover):
                    os.unlink(leftover)

    @classmethod
    def load(cls, folder: Path, dim: int, kind: str = "flat", name: str = IMAGES) -> VectorIndex:
        """The saved index, or an empty one when none was saved (or it does not match ``dim``)."""
        path, meta_path = folder / f"{name}.faiss", folder / f"{name}.json"
        if not (path.exists() and meta_path.exists()):
            return cls(dim, kind)
        meta = json.loads(meta_path.read_text())
        index = _faiss().read_index(str(path))
        if index.d != dim:
            return cls(dim, kind)
        return cls(dim, meta.get("kind", kind), index, seq=int(meta.get("seq", 0)))
