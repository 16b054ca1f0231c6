"""Searches of a ``VectorIndex`` that leave stored vectors out: removed slots (every search of an
approximate index), the ids outside a set (a search filter, ``VectorIndex.search(ids=...)``) and
the scores under a floor (``VectorIndex.range_search``, what ``vtsearch dupes`` asks).

An approximate index cannot drop a vector: a search of one with removed slots carries a selector
that skips the tombstone id. A filter is a bitmap selector over catalog ids; how it is searched (a
wider beam, more probes, or an exact scan of the members) depends on the kind and on the share of
the index the set is (``filtered_ef``).
"""

from __future__ import annotations

import numpy as np

from vtsearch.storage.index_kinds import SQ8_REFINE, IndexSpec, load_faiss

#: Tombstone id of a removed vector's slot in an approximate index.
DEAD = -1

#: A filtered HNSW search widens its beam by the share of the index the id set is, up to this
#: width; a set so sparse that it would need more is scanned exactly instead.
EF_MAX = 4096
#: What one unit of a filtered HNSW beam costs, in members of the id set scanned exactly: at
#: 100k x 1152 (sq8, 2-core EPYC, ``bench/filters.py``, two runs) a walk cost 2.2-5.7 us a unit
#: of beam (256 to 2048), the scan of the members' float16 copies 0.21-0.34 us a member.
SCAN_PER_EF = 10


