"""An IVF-PQ index ranks by lossy codes; queries re-score its candidates on the stored vectors."""

from __future__ import annotations

import numpy as np

from vtsearch.search.retrieve import RESCORE_FACTOR, rescore, retrieve, search_depth
from vtsearch.storage.catalog import Catalog, NewImage
from vtsearch.storage.index_kinds import IndexSpec
from vtsearch.storage.rebuild import rebuild
from vtsearch.storage.vectors import VectorIndex


def clustered(n: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(1234).standard_normal((40, dim)).astype(np.float32)
    x = centres[rng.integers(0, 40, n)] + 0.5 * rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_rescore_orders_by_stored_vectors_and_drops_missing_ones():
    q = np.array([1.0, 0.0], dtype=np.float32)
    stored = {1: np.array([0.2, 0.98]), 2: np.array([0.9, 0.44]), 4: np.array([0.6, 0.8])}
    # Lossy scores put 1 first; exact ones do not, and 3 was removed since the index snapshot.
    got = rescore([(1, 0.99), (3, 0.95), (4, 0.7), (2, 0.5)], stored, q, 2)
    assert [i for i, _ in got] == [2, 4] and np.allclose([s for _, s in got], [0.9, 0.6])


def test_ivfpq_results_are_rescored_exactly_and_find_more_true_neighbours(tmp_path):
    dim, n = 32, 12_000
    x = clustered(n, dim, 0)
    cat = Catalog.open(tmp_path)
    cat.bind_model("synthetic", dim)
    for i in range(0, n, 2000):
        cat.write_batch(
            [NewImage(f"/p/{j}.jpg", 1, 1, f"{j:064x}", vector=x[j]) for j in range(i, i + 2000)]
        )
    ids = np.array(sorted(cat.rows(range(1, n + 1))), dtype=np.int64)
    # 4 bytes a vector: codes lossy enough that their own top 10 misses many true neighbours.
    vi = rebuild(cat, dim, IndexSpec("ivfpq", nlist=64, nprobe=16, pq_m=4))
    assert vi.kind == "ivfpq" and search_depth(vi, 10) == 10 * RESCORE_FACTOR
    flat = VectorIndex(dim)
    flat.sync(cat)

    queries = clustered(60, dim, 1)
    lossy = exact = 0.0
    for q in queries:
        truth = set(flat.search(q[None], 10)[1][0].tolist())
        got = retrieve(q, vi, cat, 10)
        assert len(got) == 10
        # Scores are the float vectors' inner products, in order.
        want = [float(x[np.searchsorted(ids, r.id)] @ q) for r in got]
        assert np.allclose([r.score for r in got], want, atol=1e-5)
        assert want == sorted(want, reverse=True)
        exact += len(truth & {r.id for r in got}) / 10
        lossy += len(truth & set(vi.search(q[None], 10)[1][0].tolist())) / 10
    exact, lossy = exact / len(queries), lossy / len(queries)
    assert exact >= lossy + 0.2, (exact, lossy)
    cat.close()


def test_big_ivfpq_indexes_are_asked_for_more_candidates():
    """Past a million vectors the codes keep less of the order (bench/scale.py): 16 x k."""
    from vtsearch.search.retrieve import RESCORE_DEEP_FROM, RESCORE_FACTOR_DEEP

    class Sized:
        def __init__(self, kind: str, n: int) -> None:
            self.kind, self.n = kind, n

        def __len__(self) -> int:
            return self.n

    assert search_depth(Sized("ivfpq", RESCORE_DEEP_FROM - 1), 10) == 10 * RESCORE_FACTOR
    assert search_depth(Sized("ivfpq", RESCORE_DEEP_FROM), 10) == 10 * RESCORE_FACTOR_DEEP
    assert search_depth(Sized("hnsw", 10 * RESCORE_DEEP_FROM), 10) == 10
