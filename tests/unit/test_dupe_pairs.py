"""Near-duplicate pairs through each index kind against brute force (faiss contrib's rule:
approximate search is checked against exact search on seeded synthetic data), and the grouping
and keep-first order of ``find_duplicates``."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pytest

from vtsearch.errors import ConfigError
from vtsearch.search.dupes import (
    DupeFile,
    check_threshold,
    find_duplicates,
    group_pairs,
    keep_order,
    near_pairs,
)
from vtsearch.storage.catalog import Catalog, NewImage
from vtsearch.storage.index_kinds import IndexSpec, hnsw_spec
from vtsearch.storage.rebuild import rebuild
from vtsearch.storage.vectors import VectorIndex

DIM, N, THRESHOLD = 64, 3000, 0.9


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def planted(seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """3,000 unit vectors: random ones (cosine about +-0.12 between them) and planted near copies
    of some, from very close to just under the threshold, in pairs, chains of three and one
    cluster of 40 (more than a first search of 16 neighbours holds); 30 byte copies (the same
    vector and hash)."""
    rng = np.random.default_rng(seed)
    v = unit(rng.standard_normal((N, DIM)))
    sha = [f"{i:064x}" for i in range(N)]
    noise = lambda n, s: rng.standard_normal((n, DIM)) * s  # noqa: E731
    # Pairs: 600 copies with noise from 0.05 (cosine ~0.999) to 0.5 (~0.89, below 0.9).
    src = rng.choice(1000, 600, replace=False)
    v[1000:1600] = unit(v[src] + noise(600, 1) * rng.uniform(0.05, 0.5, (600, 1)) / np.sqrt(DIM))
    # Chains: a copy of a copy.
    v[1600:1700] = unit(v[1000:1100] + noise(100, 0.3 / np.sqrt(DIM)))
    # A cluster of 40 near-identical vectors.
    v[1700:1740] = unit(v[1740] + noise(40, 0.1 / np.sqrt(DIM)))
    # Byte copies.
    for i in range(1800, 1830):
        v[i], sha[i] = v[i - 800], sha[i - 800]
    return v, sha


def brute_force(v: np.ndarray, threshold: float, margin: float = 0.0) -> set[tuple[int, int]]:
    """Pairs (catalog ids) scoring ``threshold`` or more; with ``margin``, those within it."""
    s = v @ v.T
    hit = np.abs(s - threshold) < margin if margin else s >= threshold
    a, b = np.nonzero(np.triu(hit, 1))
    return {(int(x) + 1, int(y) + 1) for x, y in zip(a, b, strict=True)}


def same_pairs(got: set, v: np.ndarray) -> bool:
    """``got`` is what brute force finds, but for pairs within float rounding of the threshold
    (FAISS and numpy sum in another order)."""
    unsure = brute_force(v, THRESHOLD, 1e-5)
    return got - unsure == brute_force(v, THRESHOLD) - unsure


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    v, sha = planted()
    cat = Catalog.open(tmp_path_factory.mktemp("dupes"))
    cat.bind_model("synthetic", DIM)
    for start in range(0, N, 1000):
        cat.write_batch(
            [
                NewImage(
                    f"/photos/{i:05d}.jpg",
                    size=1000 + i,
                    mtime_ns=i,
                    sha256=sha[i],
                    vector=v[i],
                    width=100,
                    height=100,
                    format="JPEG",
                )
                for i in range(start, start + 1000)
            ]
        )
    yield cat, v
    cat.close()


@pytest.mark.parametrize(
    "spec",
    [IndexSpec("flat"), IndexSpec("hnsw"), hnsw_spec(N)],
    ids=["flat", "hnsw", "hnsw-sq8"],
)
def test_near_pairs_through_each_index_match_brute_force(catalog, spec):
    cat, v = catalog
    vindex = rebuild(cat, DIM, spec)
    assert vindex.spec.codec == spec.codec and len(vindex) == N
    a, b, s = near_pairs(cat, vindex, THRESHOLD)
    got = set(zip(a.tolist(), b.tolist(), strict=True))
    assert len(brute_force(v, THRESHOLD)) > 1000 and same_pairs(got, v)
    # The scores are exact (re-scored on the catalog's float vectors where codes are lossy).
    exact = np.einsum("ij,ij->i", v[a - 1], v[b - 1])
    assert np.allclose(s, exact, atol=1e-5)


def test_ivfpq_pairs_are_exact_and_nearly_all_found(catalog):
    cat, v = catalog
    vindex = rebuild(cat, DIM, IndexSpec("ivfpq", nlist=16, nprobe=16, pq_m=16))
    a, b, s = near_pairs(cat, vindex, THRESHOLD)
    got = set(zip(a.tolist(), b.tolist(), strict=True))
    want = brute_force(v, THRESHOLD)
    assert got <= want and len(got) >= 0.95 * len(want)
    assert np.allclose(s, np.einsum("ij,ij->i", v[a - 1], v[b - 1]), atol=1e-5)  # re-scored


def test_range_search_returns_the_best_within_the_radius_capped(catalog):
    _, v = catalog
    vindex = VectorIndex(DIM)
    vindex.add(np.arange(1, N + 1), v)
    q = v[1700:1703]  # members of the cluster of 40 copies of one vector
    lims, scores, ids = vindex.range_search(q, THRESHOLD, most=10)
    assert np.diff(lims).tolist() == [10, 10, 10]
    exact = q @ v.T
    for i in range(3):
        got = scores[lims[i] : lims[i + 1]]
        assert np.all(np.diff(got) <= 0) and np.all(got >= THRESHOLD)
        assert np.allclose(got, np.sort(exact[i])[::-1][:10], atol=1e-5)
    lims, _, ids = vindex.range_search(q, THRESHOLD)
    assert np.diff(lims).tolist() == [41, 41, 41]  # the 40 and their source, itself included
    assert set(ids[:41].tolist()) == set(range(1701, 1742))


def test_find_duplicates_groups_by_union_find_and_keeps_the_first_indexed_of_equals(catalog):
    cat, v = catalog
    vindex = rebuild(cat, DIM, IndexSpec("flat"))
    groups = find_duplicates(cat, vindex, THRESHOLD)
    assert groups.measure == "vectors" and groups.threshold == THRESHOLD
    want = group_pairs(*map(np.array, zip(*brute_force(v, THRESHOLD), strict=True)))
    assert sorted(sorted(f.id for f in g.files) for g in groups) == sorted(want)
    cluster = next(g for g in groups if 1741 in [f.id for f in g.files])
    assert len(cluster.files) == 41
    # Same resolution: the largest file (the highest id here) is kept.
    assert cluster.keep.id == max(f.id for f in cluster.files) and cluster.keep.keep
    byte_copy = next(g for g in groups if 1801 in [f.id for f in g.files])
    assert {f.id for f in byte_copy.files if f.exact} >= {1001, 1801}
    only = find_duplicates(cat, None, exact_only=True)
    assert len(only) == 30 and all(g.kind == "exact" for g in only)


def test_keep_order_resolution_then_size_then_oldest():
    def f(i, w, size, taken=None, mtime=0):
        return DupeFile(i, f"/p/{i}", "/p", size, w, w, "JPEG", taken, None, mtime)

    files = [
        f(1, 100, 500),
        f(2, 200, 100),
        f(3, 200, 300, mtime=5),
        f(4, 200, 300, datetime(2020, 1, 1), mtime=9),
        f(5, 200, 300, mtime=1),
    ]
    assert [x.id for x in sorted(files, key=keep_order)] == [4, 5, 3, 2, 1]


@pytest.mark.parametrize("bad", [0, -0.1, 1.01, float("nan"), "x"])
def test_a_threshold_outside_0_1_is_refused(bad):
    with pytest.raises(ConfigError, match="cosine similarity in"):
        check_threshold(bad)
