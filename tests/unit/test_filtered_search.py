"""Filters inside retrieval at 10,000 vectors, HNSW (8-bit codes) and IVF-PQ as the factory
builds them: ``k`` results whenever ``k`` images match, where a post-filter of the top ``k``
returns (almost) none, checked against exact search restricted to the same ids."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from vtsearch.search.retrieve import retrieve
from vtsearch.storage import vectors, vectors_filtered
from vtsearch.storage.catalog import Catalog, NewImage
from vtsearch.storage.filters import Filters
from vtsearch.storage.index_kinds import IndexSpec, hnsw_spec, spec_for_kind
from vtsearch.storage.rebuild import build, rebuild
from vtsearch.storage.vectors import VectorIndex
from vtsearch.storage.vectors_filtered import filtered_ef

DIM, N, K = 64, 10_000, 10
WANTED = "/photos/wanted"  # 1% of the rows
BROAD = "/photos/broad"  # 40%


def unit_vectors(n: int, seed: int, clusters: int = 40) -> np.ndarray:
    """Unit vectors around seeded cluster centres."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(1234).standard_normal((clusters, DIM)).astype(np.float32)
    x = centres[rng.integers(0, clusters, n)] + 0.5 * rng.standard_normal((n, DIM))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    """A catalog of N rows: 1% under WANTED, 40% under BROAD, the rest elsewhere, spread at
    random over the vectors (the wanted photos are no nearer any query than the others)."""
    cat = Catalog.open(tmp_path_factory.mktemp("filtered"))
    cat.bind_model("synthetic", DIM)
    x = unit_vectors(N, 0)
    folder = np.random.default_rng(7).permutation(
        np.array(
            [WANTED] * (N // 100)
            + [BROAD] * (N * 2 // 5)
            + ["/photos/other"] * (N - N // 100 - N * 2 // 5)
        )
    )
    for start in range(0, N, 1000):
        cat.write_batch(
            [
                NewImage(f"{folder[i]}/{i:05d}.jpg", 1, 1, f"{i:064x}", vector=x[i])
                for i in range(start, start + 1000)
            ]
        )
    ids = np.array(sorted(r.id for r in cat.records().values()), dtype=np.int64)
    return cat, x, ids, folder


@pytest.fixture(scope="module")
def indexes(collection) -> dict[str, VectorIndex]:
    """Each kind built once from the catalog: HNSW over 8-bit codes as the factory picks it at
    this size, IVF-PQ with the lists and probes it picks but 16-byte codes (64 take 4x as long
    to train, and the codes only order the candidates that are re-scored)."""
    cat = collection[0]
    out = {}
    for spec in (hnsw_spec(N), replace(spec_for_kind("ivfpq", N, DIM), pq_m=16)):
        out[spec.kind] = vi = rebuild(cat, DIM, spec)
        assert len(vi) == N and (vi.spec.quantised_graph or vi.kind == "ivfpq")
    return out


@pytest.fixture(params=["hnsw", "ivfpq"])
def index(request, indexes) -> VectorIndex:
    return indexes[request.param]


def exact_among(q: np.ndarray, x: np.ndarray, ids: np.ndarray, members: np.ndarray, k: int):
    """Catalog ids of the exact top ``k`` of ``members`` for each query."""
    rows = np.searchsorted(ids, members)
    top = np.argsort(-(q @ x[rows].T), axis=1)[:, :k]
    return members[top]


def queries(n: int = 20) -> np.ndarray:
    return unit_vectors(n, 99)


def search_all(vi, cat, q, members):
    return [[h.id for h in retrieve(v, vi, cat, K, members)] for v in q]


def recall(got, want) -> float:
    return float(np.mean([len(set(g) & set(w)) / len(w) for g, w in zip(got, want, strict=True)]))


def test_a_selective_folder_gives_k_results_exact_where_a_post_filter_gives_none(collection, index):
    cat, x, ids, _ = collection
    wanted = cat.matching_ids(Filters(folders=[WANTED]))
    assert len(wanted) == N // 100
    q = queries()
    # What a post-filter of the top k would keep: almost nothing.
    post = [[h.id for h in retrieve(v, index, cat, K) if h.id in set(wanted)] for v in q]
    assert sum(map(len, post)) < K * len(q) // 5
    got = search_all(index, cat, q, wanted)
    want = exact_among(q, x, ids, wanted, K)
    assert all(len(g) == K and set(g) <= set(wanted) for g in got)
    # 100 ids: scanned exactly (HNSW: the float16 copies; IVF-PQ: all re-scored on the floats).
    assert recall(got, want) == 1.0
    if index.kind == "ivfpq":
        assert got == want.tolist()  # exact floats: the same order too


def test_a_broad_folder_goes_through_the_selector_with_high_recall(collection, index):
    cat, x, ids, _ = collection
    broad = cat.matching_ids(Filters(folders=[BROAD]))
    if index.kind == "hnsw":  # a graph walk with a beam widened for 40%, not a scan
        assert filtered_ef(index.spec, K, len(broad), N) == 160
    q = queries()
    got = search_all(index, cat, q, broad)
    assert all(len(g) == K and set(g) <= set(broad) for g in got)
    # Measured: 1.0 for both (HNSW: beam 160; IVF-PQ: 40 of 256 lists, re-scored).
    assert recall(got, exact_among(q, x, ids, broad, K)) >= 0.9


def test_hnsw_selector_on_a_selective_set_and_the_scan_when_it_falls_short(
    collection, indexes, monkeypatch
):
    cat, x, ids, _ = collection
    vi = indexes["hnsw"]
    wanted = cat.matching_ids(Filters(folders=[WANTED]))
    q = queries()
    want = exact_among(q, x, ids, wanted, K)
    scans = []
    real_scan = VectorIndex._scan

    def counted(self, *a):
        scans.append(1)
        return real_scan(self, *a)

    monkeypatch.setattr(VectorIndex, "_scan", counted)
    # The graph walk itself, its beam widened to 6,400 for a 1% set (the cost rule would scan).
    monkeypatch.setattr(vectors_filtered, "SCAN_PER_EF", 0)
    monkeypatch.setattr(vectors_filtered, "EF_MAX", 10**6)
    got = search_all(vi, cat, q, wanted)
    assert not scans and all(len(g) == K for g in got)
    assert recall(got, want) >= 0.9  # measured 1.0
    # A beam far too narrow for the filter meets fewer than k members: the set is scanned.
    monkeypatch.setattr(vectors_filtered, "filtered_ef", lambda *a: 16)
    got = search_all(vi, cat, q, wanted)
    assert len(scans) == len(q) and recall(got, want) == 1.0


def test_ivf_probes_every_list_when_the_scaled_probe_falls_short():
    n = 4000
    x = unit_vectors(n, 3, clusters=8)
    vi = build(IndexSpec("ivfpq", nlist=64, nprobe=1, pq_m=16), DIM, np.arange(n), x)
    # The members: one cluster's vectors; the query: far from them.
    centre = x[0]
    near = x @ centre
    members = np.flatnonzero(near > np.quantile(near, 0.75))
    q = -centre[None, :]
    faiss = vectors.load_faiss()
    params = faiss.SearchParametersIVF()
    params.nprobe = -(-n // len(members))  # what the scaled probe tries first
    params.sel = faiss.IDSelectorBatch(members)
    short = vi.index.search(q, K, params=params)[1]
    assert (short >= 0).sum() < K  # the first try alone falls short
    got = vi.search(q, K, ids=members)[1][0]
    assert len(got) == K and (got >= 0).all() and set(got) <= set(members.tolist())


@pytest.mark.parametrize(
    "spec",
    [
        IndexSpec("flat"),
        IndexSpec("hnsw"),
        IndexSpec("hnsw", codec="sq8", refine=4),
        IndexSpec("ivfpq", nlist=16, nprobe=4, pq_m=16),
    ],
    ids=["flat", "hnsw", "hnsw-sq8", "ivfpq"],
)
def test_id_sets_skip_removed_vectors_and_cut_k_to_the_set(spec):
    n = 3000
    x = unit_vectors(n, 5)
    vi = build(spec, DIM, np.arange(1, n + 1), x)
    members = np.arange(1, n + 1, 7)
    vi.remove(members[:3])
    q = unit_vectors(5, 6)
    scores, got = vi.search(q, K, ids=members)
    assert got.shape == (5, K) and (got >= 0).all()
    assert np.isin(got, members[3:]).all()  # no removed vector, nothing outside the set
    # Fewer members held than k: all of them, best first, then padding (id -1).
    scores, got = vi.search(q, K, ids=members[:5])
    assert got.shape == (5, 5) and (got[:, 2:] == -1).all()
    assert set(got[0, :2].tolist()) == set(members[3:5].tolist())
    assert (scores[:, 0] >= scores[:, 1]).all()
    # None at all: no columns; ids the index does not hold: nothing found.
    assert vi.search(q, K, ids=np.array([], dtype=np.int64))[1].shape == (5, 0)
    assert (vi.search(q, K, ids=np.array([n + 50]))[1] == -1).all()


def test_filtered_searches_run_alongside_writes():
    """Selectors and parameters are made per search: threads searching id sets (scans and
    graph walks) while another adds and removes vectors see no errors and no foreign ids."""
    import threading

    n = 3000
    x = unit_vectors(n + 600, 8)
    vi = build(IndexSpec("hnsw", codec="sq8", refine=4), DIM, np.arange(1, n + 1), x[:n])
    small, broad = np.arange(1, n + 1, 50), np.arange(1, n + 1, 2)
    q = unit_vectors(8, 9)
    errors: list[BaseException] = []
    stop = threading.Event()

    def search() -> None:
        try:
            while not stop.is_set():
                for members in (small, broad):
                    got = vi.search(q, K, ids=members)[1]
                    assert np.isin(got[got >= 0], members).all()
        except BaseException as e:  # handed to the main thread
            errors.append(e)

    threads = [threading.Thread(target=search) for _ in range(3)]
    for t in threads:
        t.start()
    for i in range(n, n + 600, 50):
        vi.add(np.arange(i + 1, i + 51), x[i : i + 50])
        vi.remove(np.arange(i - 400, i - 350))
    stop.set()
    for t in threads:
        t.join()
    assert errors == []
