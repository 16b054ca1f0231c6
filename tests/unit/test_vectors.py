import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from vtsearch.storage.vectors import VectorIndex


def unit(rng, n, d=8):
    v = rng.standard_normal((n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_search_matches_exact_numpy():
    rng = np.random.default_rng(0)
    vecs, q = unit(rng, 200), unit(rng, 5)
    vi = VectorIndex(8)
    vi.add(np.arange(1000, 1200), vecs)
    scores, ids = vi.search(q, 10)
    exact = np.argsort(-(q @ vecs.T), axis=1)[:, :10] + 1000
    assert (ids == exact).all()
    assert np.allclose(scores[:, 0], (q @ vecs.T).max(1), atol=1e-5)


def test_readding_an_id_replaces_its_vector():
    rng = np.random.default_rng(1)
    a, b = unit(rng, 2)
    vi = VectorIndex(8)
    vi.add(np.array([5]), a[None])
    vi.add(np.array([5]), b[None])
    assert len(vi) == 1
    assert np.allclose(vi.reconstruct(5), b)


def test_save_load_round_trip_keeps_seq(tmp_path):
    rng = np.random.default_rng(2)
    vi = VectorIndex(8, seq=7)
    vi.add(np.array([1, 2, 3]), unit(rng, 3))
    vi.save(tmp_path)
    back = VectorIndex.load(tmp_path, 8)
    assert back.seq == 7 and len(back) == 3
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".vectors-")]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 30), st.integers(0, 10**6)), max_size=60))
def test_add_remove_sequences_agree_with_a_dict_model(ops):
    vi, model = VectorIndex(8), {}
    for is_add, row_id, seed in ops:
        if is_add:
            v = unit(np.random.default_rng(seed), 1)
            vi.add(np.array([row_id]), v)
            model[row_id] = v[0]
        else:
            vi.remove(np.array([row_id]))
            model.pop(row_id, None)
    assert len(vi) == len(model)
    if model:
        q = unit(np.random.default_rng(123), 1)
        scores, ids = vi.search(q, len(model))
        ref = sorted(model, key=lambda i: -float(model[i] @ q[0]))
        assert np.allclose(
            scores[0], sorted((float(model[i] @ q[0]) for i in ref), reverse=True), atol=1e-5
        )
        assert set(ids[0].tolist()) == set(model)
