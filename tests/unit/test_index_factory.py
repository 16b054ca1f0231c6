"""The index factory: kind by size and memory, approximate search checked against exact search,
tombstoned removal in HNSW/IVF, rebuilds from the catalog, and `vtsearch optimize`."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from vtsearch.errors import ConfigError
from vtsearch.storage.catalog import Catalog, NewImage
from vtsearch.storage.index_kinds import FLAT_MAX, SQ8_MIN, IndexSpec, choose_index, spec_for_kind
from vtsearch.storage.rebuild import build, needs_rebuild, optimize, rebuild
from vtsearch.storage.vectors import VectorIndex


def clustered(n: int, dim: int, seed: int, clusters: int = 40, spread: float = 0.35) -> np.ndarray:
    """Unit vectors around seeded cluster centres (faiss contrib style synthetic data)."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(1234).standard_normal((clusters, dim)).astype(np.float32)
    x = centres[rng.integers(0, clusters, n)]
    x = x + spread * rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def recall_at(ids: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(ids, exact, strict=True)]))


def exact_top(q: np.ndarray, x: np.ndarray, ids: np.ndarray, k: int) -> np.ndarray:
    return ids[np.argsort(-(q @ x.T), axis=1)[:, :k]]


# -- the factory ---------------------------------------------------------------------------------


def test_factory_picks_by_size_and_memory():
    big = 256 << 30
    assert choose_index(0, 1152).kind == "flat"
    assert choose_index(FLAT_MAX, 1152, big).kind == "flat"
    assert choose_index(FLAT_MAX + 1, 1152, big).kind == "hnsw"
    assert choose_index(1_000_000, 1152, big).kind == "hnsw"
    # 1M vectors of 1152 floats (~5 GB with the graph) do not fit in half of 4 GB: compress.
    small = choose_index(1_000_000, 1152, 4 << 30)
    assert small.kind == "ivfpq" and 1152 % small.pq_m == 0 and small.nlist >= 1024
    assert small.bytes_per_vector(1152) < 0.05 * choose_index(10, 1152).bytes_per_vector(1152)
    assert small.built_for == 1_000_000
    # Large HNSW indexes walk 8-bit codes and re-score on float16 copies: 3 bytes a dimension.
    big_hnsw = choose_index(1_000_000, 1152, big)
    assert (big_hnsw.codec, big_hnsw.refine) == ("sq8", 4)
    assert big_hnsw.bytes_per_vector(1152) < 0.8 * IndexSpec("hnsw").bytes_per_vector(1152)


def test_spec_round_trips_and_rejects_typos():
    spec = IndexSpec("ivfpq", nlist=64, nprobe=8, pq_m=16, built_for=10)
    assert IndexSpec.from_json(spec.to_json()) == spec
    assert IndexSpec.from_json(None, "hnsw").kind == "hnsw"
    with pytest.raises(ValueError, match="unknown index kind"):
        IndexSpec("hnws")
    with pytest.raises(ValueError, match="unknown codec"):
        IndexSpec("hnsw", codec="sq4")
    # A spec saved before codecs existed reads as a graph over float vectors.
    old = json.dumps({"kind": "hnsw", "m": 32, "ef_search": 64})
    assert IndexSpec.from_json(old).codec == "flat"


def test_forced_ivfpq_needs_enough_vectors_to_train():
    with pytest.raises(ConfigError, match="at least"):
        spec_for_kind("ivfpq", 500, 64)
    spec = spec_for_kind("ivfpq", 20_000, 64)
    assert spec.nlist * 39 <= 20_000 and 1 <= spec.nprobe <= spec.nlist


# -- approximate against exact, on seeded synthetic data ----------------------------------------


def test_hnsw_recall_against_exact():
    dim, n = 48, 6000
    x, q = clustered(n, dim, 0), clustered(200, dim, 1)
    ids = np.arange(100, 100 + n)
    vi = build(IndexSpec("hnsw"), dim, ids, x)
    got = vi.search(q, 10)[1]
    assert recall_at(got, exact_top(q, x, ids, 10)) >= 0.95


