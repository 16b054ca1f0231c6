"""A sharded index on a local Ray cluster (2 CPUs): 2 shard actors give the top-10 of one index
over the same catalog vectors (exactly for flat, the same recall for IVF-PQ with shared trained
parts), the layout is recorded in the catalog and reopened from the files, and catalog changes
reach the shards."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import ray_cluster

ray = pytest.importorskip("ray")

from vtsearch.errors import ModelMismatchError, RayError, StorageError  # noqa: E402
from vtsearch.search.retrieve import retrieve  # noqa: E402
from vtsearch.storage import shards  # noqa: E402
from vtsearch.storage.catalog import Catalog, NewImage  # noqa: E402
from vtsearch.storage.index_kinds import IndexSpec, load_faiss  # noqa: E402
from vtsearch.storage.rebuild import iter_catalog_vectors, rebuild  # noqa: E402
from vtsearch.storage.shards import ShardedIndex, build_shards, read_layout  # noqa: E402
from vtsearch.storage.vectors import VectorIndex  # noqa: E402

DIM, K = 64, 10


def unit_vectors(n: int, seed: int, clusters: int = 50) -> np.ndarray:
    """Unit vectors around seeded cluster centres, so neighbours mean something."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(1234).standard_normal((clusters, DIM)).astype(np.float32)
    x = centres[rng.integers(0, clusters, n)] + 0.7 * rng.standard_normal((n, DIM))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def write(cat: Catalog, x: np.ndarray, prefix: str) -> np.ndarray:
    """Rows for ``x`` in the catalog; their ids, in the order of ``x``."""
    ids = []
    for start in range(0, len(x), 2000):
        out = cat.write_batch(
            [
                NewImage(f"/photos/{prefix}{i:06d}.jpg", 1, 1, f"{prefix}{i:060x}", vector=x[i])
                for i in range(start, min(start + 2000, len(x)))
            ]
        )
        ids += [i for i, _ in out]
    return np.array(ids, dtype=np.int64)


def make_catalog(folder: Path, n: int, seed: int) -> tuple[Catalog, np.ndarray, np.ndarray]:
    cat = Catalog.open(folder)
    cat.bind_model("synthetic", DIM)
    x = unit_vectors(n, seed)
    return cat, x, write(cat, x, "p")


