"""Indexing on a local Ray cluster (``ray.init(num_cpus=2)``): Ray Data actors decode and embed,
this process commits. The collection equals a local run's, vector for vector (ids aside), and a
worker killed mid-run costs nothing committed: Ray retries or the run stops, and the next run
embeds only the rest."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest
from conftest import make_photo, ray_cluster

from vtsearch import Engine
from vtsearch.errors import RayError
from vtsearch.storage.catalog import Catalog

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def cluster():
    yield from ray_cluster()


@pytest.fixture
def many_photos(tmp_path):
    folder = tmp_path / "many"
    (folder / "sub").mkdir(parents=True)
    for i in range(36):
        make_photo(folder / ("sub" if i % 3 == 0 else "") / f"p{i:02d}.png", seed=100 + i)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return folder


def rows_by_path(folder) -> dict[str, tuple]:
    cat = Catalog.open(folder)
    try:
        rows = cat.rows(r.id for r in cat.records().values())
        return {
            r.path: (
                r.status,
                r.error,
                r.width,
                r.height,
                r.format,
                r.taken_at,
                r.sha256,
                np.frombuffer(r.vector, np.float32) if r.vector else None,
            )
            for r in rows.values()
        }
    finally:
        cat.close()


def assert_same_collection(a, b) -> None:
    ra, rb = rows_by_path(a), rows_by_path(b)
    assert sorted(ra) == sorted(rb)
    for path, row in ra.items():
        other = rb[path]
        assert row[:7] == other[:7], path
        if row[7] is None:
            assert other[7] is None
        else:
            np.testing.assert_allclose(row[7], other[7], atol=1e-5, err_msg=path)


def test_ray_run_equals_the_local_run(cluster, tmp_path, many_photos, tiny_clip):
    here = Engine(tmp_path / "here", model=tiny_clip)
    local = here.index(many_photos, batch_size=4, workers=0)
    on_ray = Engine(tmp_path / "ray", model=tiny_clip)
    # The cluster's files come from a manifest (as on shared storage), not a walk.
    manifest = tmp_path / "files.txt"
    manifest.write_text("\n".join(str(p) for p in sorted(many_photos.rglob("*.*"))) + "\n")
    remote = on_ray.index(manifest=manifest, batch_size=4, ray="auto")
    assert (remote.embedded, len(remote.failed)) == (local.embedded, len(local.failed)) == (36, 1)
    assert_same_collection(tmp_path / "here", tmp_path / "ray")
    hits = on_ray.search(image=many_photos / "p05.png", k=1)
    assert hits[0].path.endswith("p05.png") and hits[0].score == pytest.approx(1.0, abs=1e-4)
    # A second run on the cluster has nothing to embed.
    assert on_ray.index(many_photos, ray="auto").embedded == 0


def _actor_pids() -> list[int]:
    """Processes of the embedding actors: Ray names a worker's process after its actor."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if b"ray::" in cmdline and b"EmbedActor" in cmdline:
            pids.append(int(entry))
    return pids


def test_a_worker_killed_mid_run_loses_nothing_committed(
    cluster, tmp_path, many_photos, tiny_clip, monkeypatch
):
    monkeypatch.setenv("VTSEARCH_COMMIT_IMAGES", "4")
    Engine(tmp_path / "here", model=tiny_clip).index(many_photos, batch_size=2, workers=0)
    eng = Engine(tmp_path / "ray", model=tiny_clip)
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["report"] = eng.index(many_photos, batch_size=2, ray="auto")
        except RayError as e:
            outcome["error"] = e

    earlier = set(_actor_pids())  # actors of an earlier run may still be winding down
    worker = threading.Thread(target=run)
    worker.start()
    killed = None
    deadline = time.time() + 120
    while killed is None and worker.is_alive() and time.time() < deadline:
        pids = [p for p in _actor_pids() if p not in earlier]
        committed = 0
        if pids and (tmp_path / "ray" / "catalog.db").exists():
            cat = Catalog.open(tmp_path / "ray", readonly=True)
            committed = sum(cat.counts().values())
            cat.close()
        if pids and committed >= 4:
            os.kill(pids[0], signal.SIGKILL)
            killed = (pids[0], committed)
        time.sleep(0.05)
    worker.join(timeout=300)
    assert killed is not None, "the run ended before a worker could be killed mid-run"
    assert killed[1] < 37, "the worker was killed after the run had committed everything"
    # Ray restarted the worker and retried its batch, or the run stopped with a typed error;
    # either way the next run embeds exactly what is not committed yet.
    done = Catalog.open(tmp_path / "ray", readonly=True).counts().get("indexed", 0)
    again = eng.index(many_photos, batch_size=2, ray="auto")
    assert again.embedded == 36 - done
    assert_same_collection(tmp_path / "here", tmp_path / "ray")
    if "report" in outcome:  # Ray's retry finished the first run: nothing was left
        assert outcome["report"].embedded == 36 and again.embedded == 0


