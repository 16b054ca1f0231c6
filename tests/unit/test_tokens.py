import numpy as np

from vtsearch.storage.tokens import TokenCache


def test_round_trip_within_int8_precision(tmp_path):
    rng = np.random.default_rng(0)
    toks = rng.standard_normal((3, 49, 64)).astype(np.float32)
    cache = TokenCache(tmp_path, 49, 64)
    cache.put(np.array([5, 1, 9]), toks)
    got = cache.get(np.array([1, 5, 9, 2, 100]))
    assert got[3] is None and got[4] is None
    for g, t in zip(got[:3], toks[[1, 0, 2]], strict=True):
        assert np.abs(g - t).max() <= np.abs(t).max(axis=1).max() / 127 + 1e-6
    assert cache.bytes_per_image == 49 * 64 + 49 * 2


def test_remove_and_reopen(tmp_path):
    cache = TokenCache(tmp_path, 4, 8)
    cache.put(np.array([0, 1]), np.ones((2, 4, 8), np.float32))
    cache.remove(np.array([0]))
    again = TokenCache.open_existing(tmp_path)
    assert again is not None
    a, b = again.get(np.array([0, 1]))
    assert a is None and np.allclose(b, 1.0, atol=0.01)


def test_a_new_shape_starts_a_fresh_cache(tmp_path):
    TokenCache(tmp_path, 4, 8).put(np.array([0]), np.ones((1, 4, 8), np.float32))
    assert TokenCache(tmp_path, 4, 16).get(np.array([0])) == [None]


def test_tokens_of_another_reducer_revision_are_dropped(tmp_path):
    TokenCache(tmp_path, 4, 8, revision="a").put(np.array([0]), np.ones((1, 4, 8), np.float32))
    assert TokenCache.open_existing(tmp_path).revision == "a"
    assert TokenCache(tmp_path, 4, 8, revision="b").get(np.array([0])) == [None]
