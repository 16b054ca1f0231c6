"""The FAISS vector index of a collection, keyed by catalog row id, and the factory that picks it.

The index is a derived cache of the vectors in the catalog. It is saved atomically together with
the catalog sequence number it reflects, so a reader can bring a stale file up to date with
``Catalog.changes_since`` instead of rebuilding it.

Three kinds, chosen by :func:`choose_index` from the collection's size and the memory at hand:

- ``flat``: exact inner-product search. Best while a brute-force scan is fast enough.
- ``hnsw``: a graph index (HNSW, ``M`` links per node); ``ef_search`` trades recall for speed.
  Its ``codec`` is either the full float vectors (``flat``) or, as the factory picks it, 8-bit
  scalar-quantised codes (``sq8``) that the graph walk reads at a quarter of the bytes, with the
  best ``refine * k`` candidates re-scored on float16 copies of the vectors. Sub-millisecond
  queries at a million vectors.
- ``ivfpq``: an inverted file with a trained coarse quantizer and product-quantised codes
  (``pq_m`` bytes per vector), for collections whose full vectors do not fit in memory.

Every kind is wrapped in ``IndexIDMap2`` so it is addressed by catalog ids. HNSW and IVF cannot
remove a vector in place; a removed or replaced vector keeps its slot with the id ``-1`` and is
filtered out of every search, and :func:`rebuild` (``vtsearch optimize``) compacts them away.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from readerwriterlock import rwlock

if TYPE_CHECKING:
    from vtsearch.storage.catalog import Catalog

#: File stem of the image index; the text set's index is saved as ``texts``.
IMAGES = "vectors"
KINDS = ("flat", "hnsw", "ivfpq")
#: How an HNSW index stores its vectors (see the module docstring).
CODECS = ("flat", "sq8")

#: Up to this many vectors, exact search is fast enough (about 10 ms per query at dimension 1152
#: on one core of a laptop CPU); beyond it an approximate index pays.
FLAT_MAX = 50_000
#: Share of the machine's memory the index may use before the factory compresses vectors (IVF-PQ).
MEMORY_SHARE = 0.5
#: Share of dead (removed or replaced) slots in an HNSW/IVF index that makes it worth compacting.
DEAD_SHARE = 0.2
#: An IVF index is re-trained once the collection is this many times larger than it was built for.
IVF_GROWTH = 4.0
#: Fewest vectors an IVF-PQ index trains well on: FAISS wants 39 points for each of the 256
#: centroids of a sub-quantizer.
IVFPQ_MIN = 10_000
#: Fewest vectors an ``sq8`` HNSW index learns its per-dimension value ranges from.
SQ8_MIN = 1_000
#: Candidates per wanted result that an ``sq8`` HNSW index re-scores on float16 vectors: at 1M
#: synthetic vectors 4 gave the recall of 8 at a lower latency (a one-off sweep, ef 64 to 256).
SQ8_REFINE = 4
#: Build-time beam of an ``sq8`` HNSW graph. At 1M synthetic vectors (``bench/vector_index.py``)
#: 64 gave R@10 0.79 at ef 64 and 160 gave 0.98: the better graph costs 2.8x the build time
#: (0.6 ms a vector on 2 cores, against 25 ms or more to embed the image it stands for). 256 was
#: no better at 1.8x the build time again.
SQ8_EF_CONSTRUCTION = 160
#: Searches of up to this many queries run on one OpenMP thread (see ``VectorIndex.search``).
FEW_QUERIES = 16
#: Tombstone id of a removed vector's slot in an approximate index.
DEAD = -1


def _faiss():
    import faiss

    return faiss


@dataclass(frozen=True)
class IndexSpec:
    """How an index is built; recorded with the index file and in the catalog meta.

    Example:
        >>> IndexSpec.from_json(IndexSpec("hnsw", m=32).to_json()).m
        32
    """

    kind: str = "flat"
    #: HNSW: links per node, build-time and search-time beam widths.
    m: int = 32
    ef_construction: int = 64
    ef_search: int = 64
    #: IVF: inverted lists, lists visited per query, PQ sub-quantizers (bytes per vector).
    nlist: int = 0
    nprobe: int = 0
    pq_m: int = 0
    #: Collection size the index was chosen for (IVF quantizers are trained for it).
    built_for: int = 0
    #: HNSW: ``flat`` (float32 vectors) or ``sq8`` (8-bit codes, re-scored on float16 copies).
    codec: str = "flat"
    #: HNSW ``sq8``: candidates re-scored per wanted result.
    refine: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown index kind {self.kind!r}; choose one of {', '.join(KINDS)}")
        if self.codec not in CODECS:
            raise ValueError(f"unknown codec {self.codec!r}; choose one of {', '.join(CODECS)}")

    @property
    def quantised_graph(self) -> bool:
        """An HNSW graph over 8-bit codes, with float16 re-scoring."""
        return self.kind == "hnsw" and self.codec == "sq8"

    def train_min(self) -> int:
        """Fewest vectors this index can be trained on (0: it needs no training)."""
        if self.kind == "ivfpq":
            return self.nlist or 1024
        return SQ8_MIN if self.quantised_graph else 0

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None, default_kind: str = "flat") -> IndexSpec:
        if not text:
            return cls(default_kind)
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in json.loads(text).items() if k in known})

    def bytes_per_vector(self, dim: int) -> float:
        """Approximate resident memory per vector, id map included."""
        idmap = 8 + 16  # the id array, and the reverse map's hash node
        if self.kind == "flat":
            return 4 * dim + idmap
        if self.kind == "hnsw":
            # Level 0 has 2*M links; upper levels add about 1/M of that again.
            links = 4 * 2 * self.m * (1 + 1 / self.m)
            vectors = (1 + 2) * dim if self.quantised_graph else 4 * dim
            return vectors + links + idmap
        return self.pq_m + 8 + idmap  # codes, and the inverted list's id


def physical_memory() -> int:
    """Bytes of RAM on this machine (0 when unknown)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 0