def queries(x: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Stored vectors, nudged: each query's neighbours are near it, not itself exactly."""
    rng = np.random.default_rng(seed)
    q = x[rng.choice(len(x), n, replace=False)] + 0.2 * rng.standard_normal((n, DIM))
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


def recall(got: np.ndarray, truth: np.ndarray) -> float:
    return float(
        np.mean([len(set(g[:K]) & set(t[:K])) / K for g, t in zip(got, truth, strict=True)])
    )


@pytest.fixture(scope="module", autouse=True)
def cluster():
    yield from ray_cluster()


@pytest.fixture(scope="module")
def flat_collection(tmp_path_factory):
    """3,000 vectors sharded exactly (flat) over 2 actors, and one flat index of the same."""
    folder = tmp_path_factory.mktemp("flat-shards")
    cat, x, ids = make_catalog(folder, 3000, 0)
    layout = build_shards(cat, folder, 2, IndexSpec("flat"))
    index = ShardedIndex.open(folder, cat)
    yield SimpleNamespace(folder=folder, cat=cat, x=x, ids=ids, layout=layout, sharded=index)
    index.close()


def test_flat_shards_give_the_one_index_top10(flat_collection):
    f = flat_collection
    cat, sharded = f.cat, f.sharded
    one = rebuild(cat, DIM, IndexSpec("flat"))
    q = queries(f.x, 50, 1)
    s1, i1 = one.search(q, K)
    s2, i2 = sharded.search(q, K)
    assert len(sharded) == len(one) == 3000 and sharded.kind == "flat"
    np.testing.assert_array_equal(i2, i1)
    np.testing.assert_allclose(s2, s1, atol=1e-5)
    # Each actor holds only its own ids (id % 2).
    counts = ray.get([a.count.remote() for a in sharded.actors])
    assert counts == [int(np.sum(f.ids % 2 == s)) for s in range(2)]
    # A filtered search: each shard searches its own members, the merge is exact again.
    among = np.sort(np.random.default_rng(2).choice(f.ids, 300, replace=False))
    np.testing.assert_array_equal(sharded.search(q, K, ids=among)[1], one.search(q, K, among)[1])


def test_layout_recorded_and_reopened_from_the_files(flat_collection):
    f = flat_collection
    cat, sharded = f.cat, f.sharded
    stored = read_layout(cat)
    assert stored == f.layout
    assert json.loads(cat.get_meta("shard_layout"))["n_shards"] == 2
    assert (stored.n_shards, stored.dim, stored.spec.kind, stored.built_for) == (
        2,
        DIM,
        "flat",
        3000,
    )
    assert stored.seq == cat.current_seq() and stored.rule == "id % n_shards"
    for name in stored.files:
        assert (f.folder / "shards" / f"{name}.faiss").exists()
    q = queries(f.x, 20, 3)
    before = sharded.search(q, K)
    # What the query path opens: the running actors, found by name (and left running).
    attached = shards.open_if_sharded(f.folder, cat)
    assert attached is not None and not attached._owned
    np.testing.assert_array_equal(attached.search(q, K)[1], before[1])
    attached.close()
    assert sharded.count() == 3000
    fresh = build_and_restart(f.folder, cat)
    try:
        after = fresh.search(q, K)
        np.testing.assert_array_equal(after[1], before[1])
    finally:
        fresh.close()


def build_and_restart(folder: Path, cat: Catalog) -> ShardedIndex:
    """Actors started anew from the saved files (another namespace: the module's actors live)."""
    return ShardedIndex.open(folder, cat, namespace="restart")


def test_sync_adds_and_removes(flat_collection):
    f = flat_collection
    cat, sharded = f.cat, f.sharded
    q = queries(f.x, 10, 4)
    # Planted vectors: exact copies of the queries, which must come first after a sync.
    new_ids = write(cat, q, "new")
    gone = sharded.search(q, K)[1][:, 0]
    cat.remove([int(i) for i in gone])
    sharded.sync(cat)
    assert len(sharded) == 3000 + 10 - len(set(gone.tolist()))
    s, got = sharded.search(q, K)
    np.testing.assert_array_equal(got[:, 0], new_ids)
    np.testing.assert_allclose(s[:, 0], 1.0, atol=1e-5)
    assert not np.isin(got, gone).any()
    one = rebuild(cat, DIM, IndexSpec("flat"))
    np.testing.assert_array_equal(got, one.search(q, K)[1])
    # Saved shards remember the sync: restarted actors need not replay it.
    sharded.save()
    fresh = ShardedIndex.open(f.folder, cat, namespace="after-sync")
    try:
        assert (fresh.seq, fresh.mark) == cat.head()
        np.testing.assert_array_equal(fresh.search(q, K)[1], got)
    finally:
        fresh.close()


def test_ivfpq_shards_match_one_index_recall(tmp_path):
    """20,000 vectors: one IVF-PQ index and 2 shards cloned from the same trained parts."""
    cat, x, ids = make_catalog(tmp_path, 20_000, 5)
    spec = IndexSpec("ivfpq", nlist=128, nprobe=16, pq_m=16)
    trained, n_trained = shards.train_template(cat, DIM, spec)
    assert n_trained == 20_000
    one = VectorIndex(DIM, spec, load_faiss().clone_index(trained.index))
    _, _, batches = iter_catalog_vectors(cat)
    for chunk_ids, vecs in batches:
        one.index.add_with_ids(vecs, chunk_ids)
    layout = build_shards(cat, tmp_path, 2, trained=trained)
    assert (layout.nlist, layout.pq_m, layout.nprobe) == (128, 16, 16)
    sharded = ShardedIndex.open(tmp_path, cat)
    try:
        assert len(sharded) == 20_000 and sharded.kind == "ivfpq"
        q = queries(x, 50, 6)
        truth = ids[np.argsort(-(q @ x.T), axis=1)[:, :K]]
        r_one = recall(one.search(q, K)[1], truth)
        r_sharded = recall(sharded.search(q, K)[1], truth)
        assert abs(r_sharded - r_one) <= 0.01
        # The query path re-scores the merged candidates exactly, as for the one index.
        for row in range(10):
            a = [r.id for r in retrieve(q[row], sharded, cat, K)]
            b = [r.id for r in retrieve(q[row], one, cat, K)]
            assert a == b
        rescored = [[r.id for r in retrieve(v, sharded, cat, K)] for v in q]
        assert recall(np.array(rescored), truth) > r_sharded
    finally:
        sharded.close()


def test_errors_name_the_fix(flat_collection, tmp_path, monkeypatch):
    f = flat_collection
    cat = f.cat
    empty = Catalog.open(tmp_path / "none")
    empty.bind_model("synthetic", DIM)
    with pytest.raises(StorageError, match="no shard layout"):
        ShardedIndex.open(tmp_path / "none", empty)
    assert shards.open_if_sharded(tmp_path / "none", empty) is None
    # A layout whose shard file is gone.
    other = Catalog.open(tmp_path)
    other.bind_model("synthetic", DIM)
    other.set_meta("shard_layout", f.layout.to_json())
    with pytest.raises(StorageError, match="missing"):
        ShardedIndex.open(tmp_path, other)
    # A layout of another dimension than the catalog's.
    wrong = Catalog.open(tmp_path / "wide")
    wrong.bind_model("synthetic", DIM * 2)
    wrong.set_meta("shard_layout", f.layout.to_json())
    with pytest.raises(ModelMismatchError, match="rebuild the shards"):
        ShardedIndex.open(f.folder, wrong)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    with pytest.raises(RayError, match=r"ray\.init"):
        ShardedIndex.open(f.folder, cat)
    assert shards.open_if_sharded(f.folder, cat) is None  # no cluster: the local index serves


def test_cli_builds_and_shows_the_layout(tmp_path):
    from click.testing import CliRunner

    from vtsearch.cli.main import main

    make_catalog(tmp_path, 500, 8)

    def run(*args: str):
        return CliRunner().invoke(main, ["--db", str(tmp_path), "shards", *args])

    r = run("show")
    assert r.exit_code == 0 and "not sharded" in r.output
    r = run("build", "--shards", "3")
    assert r.exit_code == 0, r.output
    assert "3 shards of 500 64-d vectors (flat)" in r.output
    r = run("show", "--json")
    files = json.loads(r.output)["files"]
    assert [f.split("-", 2)[2] for f in files] == ["00of03", "01of03", "02of03"]
    assert sorted(p.name for p in (tmp_path / "shards").glob("*.faiss")) == [
        f"{f}.faiss" for f in files
    ]
    # A second build writes files of its own and removes the first build's.
    r = run("build", "--shards", "2")
    assert r.exit_code == 0, r.output
    again = json.loads(run("show", "--json").output)["files"]
    assert not set(again) & set(files)
    assert sorted(p.name for p in (tmp_path / "shards").glob("*.faiss")) == [
        f"{f}.faiss" for f in again
    ]