def test_queries_search_the_shards_on_the_cluster_and_see_new_images(
    cluster, tmp_path, many_photos, tiny_clip
):
    from vtsearch.storage.index_kinds import IndexSpec
    from vtsearch.storage.shards import build_shards

    coll = tmp_path / "coll"
    here = Engine(coll, model=tiny_clip)
    here.index(many_photos, workers=0)
    query = many_photos / "p07.png"
    expected = [(h.path, round(h.score, 5)) for h in here.search(image=query, k=10)]
    here.close()
    cat = Catalog.open(coll)
    build_shards(cat, coll, 2, IndexSpec("flat"))
    cat.close()

    sharded = Engine(coll, ray="auto")
    assert type(sharded._parts.vectors()).__name__ == "ShardedIndex"
    assert [(h.path, round(h.score, 5)) for h in sharded.search(image=query, k=10)] == expected
    # A new photo indexed through the sharded engine reaches its shard (id % 2) at once.
    make_photo(many_photos / "new.png", seed=999)
    assert sharded.index(many_photos, workers=0).embedded == 1
    top = sharded.search(image=many_photos / "new.png", k=1)[0]
    assert top.path.endswith("new.png") and top.score == pytest.approx(1.0, abs=1e-4)
    sharded.close()


def test_duplicates_use_the_local_index_while_queries_use_the_shards(
    cluster, tmp_path, many_photos, tiny_clip
):
    from vtsearch.storage.index_kinds import IndexSpec
    from vtsearch.storage.shards import build_shards

    coll = tmp_path / "coll"
    (many_photos / "copy.png").write_bytes((many_photos / "p01.png").read_bytes())
    Engine(coll, model=tiny_clip).index(many_photos, workers=0)
    cat = Catalog.open(coll)
    build_shards(cat, coll, 2, IndexSpec("flat"))
    cat.close()
    for first in ("search", "dupes"):  # in either order
        eng = Engine(coll, ray="auto")
        steps = [
            lambda eng=eng: eng.search(image=many_photos / "p01.png", k=2),
            lambda eng=eng: eng.duplicates(exact_only=True),
        ]
        got = [step() for step in (steps if first == "search" else steps[::-1])]
        hits, groups = got if first == "search" else got[::-1]
        assert {h.path.rsplit("/", 1)[1] for h in hits} == {"p01.png", "copy.png"}
        assert [sorted(f.path.rsplit("/", 1)[1] for f in g.files) for g in groups] == [
            ["copy.png", "p01.png"]
        ]
        assert type(eng._parts.vectors()).__name__ == "ShardedIndex"
        eng.close()


def test_the_default_model_on_ray_writes_the_same_region_tokens(cluster, tmp_path):
    """vtsearch-lite's fusion re-ranker caches region tokens: the actors reduce them as this
    process would, a batch whose files all fail included (batches of 2, the first two bad)."""
    from vtsearch.storage.tokens import TokenCache

    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("a-bad1.jpg", "a-bad2.jpg"):
        (folder / name).write_bytes(b"\xff\xd8\xff\xe0 truncated")
    for i in range(3):
        make_photo(folder / f"b{i}.png", seed=300 + i, size=(96, 72))

    def tokens_by_path(coll) -> dict[str, np.ndarray]:
        cat = Catalog.open(coll)
        recs = {r.id: p for p, r in cat.records().items() if r.status == "indexed"}
        cat.close()
        got = TokenCache.open_existing(coll).get(np.array(sorted(recs)))
        return {recs[i]: t for i, t in zip(sorted(recs), got, strict=True)}

    Engine(tmp_path / "here").index(folder, batch_size=2, workers=0)
    Engine(tmp_path / "ray").index(folder, batch_size=2, ray="auto")
    assert_same_collection(tmp_path / "here", tmp_path / "ray")
    here, there = tokens_by_path(tmp_path / "here"), tokens_by_path(tmp_path / "ray")
    assert sorted(here) == sorted(there) and len(here) == 3
    for path, t in here.items():
        assert t is not None and there[path] is not None
        np.testing.assert_allclose(t, there[path], atol=1e-2, err_msg=path)


_DRIVER = """
import sys
from pathlib import Path
from vtsearch import Engine
Engine(Path(sys.argv[1]), model=sys.argv[3]).index(Path(sys.argv[2]), batch_size=2, ray="local")
"""


def test_a_driver_killed_mid_run_resumes_without_redoing_committed_work(
    cluster, tmp_path, many_photos, tiny_clip
):
    """The driver (with the cluster it started) dies mid-run: what it committed stays, and the
    next run, on another cluster, embeds only the rest."""
    import contextlib
    import subprocess
    import sys

    from sqlalchemy.exc import OperationalError

    coll = tmp_path / "ray"
    env = {**os.environ, "VTSEARCH_COMMIT_IMAGES": "4", "HF_HUB_OFFLINE": "1"}
    driver = subprocess.Popen(
        [sys.executable, "-c", _DRIVER, str(coll), str(many_photos), tiny_clip],
        env=env,
        start_new_session=True,  # its own group: the cluster it starts goes down with it
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    committed = 0
    try:
        deadline = time.time() + 180
        while driver.poll() is None and time.time() < deadline:
            if (coll / "catalog.db").exists():
                cat = Catalog.open(coll, readonly=True)
                with contextlib.suppress(OperationalError):  # its tables are being made
                    committed = cat.counts().get("indexed", 0)
                cat.close()
                if committed >= 4:
                    break
            time.sleep(0.05)
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
    assert 4 <= committed < 36, f"the driver was not killed mid-run ({committed} committed)"
    done = Catalog.open(coll, readonly=True).counts().get("indexed", 0)
    again = Engine(coll).index(many_photos, batch_size=2, ray="auto")
    assert again.embedded == 36 - done
    Engine(tmp_path / "here", model=tiny_clip).index(many_photos, batch_size=2, workers=0)
    assert_same_collection(tmp_path / "here", coll)