SQ8 = IndexSpec("hnsw", codec="sq8", refine=4)


def test_quantised_hnsw_recall_against_exact_and_float16_vectors():
    dim, n = 48, 6000
    x, q = clustered(n, dim, 0), clustered(200, dim, 1)
    ids = np.arange(100, 100 + n)
    vi = build(SQ8, dim, ids, x)
    scores, got = vi.search(q, 10)
    exact = exact_top(q, x, ids, 10)
    assert recall_at(got, exact) >= 0.95
    # Scores come from the float16 re-scoring, not the 8-bit codes: close to exact ones.
    want = np.take_along_axis(q @ x.T, got - 100, axis=1)
    assert np.abs(scores - want).max() < 2e-3
    assert np.abs(vi.reconstruct(150) - x[50]).max() <= vi.reconstruct_tolerance
    # 3 bytes a dimension instead of 4 (the links, 264 bytes a vector, are the same).
    assert vi.memory_bytes() < build(IndexSpec("hnsw"), dim, ids, x).memory_bytes()


def test_quantised_hnsw_trains_only_on_enough_vectors():
    vi = VectorIndex(16, SQ8)
    x = clustered(SQ8_MIN, 16, 9)
    with pytest.raises(ValueError, match="at least"):
        vi.add(np.arange(10), x[:10])
    vi.add(np.arange(SQ8_MIN), x)
    assert vi.is_trained and vi.search(x[:5], 1)[1].ravel().tolist() == [0, 1, 2, 3, 4]


def test_ivfpq_recall_against_exact():
    dim, n = 32, 12_000
    x, q = clustered(n, dim, 2), clustered(200, dim, 3)
    ids = np.arange(n)
    vi = build(IndexSpec("ivfpq", nlist=64, nprobe=16, pq_m=16), dim, ids, x)
    got = vi.search(q, 10)[1]
    # 16 bytes per vector instead of 128: lossy, but it must still find most true neighbours.
    assert recall_at(got, exact_top(q, x, ids, 10)) >= 0.6
    assert vi.memory_bytes() < 0.5 * build(IndexSpec("flat"), dim, ids, x).memory_bytes()


@pytest.mark.parametrize("kind", ["hnsw", "hnsw-sq8", "ivfpq"])
def test_removed_and_replaced_vectors_never_come_back(kind):
    dim, n = 32, 4000
    x = clustered(n, dim, 4)
    spec = {
        "hnsw": IndexSpec("hnsw"),
        "hnsw-sq8": SQ8,
        "ivfpq": IndexSpec("ivfpq", nlist=16, nprobe=16, pq_m=8),
    }[kind]
    vi = build(spec, dim, np.arange(n), x)
    vi.remove(np.arange(0, n, 2))
    assert len(vi) == n // 2 and vi.dead == n // 2
    # Replacing a live id moves it: its old vector is dead, its new one is found.
    vi.add(np.array([1]), x[2:3])
    assert len(vi) == n // 2 and vi.dead == n // 2 + 1
    got = vi.search(x[:50], 10)[1]
    assert (got >= 0).all() and (got % 2 == 1).all()  # no removed id, no padding
    assert all(len(set(row)) == len(row) for row in got.tolist())
    assert got[2, 0] == 1  # x[2] now lives under id 1
    assert np.allclose(vi.reconstruct(1), x[2], atol=0.3 if kind == "ivfpq" else 1e-3)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 30), st.integers(0, 10**6)), max_size=60))
def test_hnsw_add_remove_sequences_agree_with_a_dict_model(ops):
    vi, model = VectorIndex(8, "hnsw"), {}
    for is_add, row_id, seed in ops:
        if is_add:
            v = clustered(1, 8, seed, spread=1.0)
            vi.add(np.array([row_id]), v)
            model[row_id] = v[0]
        else:
            vi.remove(np.array([row_id]))
            model.pop(row_id, None)
    assert len(vi) == len(model)
    if model:
        q = clustered(1, 8, 123)
        scores, ids = vi.search(q, len(model))
        assert set(ids[0].tolist()) == set(model)  # a tiny graph is searched exhaustively
        want = sorted((float(model[i] @ q[0]) for i in model), reverse=True)
        assert np.allclose(scores[0], want, atol=1e-5)


