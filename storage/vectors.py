"""The FAISS vector index of a collection, keyed by catalog row id.

The index is a derived cache of the vectors in the catalog. It is saved atomically together with
the catalog sequence number it reflects (and the catalog's mark of it), so a reader can bring a
stale file up to date with ``Catalog.changes_since`` instead of rebuilding it, and rebuilds one of
another history (a restored catalog). The kinds and the factory are ``index_kinds``; rebuilding
and ``vtsearch optimize`` are ``rebuild``.

Every kind is wrapped in ``IndexIDMap2`` so it is addressed by catalog ids. HNSW and IVF cannot
remove a vector in place; a removed or replaced vector keeps its slot with the id ``-1`` and is
filtered out of every search, and ``rebuild.rebuild`` (``vtsearch optimize``) compacts them away.
The search parameters, searches restricted to an id set and range searches are
``vectors_filtered``.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from readerwriterlock import rwlock

if TYPE_CHECKING:
    from vtsearch.storage.catalog import Catalog

from vtsearch.storage.index_kinds import SQ8_REFINE, IndexSpec, load_faiss, make_index
from vtsearch.storage.vectors_filtered import DEAD, FilteredSearch

#: File stem of the image index; the text set's index is saved as ``texts``.
IMAGES = "vectors"
#: Searches of up to this many queries run on one OpenMP thread (see ``VectorIndex.search``).
FEW_QUERIES = 16


class VectorIndex(FilteredSearch):
    """Inner-product search over L2-normalised vectors with int64 ids.

    Example:
        >>> vi = VectorIndex(4)
        >>> vi.add(np.array([7]), np.eye(4, dtype="float32")[:1])
        >>> vi.search(np.eye(4, dtype="float32")[:1], 1)[1].tolist()
        [[7]]
    """

    def __init__(
        self,
        dim: int,
        kind: str | IndexSpec = "flat",
        index=None,
        seq: int = 0,
        mark: str | None = None,
    ) -> None:
        self.dim = dim
        self.spec = IndexSpec(kind) if isinstance(kind, str) else kind
        self.index = index if index is not None else make_index(self.spec, dim)
        #: The catalog sequence number this index reflects, and the catalog's mark of it (None:
        #: unknown, an index saved by an older version): see :meth:`sync`.
        self.seq = seq
        self.mark = mark
        self._dead = int(np.count_nonzero(self._ids() == DEAD)) if self.approximate else 0
        self._params_local = threading.local()
        # FAISS releases the GIL: a search running while another thread adds or removes vectors
        # reads freed memory. Searches share the lock, changes take it alone (writers first, so
        # a stream of queries cannot starve an indexer's sync).
        self._lock = rwlock.RWLockWrite()
        #: Bumped whenever ``index`` is replaced: cached search parameters name the old one.
        self._generation = 0

    @property
    def kind(self) -> str:
        return self.spec.kind

    @property
    def approximate(self) -> bool:
        return self.spec.kind != "flat"

    @property
    def dead(self) -> int:
        """Slots of removed or replaced vectors still held (approximate kinds only)."""
        return self._dead

    def __len__(self) -> int:
        return int(self.index.ntotal) - self._dead

    def _ids(self) -> np.ndarray:
        """A live view of the id map (slot -> catalog id); invalid after the next add."""
        n = int(self.index.id_map.size())
        if n == 0:
            return np.zeros(0, dtype=np.int64)
        return load_faiss().rev_swig_ptr(self.index.id_map.data(), n)

    @property
    def base(self):
        """The FAISS index inside the id map (flat, HNSW or IVF-PQ)."""
        return load_faiss().downcast_index(self.index.index)

    @property
    def is_trained(self) -> bool:
        return bool(self.index.is_trained)

    def train(self, vectors: np.ndarray) -> None:
        """Train an IVF quantizer or SQ8 ranges on a sample (a no-op for the other kinds)."""
        if not self.is_trained:
            self.index.train(np.ascontiguousarray(vectors, dtype=np.float32))

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add (or replace) the vectors of ``ids``."""
        with self._lock.gen_wlock():
            self._add(ids, vectors)

    def remove(self, ids: np.ndarray) -> None:
        """Drop the vectors of ``ids`` (ids not held are ignored)."""
        with self._lock.gen_wlock():
            self._remove(ids)

    def _add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids) == 0:
            return
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if not self.is_trained:
            if len(vectors) < self.spec.train_min():
                raise ValueError(
                    f"an untrained {self.kind} index needs at least {self.spec.train_min()} "
                    "vectors to train on; build it with rebuild()"
                )
            self.train(vectors)
        # Re-adding an id must replace its vector, never duplicate it.
        self._remove(ids)
        self.index.add_with_ids(vectors, ids)

    def _remove(self, ids: np.ndarray) -> None:
        if len(ids) == 0 or self.index.ntotal == 0:
            return
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if not self.approximate:
            self.index.remove_ids(ids)
            return
        # HNSW and IVF cannot drop a slot: mark it dead, filter it out of searches.
        view = self._ids()
        hit = np.isin(view, ids)
        hit &= view != DEAD
        n = int(np.count_nonzero(hit))
        if n:
            view[hit] = DEAD
            self._dead += n
            self.index.construct_rev_map()

    def search(
        self, queries: np.ndarray, k: int, ids: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` ``(scores, ids)`` per query; missing slots have id -1.

        With ``ids`` (catalog ids), only those are searched, and ``k`` come back whenever ``k``
        of them are held (see :meth:`_search_among`); an empty set gives ``k`` = 0 columns.

        A few queries run on one thread: FAISS spreads a single brute-force query over its
        OpenMP threads, which made it 3.5x slower on 2 cores (100k x 1152: 22 ms vs 78 ms).
        """
        faiss = load_faiss()
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        with self._lock.gen_rlock():
            # OpenMP's thread count is a per-thread setting: concurrent searches do not mix them.
            threads = faiss.omp_get_max_threads()
            if len(q) <= FEW_QUERIES:
                faiss.omp_set_num_threads(1)
            try:
                if ids is not None:
                    return self._search_among(q, k, ids)
                k = max(1, min(k, max(len(self), 1)))
                params, _keep = self._params()
                if params is None:
                    return self.index.search(q, k)
                return self.index.search(q, k, params=params)
            finally:
                faiss.omp_set_num_threads(threads)

    def reconstruct(self, row_id: int) -> np.ndarray:
        """The stored vector of ``row_id`` (float16-rounded in an ``sq8`` HNSW index)."""
        return self.index.reconstruct(int(row_id))

    @property
    def reconstruct_tolerance(self) -> float:
        """Largest difference :meth:`reconstruct` may show from the vector that was added."""
        if self.spec.quantised_graph:
            return 1e-3  # float16 keeps 11 significant bits of components below 1
        return 1e-5 if self.kind != "ivfpq" else float("inf")

    def apply_changes(
        self,
        seq: int,
        added: list[tuple[int, int, bytes]],
        removed: list[tuple[int, int]],
        mark: str | None = None,
    ) -> None:
        """Bring the index up to catalog sequence ``seq`` (see ``Catalog.changes_since``)."""
        with self._lock.gen_wlock():
            self._apply(seq, added, removed, mark)

    def _apply(
        self,
        seq: int,
        added: list[tuple[int, int, bytes]],
        removed: list[tuple[int, int]],
        mark: str | None,
    ) -> None:
        if removed:
            self._remove(np.array([r[0] for r in removed], dtype=np.int64))
        if added:
            ids = np.array([a[0] for a in added], dtype=np.int64)
            vecs = np.stack([np.frombuffer(a[2], dtype=np.float32) for a in added])
            self._add(ids, vecs)
        self.seq, self.mark = seq, mark

    def sync(self, catalog: Catalog, kind: str = "image") -> None:
        """Apply every catalog change newer than this index's sequence number.

        Safe to call from several threads while others search. An index of another history than
        the catalog's (a catalog restored from a backup, or one that lost its last commits in a
        power cut: the catalog's mark of the index's sequence number differs, or it never reached
        that number) holds vectors the catalog does not know; it is rebuilt from the catalog.
        """
        if catalog.head() == (self.seq, self.mark):
            return  # one read of two keys: what every query pays when nothing changed
        with self._lock.gen_wlock():
            head = catalog.head()
            if head == (self.seq, self.mark):
                return  # another thread caught up meanwhile
            if self._same_history(catalog, head[0]):
                seq, mark, added, removed = catalog.changes_marked(self.seq, kind)
                self._apply(seq, added, removed, mark)
            else:
                self._rebuild_from(catalog, kind)

    def _same_history(self, catalog: Catalog, head_seq: int) -> bool:
        if self.seq == 0:
            return True  # reflects nothing yet: replaying everything is right
        if self.mark is None:
            return self.seq <= head_seq  # saved by an older version: sequence numbers only
        return catalog.mark_at(self.seq) == self.mark

    def _rebuild_from(self, catalog: Catalog, kind: str) -> None:
        from vtsearch.storage.rebuild import rebuild

        try:
            fresh = rebuild(catalog, self.dim, self.spec, kind)
        except ValueError:  # too few vectors left to train this kind: the factory's pick
            fresh = rebuild(catalog, self.dim, None, kind)
        self.index, self.spec, self.seq = fresh.index, fresh.spec, fresh.seq
        self.mark = catalog.mark_at(fresh.seq)
        self._dead = 0
        self._generation += 1

    def memory_bytes(self) -> int:
        """Size of the index as FAISS writes it: close to its resident memory."""
        fd, tmp = tempfile.mkstemp(suffix=".faiss")
        os.close(fd)
        try:
            load_faiss().write_index(self.index, tmp)
            return os.path.getsize(tmp)
        finally:
            os.unlink(tmp)

    def save(self, folder: Path, name: str = IMAGES) -> None:
        """Write the index and its sequence number atomically (temp file, then rename).

        The files follow the umask. Raises ``DiskFullError`` or ``CollectionPermissionError``
        (naming the file) when they cannot be written; the saved index is then left as it was.
        """
        from vtsearch.storage.files import create_temp, os_errors

        faiss = load_faiss()
        target = folder / f"{name}.faiss"
        with os_errors(target, "write"):
            folder.mkdir(parents=True, exist_ok=True)
            tmp = str(create_temp(folder, f".{name}-"))
            try:
                # Through a Python file rather than a path: FAISS turns a failed write into a
                # RuntimeError, Python keeps the OSError (a full disk) that os_errors maps.
                # Under the shared lock: another thread's sync must not change it mid-write.
                with open(tmp, "wb") as f, self._lock.gen_rlock():
                    faiss.write_index(self.index, faiss.PyCallbackIOWriter(f.write))
                    seq, mark = self.seq, self.mark
                meta = {
                    "seq": seq,
                    "mark": mark,
                    "kind": self.kind,
                    "dim": self.dim,
                    "spec": json.loads(self.spec.to_json()),
                }
                meta_tmp = tmp + ".json"
                Path(meta_tmp).write_text(json.dumps(meta))
                # The sequence number is written last: an index newer than its meta is only ever
                # "stale" and gets re-applied changes, which are idempotent.
                os.replace(tmp, target)
                os.replace(meta_tmp, folder / f"{name}.json")
            finally:
                for leftover in (tmp, tmp + ".json"):
                    if os.path.exists(leftover):
                        os.unlink(leftover)

    @classmethod
    def load_or_empty(cls, folder: Path, dim: int, name: str = IMAGES) -> VectorIndex:
        """The saved index, or an empty one when the file is damaged: it is only a cache, and
        :meth:`sync` rebuilds it from the catalog. A file this user may not read is an error
        (``CollectionPermissionError``), not a reason to rebuild the index on every query."""
        from vtsearch.errors import StorageError

        try:
            return cls.load(folder, dim, name=name)
        except StorageError:
            raise
        except Exception:
            return cls(dim)

    @classmethod
    def load(cls, folder: Path, dim: int, kind: str = "flat", name: str = IMAGES) -> VectorIndex:
        """The saved index, or an empty one when none was saved (or it does not match ``dim``).

        Raises ``CollectionPermissionError`` (naming the file) when this user may not read it: a
        reader that took that for a damaged file would rebuild the index on every query.
        """
        from vtsearch.storage.files import os_errors

        path, meta_path = folder / f"{name}.faiss", folder / f"{name}.json"
        with os_errors(path, "read"):
            if not (path.exists() and meta_path.exists()):
                return cls(dim, kind)
            # FAISS reports an unreadable file as a RuntimeError like a damaged one: open it
            # here first, so a denied read is an OSError.
            path.open("rb").close()
        with os_errors(meta_path, "read"):
            meta = json.loads(meta_path.read_text())
        index = load_faiss().read_index(str(path))
        if index.d != dim:
            return cls(dim, kind)
        spec = meta.get("spec")
        spec = IndexSpec.from_json(json.dumps(spec)) if spec else IndexSpec(meta.get("kind", kind))
        return cls(
            dim,
            _spec_matching(index, spec),
            index,
            seq=int(meta.get("seq", 0)),
            mark=meta.get("mark"),
        )


def index_ids(vindex: VectorIndex) -> np.ndarray:
    """The catalog ids a FAISS index holds (one entry per stored vector, removed slots left out)."""
    ids = load_faiss().vector_to_array(vindex.index.id_map).astype(np.int64)
    return ids[ids >= 0]


def _spec_matching(index, spec: IndexSpec) -> IndexSpec:
    """``spec``, corrected where the FAISS file holds another kind of index: a crash between the
    two renames of :meth:`VectorIndex.save` leaves a new file beside the old meta, and searching
    one kind with another's parameters fails."""
    faiss = load_faiss()
    base = faiss.downcast_index(index.index)
    if isinstance(base, faiss.IndexRefine):
        graph = faiss.downcast_index(base.base_index).hnsw
        found = IndexSpec("hnsw", m=graph.nb_neighbors(1), codec="sq8", refine=SQ8_REFINE)
    elif isinstance(base, faiss.IndexHNSW):
        found = IndexSpec("hnsw", m=base.hnsw.nb_neighbors(1))
    elif isinstance(base, faiss.IndexIVFPQ):
        found = IndexSpec("ivfpq", nlist=base.nlist, nprobe=base.nprobe, pq_m=base.pq.M)
    else:
        found = IndexSpec("flat")
    if (found.kind, found.codec) == (spec.kind, spec.codec):
        return spec
    return replace(found, ef_search=spec.ef_search, built_for=spec.built_for)