def _pq_m(dim: int, most: int = 96) -> int:
    """The largest number of PQ sub-quantizers up to ``most`` that divides ``dim``."""
    return max(m for m in range(1, min(most, dim) + 1) if dim % m == 0)


def choose_index(n: int, dim: int, memory_bytes: int | None = None) -> IndexSpec:
    """The index kind and parameters for a collection of ``n`` vectors of dimension ``dim``.

    Exact search while it is fast enough (``n <= FLAT_MAX``); then HNSW while its full vectors and
    graph fit in ``MEMORY_SHARE`` of ``memory_bytes`` (default: this machine's RAM); beyond that
    IVF-PQ with about ``4 sqrt(n)`` lists.

    Example:
        >>> choose_index(10_000, 1152).kind, choose_index(1_000_000, 1152, 64 << 30).kind
        ('flat', 'hnsw')
        >>> choose_index(100_000_000, 1152, 64 << 30).kind
        'ivfpq'
    """
    if n <= FLAT_MAX:
        return IndexSpec("flat", built_for=n)
    hnsw = hnsw_spec(n)
    memory = physical_memory() if memory_bytes is None else memory_bytes
    if memory <= 0 or n * hnsw.bytes_per_vector(dim) <= MEMORY_SHARE * memory:
        return hnsw
    nlist = int(2 ** round(math.log2(max(256.0, 4 * math.sqrt(n)))))
    return IndexSpec(
        "ivfpq", nlist=nlist, nprobe=max(16, nlist // 64), pq_m=_pq_m(dim), built_for=n
    )


def hnsw_spec(n: int) -> IndexSpec:
    """The HNSW parameters for ``n`` vectors: a graph over 8-bit codes once there are enough
    vectors to learn their ranges from (faster and 25% smaller than over float vectors, at the
    same recall in ``bench/vector_index.py``)."""
    if n < SQ8_MIN:
        return IndexSpec("hnsw", built_for=n)
    return IndexSpec(
        "hnsw",
        ef_construction=SQ8_EF_CONSTRUCTION,
        codec="sq8",
        refine=SQ8_REFINE,
        built_for=n,
    )


def make_index(spec: IndexSpec | str, dim: int):
    """An empty FAISS index of ``spec``, wrapped so it is addressed by catalog ids.

    An ``ivfpq`` index must be trained (:meth:`VectorIndex.train`) before vectors are added.
    """
    faiss = _faiss()
    spec = IndexSpec(spec) if isinstance(spec, str) else spec
    if spec.kind == "flat":
        base = faiss.IndexFlatIP(dim)
    elif spec.quantised_graph:
        ip, sq = faiss.METRIC_INNER_PRODUCT, faiss.ScalarQuantizer
        # One range for all dimensions rather than one per dimension: the graph walk decodes
        # faster (R@10 alike, 10-20% less time per query on 50k synthetic vectors), and the
        # float16 re-scoring puts the final order right.
        graph = faiss.IndexHNSWSQ(dim, sq.QT_8bit_uniform, spec.m, ip)
        graph.hnsw.efConstruction = spec.ef_construction
        graph.hnsw.efSearch = spec.ef_search
        fine = faiss.IndexScalarQuantizer(dim, sq.QT_fp16, ip)
        base = faiss.IndexRefine(graph, fine)
        base.k_factor = float(spec.refine or SQ8_REFINE)
        # The refine index frees its parts; Python must not free them a second time.
        graph.this.disown()
        fine.this.disown()
        base.own_fields = base.own_refine_index = True
    elif spec.kind == "hnsw":
        base = faiss.IndexHNSWFlat(dim, spec.m, faiss.METRIC_INNER_PRODUCT)
        base.hnsw.efConstruction = spec.ef_construction
        base.hnsw.efSearch = spec.ef_search
    else:
        nlist = spec.nlist or 1024
        quantizer = faiss.IndexFlatIP(dim)
        base = faiss.IndexIVFPQ(
            quantizer, dim, nlist, spec.pq_m or _pq_m(dim), 8, faiss.METRIC_INNER_PRODUCT
        )
        base.nprobe = spec.nprobe or 16
        base.set_direct_map_type(faiss.DirectMap.Array)  # reconstruct() by slot
    return faiss.IndexIDMap2(base)


class VectorIndex:
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
        return _faiss().rev_swig_ptr(self.index.id_map.data(), n)

    @property
    def base(self):
        """The FAISS index inside the id map (flat, HNSW or IVF-PQ)."""
        return _faiss().downcast_index(self.index.index)

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

    def _params(self):
        # Built once per spec, index and tombstone state, and per thread: FAISS's id map swaps its
        # own selector into the parameters during a search, so threads must not share them.
        # Making the SWIG objects anew cost about 8 us a query, against a walk of 300-500 us.
        key = (self.spec, self._generation, bool(self._dead))
        cache = getattr(self._params_local, "cache", None)
        if cache is None:
            cache = self._params_local.cache = {}
        if key not in cache:
            if len(cache) >= 8:
                cache.clear()
            cache[key] = self._make_params()
        return cache[key]

    def _make_params(self):
        faiss = _faiss()
        sel = None
        if self._dead:
            sel = faiss.IDSelectorNot(faiss.IDSelectorBatch(np.array([DEAD], dtype=np.int64)))
        if self.spec.quantised_graph:
            graph = faiss.SearchParametersHNSW()
            graph.efSearch = self.spec.ef_search
            params = faiss.IndexRefineSearchParameters()
            params.k_factor = float(self.spec.refine or SQ8_REFINE)
            params.base_index_params = graph
            if sel is None:
                return params, graph
            # IndexRefine does not hand the id map's selector down to the graph: give the graph
            # one that reads catalog ids through the map itself.
            inner = faiss.IDSelectorTranslated(self.index.id_map, sel)
            graph.sel = inner
            return params, (graph, inner, sel)
        if self.kind == "hnsw":
            params = faiss.SearchParametersHNSW()
            params.efSearch = self.spec.ef_search
        elif self.kind == "ivfpq":
            params = faiss.SearchParametersIVF()
            params.nprobe = self.spec.nprobe or self.base.nprobe
        else:
            return None, None
        if sel is not None:
            params.sel = sel
        return params, sel  # the selector (and nested params) must outlive the search

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` ``(scores, ids)`` per query; missing slots have id -1.

        A few queries run on one thread: FAISS spreads a single brute-force query over its
        OpenMP threads, which made it 3.5x slower on 2 cores (100k x 1152: 22 ms vs 78 ms).
        """
        faiss = _faiss()
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        with self._lock.gen_rlock():
            k = max(1, min(k, max(len(self), 1)))
            params, _keep = self._params()
            # OpenMP's thread count is a per-thread setting: concurrent searches do not mix them.
            threads = faiss.omp_get_max_threads()
            if len(q) <= FEW_QUERIES:
                faiss.omp_set_num_threads(1)
            try:
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
            _faiss().write_index(self.index, tmp)
            return os.path.getsize(tmp)
        finally:
            os.unlink(tmp)

    def save(self, folder: Path, name: str = IMAGES) -> None:
        """Write the index and its sequence number atomically (temp file, then rename).

        The files follow the umask. Raises ``DiskFullError`` or ``CollectionPermissionError``
        (naming the file) when they cannot be written; the saved index is then left as it was.
        """
        from vtsearch.storage.files import create_temp, os_errors

        faiss = _faiss()
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
        index = _faiss().read_index(str(path))
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


def _spec_matching(index, spec: IndexSpec) -> IndexSpec:
    """``spec``, corrected where the FAISS file holds another kind of index: a crash between the
    two renames of :meth:`VectorIndex.save` leaves a new file beside the old meta, and searching
    one kind with another's parameters fails."""
    faiss = _faiss()
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


# -- choosing and rebuilding ---------------------------------------------------------------------


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
    session = Session(catalog.engine)
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
        vi.train(_training_sample(catalog, kind, max(64 * spec.nlist, 50_000)))
    for ids, vecs in batches:
        vi.index.add_with_ids(vecs, ids)
    return vi


def spec_for_kind(kind: str, n: int, dim: int, memory_bytes: int | None = None) -> IndexSpec:
    """Parameters for an index of a given ``kind`` holding ``n`` vectors (a forced choice)."""
    auto = choose_index(n, dim, memory_bytes)
    if auto.kind == kind:
        return auto
    if kind == "hnsw":
        return hnsw_spec(n)
    if kind != "ivfpq":
        return IndexSpec(kind, built_for=n)
    if n < IVFPQ_MIN:
        from vtsearch.errors import ConfigError

        raise ConfigError(
            f"an ivfpq index needs at least {IVFPQ_MIN} vectors to train on, not {n}; "
            "use flat or hnsw"
        )
    # Enough training points per list (FAISS wants about 39), at least one list.
    nlist = int(2 ** round(math.log2(max(1.0, 4 * math.sqrt(n)))))
    while nlist > 1 and nlist * 39 > n:
        nlist //= 2
    return IndexSpec(
        "ivfpq",
        nlist=nlist,
        nprobe=max(1, min(nlist, max(16, nlist // 64))),
        pq_m=_pq_m(dim),
        built_for=n,
    )


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