@pytest.mark.parametrize("codec", ["flat", "sq8"])
def test_save_load_keeps_spec_and_tombstones(tmp_path, codec):
    dim, n = 16, 1500
    x = clustered(n, dim, 5)
    spec = IndexSpec("hnsw", ef_search=50, codec=codec, refine=4 if codec == "sq8" else 0)
    vi = build(spec, dim, np.arange(n), x, seq=9)
    vi.remove(np.arange(10))
    vi.save(tmp_path)
    back = VectorIndex.load(tmp_path, dim)
    assert (back.kind, back.spec.ef_search, back.seq, back.spec.codec) == ("hnsw", 50, 9, codec)
    assert (len(back), back.dead) == (n - 10, 10)
    got = back.search(x[:20], 5)[1]
    assert (got >= 0).all() and not set(got.ravel().tolist()) & set(range(10))


# -- rebuilds from the catalog, and `vtsearch optimize` -----------------------------------------


def make_collection(folder, n: int, dim: int = 16) -> tuple[Catalog, np.ndarray]:
    cat = Catalog.open(folder)
    cat.bind_model("synthetic", dim)
    x = clustered(n, dim, 6)
    for i in range(0, n, 250):
        cat.write_batch(
            [
                NewImage(f"/p/{j}.jpg", 1, 1, f"{j:064x}", vector=x[j])
                for j in range(i, min(i + 250, n))
            ]
        )
    vi = VectorIndex(dim)
    vi.sync(cat)
    vi.save(folder)
    return cat, x


def test_rebuild_streams_the_catalog_into_the_chosen_kind(tmp_path):
    cat, _ = make_collection(tmp_path, 1200)
    flat = VectorIndex.load(tmp_path, 16)
    flat.sync(cat)
    hnsw = rebuild(cat, 16, IndexSpec("hnsw"))
    assert (hnsw.kind, len(hnsw), hnsw.seq, hnsw.spec.built_for) == ("hnsw", 1200, flat.seq, 1200)
    q = clustered(100, 16, 7)
    assert recall_at(hnsw.search(q, 10)[1], flat.search(q, 10)[1]) >= 0.95
    assert needs_rebuild(hnsw, 1200) is not None  # 1,200 vectors: flat is the right kind
    assert needs_rebuild(flat, 1200) is None
    # A graph over float vectors, from before codecs, is rebuilt over 8-bit codes once large.
    assert "sq8" in needs_rebuild(hnsw, FLAT_MAX + 1, memory_bytes=256 << 30)
    # Asked for a quantised graph over too few vectors to learn its ranges: float vectors.
    assert rebuild(cat, 16, SQ8).spec.codec == "sq8"
    cat.remove(list(range(1, 1200 - SQ8_MIN + 2)))
    assert rebuild(cat, 16, SQ8).spec.codec == "flat"


def run_cli(*args):
    from vtsearch.cli import main

    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_optimize_help_has_an_example():
    r = run_cli("optimize", "--help")
    assert r.exit_code == 0 and "Example:" in r.output and "vtsearch optimize" in r.output