def filtered_ef(spec: IndexSpec, k: int, members: int, ntotal: int) -> int | None:
    """The beam width for an HNSW search of ``k`` among ``members`` of ``ntotal`` vectors, or
    None when scanning the members exactly is cheaper (or the beam would pass ``EF_MAX``).

    The beam a search needs grows as the filter gets more selective: the walk meets members in
    proportion to their share, so the unfiltered beam is widened by ``ntotal / members``. An
    ``sq8`` graph is asked for ``refine * k`` candidates.

    Example:
        >>> spec = IndexSpec("hnsw", ef_search=64)
        >>> filtered_ef(spec, 10, 50_000, 100_000), filtered_ef(spec, 10, 1_000, 100_000)
        (128, None)
    """
    want = k * (spec.refine or SQ8_REFINE) if spec.quantised_graph else k
    ef = -(-max(spec.ef_search, want) * ntotal // max(members, 1))
    if ef > EF_MAX or members <= SCAN_PER_EF * ef:
        return None
    return ef


class FilteredSearch:
    """``VectorIndex`` methods that build its search parameters and search a subset of it (mixed
    into ``VectorIndex``, which holds the lock, the tombstone count and the parameter cache)."""

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
        faiss = load_faiss()
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

    def _search_among(self, q: np.ndarray, k: int, ids: np.ndarray):
        """:meth:`search` restricted to catalog ``ids`` (the caller holds the read lock).

        The set is a FAISS bitmap selector over catalog ids; removed slots (id -1) are never in
        it. A flat index scans with it (exact). An HNSW graph walks with it and a beam widened
        by the share of the index the set is (``filtered_ef``), unless scanning the set's
        stored vectors exactly costs less (a small set, a very selective filter), or the walk
        met fewer than ``k`` members: then the stored vectors are scanned (floats, or the
        float16 copies an ``sq8`` graph re-scores on). IVF-PQ probes lists in proportion, and
        all of them when that fell short; its hits are re-scored by the caller as usual.
        """
        faiss = load_faiss()
        ids = np.asarray(ids, dtype=np.int64)
        if len(ids) > 1 and not (ids[1:] > ids[:-1]).all():
            ids = np.unique(ids)  # the catalog's are sorted already: sorting 50k costs 3 ms
        ids = ids[ids >= 0]
        k = min(k, len(ids), len(self))
        if k < 1:
            return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
        mask = np.zeros(int(ids[-1]) + 1, dtype=bool)
        mask[ids] = True
        # The selector keeps a reference to its bitmap; FAISS tests bit (id % 8) of byte id / 8.
        sel = faiss.IDSelectorBitmap(np.packbits(mask, bitorder="little"))
        if self.kind == "flat":
            return self._scan(q, k, sel)
        if self.kind == "ivfpq":
            lists = int(self.base.nlist)
            nprobe = self.spec.nprobe or int(self.base.nprobe)
            nprobe = min(lists, -(-nprobe * int(self.index.ntotal) // len(ids)))
            while True:
                params = faiss.SearchParametersIVF()
                params.nprobe, params.sel = nprobe, sel
                scores, got = self.index.search(q, k, params=params)
                if nprobe >= lists or (got >= 0).sum(1).min() >= k:
                    return scores, got
                nprobe = lists  # every list: the members are all there
        ef = filtered_ef(self.spec, k, len(ids), int(self.index.ntotal))
        if ef is None:
            return self._scan(q, k, sel)
        graph = faiss.SearchParametersHNSW()
        graph.efSearch = ef
        if self.spec.quantised_graph:
            inner = faiss.IDSelectorTranslated(self.index.id_map, sel)
            graph.sel = inner
            params = faiss.IndexRefineSearchParameters()
            params.k_factor = float(self.spec.refine or SQ8_REFINE)
            params.base_index_params = graph
        else:
            graph.sel, params = sel, graph  # the id map translates the selector
        scores, got = self.index.search(q, k, params=params)
        if (got >= 0).sum(1).min() < k:
            # A selective filter can leave the beam with too few members: scan them instead.
            return self._scan(q, k, sel)
        return scores, got

    def _scan(self, q: np.ndarray, k: int, sel) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-``k`` among the ids ``sel`` holds, by scanning the stored vectors: the flat
        index itself, an HNSW graph's float storage or the float16 copies an ``sq8`` one
        re-scores on (the scores its own searches give)."""
        faiss = load_faiss()
        params = faiss.SearchParameters()
        if self.kind == "flat":
            params.sel = sel  # the id map translates it
            return self.index.search(q, k, params=params)
        base = self.base
        store = base.refine_index if self.spec.quantised_graph else base.storage
        inner = faiss.IDSelectorTranslated(self.index.id_map, sel)  # storage slot -> catalog id
        params.sel = inner
        scores, slots = faiss.downcast_index(store).search(q, k, params=params)
        got = np.where(slots >= 0, self._ids()[np.maximum(slots, 0)], -1)
        return scores, got

    def range_search(
        self, queries: np.ndarray, min_score: float, most: int = 64
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Stored vectors scoring at least ``min_score`` with each query, the ``most`` best per
        query: ``(lims, scores, ids)``, query ``i``'s hits ``lims[i]:lims[i + 1]``, best first.

        A flat index answers with FAISS's exact range search. The other kinds' own range
        searches fall short (over 8-bit codes FAISS's refine index returns nothing, an HNSW graph
        only what its beam meets): their 16 nearest are searched, then 4x as many for the queries
        whose last one still scores ``min_score``, up to ``most``; as complete as their recall.

        Example:
            >>> from vtsearch.storage.vectors import VectorIndex
            >>> vi = VectorIndex(2)
            >>> vi.add(np.array([1, 2, 3]), np.array([[1, 0], [0.8, 0.6], [0, 1]], "float32"))
            >>> lims, scores, ids = vi.range_search(np.array([[1, 0]], "float32"), 0.5)
            >>> lims.tolist(), ids.tolist()
            ([0, 2], [1, 2])
        """
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        rows, scores, ids = [], [], []
        if self.kind == "flat":
            with self._lock.gen_rlock():
                # FAISS keeps inner products strictly above the radius.
                lims, s, i = self.index.range_search(q, float(np.nextafter(min_score, -1.0)))
            row = np.repeat(np.arange(len(q)), np.diff(lims.astype(np.int64)))
            keep = s >= min_score
            rows, scores, ids = [row[keep]], [s[keep]], [i[keep]]
        else:
            todo, k = np.arange(len(q)), min(16, most)
            while len(todo):
                s, i = self.search(q[todo], k)
                k_got = s.shape[1]
                full = (s[:, -1] >= min_score) & (i[:, -1] >= 0)
                full &= (k_got < most) & (k_got < len(self))
                done = ~full[:, None] & (s >= min_score) & (i >= 0)
                rows.append(np.broadcast_to(todo[:, None], s.shape)[done])
                scores.append(s[done])
                ids.append(i[done])
                todo, k = todo[full], min(most, k * 4)
        row = np.concatenate(rows) if rows else np.zeros(0, np.int64)
        s = np.concatenate(scores) if scores else np.zeros(0, np.float32)
        i = np.concatenate(ids) if ids else np.zeros(0, np.int64)
        order = np.lexsort((-s, row))  # by query, best first
        row, s, i = row[order], s[order], i[order]
        counts = np.bincount(row, minlength=len(q))
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        keep = np.arange(len(row)) - starts[row] < most
        counts = np.bincount(row[keep], minlength=len(q))
        lims = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return lims, s[keep].astype(np.float32), i[keep].astype(np.int64)