def test_optimize_rebuilds_records_the_kind_and_keeps_answering(tmp_path):
    cat, x = make_collection(tmp_path, 800)
    q = clustered(30, 16, 8)
    before = VectorIndex.load(tmp_path, 16).search(q, 5)[1]

    r = run_cli("--db", tmp_path, "optimize", "--dry-run")
    assert r.exit_code == 0 and "already right" in r.output
    r = run_cli("--db", tmp_path, "optimize", "--kind", "hnsw")
    assert r.exit_code == 0 and "rebuilt flat -> hnsw" in r.output, r.output
    assert cat.get_meta("index_kind") == "hnsw"
    assert json.loads(cat.get_meta("index_params"))["m"] == 32
    loaded = VectorIndex.load(tmp_path, 16)
    assert loaded.kind == "hnsw" and recall_at(loaded.search(q, 5)[1], before) >= 0.95

    # The collection keeps changing after the rebuild: the HNSW index follows the catalog.
    cat.remove([1, 2, 3])
    loaded.sync(cat)
    assert len(loaded) == 797 and not {1, 2, 3} & set(loaded.search(x[:3], 5)[1].ravel().tolist())

    # Back to the kind its size calls for.
    r = run_cli("--db", tmp_path, "optimize")
    assert r.exit_code == 0 and "rebuilt hnsw -> flat" in r.output, r.output
    assert cat.get_meta("index_kind") == "flat" and len(VectorIndex.load(tmp_path, 16)) == 797


def test_optimize_library_call_on_an_engine_collection(tmp_path, photos, tiny_clip):
    from vtsearch import Engine

    eng = Engine(tmp_path / "coll", model=tiny_clip)
    eng.index(photos, workers=0)
    want = [h.path for h in eng.search(image=photos / "img0.png", k=3)]
    eng.close()
    cat = Catalog.open(tmp_path / "coll")
    reports = optimize(tmp_path / "coll", cat, kind="hnsw")
    assert [r.rebuilt for r in reports] == [True] and reports[0].count == 7
    cat.close()
    fresh = Engine(tmp_path / "coll")
    assert [h.path for h in fresh.search(image=photos / "img0.png", k=3)] == want
    # Indexing more photos adds to the HNSW index.
    from conftest import make_photo

    make_photo(photos / "extra.png", seed=77)
    assert fresh.index(photos, workers=0).embedded == 1
    assert fresh.search(image=photos / "extra.png", k=1)[0].path.endswith("extra.png")
    assert fresh.status().index_kind == "hnsw"


def test_a_meta_file_of_another_kind_is_corrected_by_the_index_file(tmp_path):
    dim, n = 16, 1500
    x = clustered(n, dim, 10)
    build(SQ8, dim, np.arange(n), x, seq=3).save(tmp_path)
    meta = json.loads((tmp_path / "vectors.json").read_text())
    # What a crash between save()'s two renames leaves: the new file, the old meta.
    meta["spec"] = json.loads(IndexSpec("hnsw", ef_search=80).to_json())
    (tmp_path / "vectors.json").write_text(json.dumps(meta))
    back = VectorIndex.load(tmp_path, dim)
    assert (back.spec.codec, back.spec.ef_search, back.spec.m) == ("sq8", 80, 32)
    assert back.search(x[:5], 1)[1].ravel().tolist() == [0, 1, 2, 3, 4]


def test_forcing_hnsw_moves_a_float_graph_to_8_bit_codes(tmp_path):
    cat, _ = make_collection(tmp_path, 1200)
    rebuild(cat, 16, IndexSpec("hnsw")).save(tmp_path)
    (report,) = optimize(tmp_path, cat, kind="hnsw")
    assert report.rebuilt and "sq8" in report.reason and report.after.codec == "sq8"
    (again,) = optimize(tmp_path, cat, kind="hnsw")
    assert again.reason is None
    cat.close()


def test_a_quantised_graph_of_a_collection_passes_its_check(tmp_path):
    from vtsearch.storage.check import check_collection

    cat, x = make_collection(tmp_path, 1200)
    (report,) = optimize(tmp_path, cat, kind="hnsw")
    assert report.rebuilt and report.after.codec == "sq8"
    # Its float16 copies differ from the catalog's vectors by rounding only: not damage.
    assert check_collection(tmp_path, cat).ok
    # A vector that really differs is still found.
    loaded = VectorIndex.load(tmp_path, 16)
    loaded.sync(cat)
    loaded.add(np.array([5]), x[6:7])
    loaded.save(tmp_path)
    found = check_collection(tmp_path, cat)
    assert not found.ok and 5 in found.problems[0].ids
    cat.close()
