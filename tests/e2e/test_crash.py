"""SIGKILL the real CLI indexer at 20 random points, resume each time, and check after every kill
that the catalog, the FAISS index a reader sees and the token cache agree, that nothing committed
was redone, and at the end that the collection equals the one an uninterrupted run builds."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import make_photo, save_random_scorer

from vtsearch import Engine
from vtsearch.storage.catalog import Catalog
from vtsearch.storage.check import check_collection, leftover_files
from vtsearch.storage.tokens import TokenCache
from vtsearch.storage.vectors import VectorIndex, index_ids

SEED = 20260
#: Kills over the first run, then over a second run that adds, changes and deletes files.
KILLS = (14, 6)
# Batches of 2 and a commit every 3 images or more: groups of two batches, so that kills land
# between a group's batches as well as during commits, in runs short enough to kill 20 times.
ENV = {
    **os.environ,
    "HF_HUB_OFFLINE": "1",
    "VTSEARCH_CHECKPOINT_SECONDS": "0",
    "VTSEARCH_COMMIT_IMAGES": "3",
}


@pytest.fixture(scope="module")
def scorer_path(tmp_path_factory):
    return save_random_scorer(tmp_path_factory.mktemp("fusion"), rerank_k=5)


def first_corpus(folder: Path) -> None:
    for i in range(34):
        make_photo(folder / f"p{i:02d}.png", seed=i)
    shutil.copy(folder / "p05.png", folder / "copy_of_05.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff" + b"\x00" * 100)
    (folder / "empty.png").write_bytes(b"")


def second_corpus(folder: Path) -> None:
    """Deletes, in-place changes and new files: every kind of write gets killed too."""
    for i in (1, 9, 17):
        (folder / f"p{i:02d}.png").unlink()
    for i in (2, 10, 20):
        make_photo(folder / f"p{i:02d}.png", seed=100 + i)
    for i in range(5):
        make_photo(folder / "new" / f"n{i}.png", seed=200 + i)
    (folder / "broken.jpg").unlink()
    make_photo(folder / "fixed.png", seed=300)


def seq_of(db: Path) -> int:
    try:
        with sqlite3.connect(db / "catalog.db", timeout=30) as con:
            got = con.execute("select value from meta where key='seq'").fetchone()
        return int(got[0]) if got else 0
    except sqlite3.Error:
        return 0


def state(db: Path, root: Path) -> dict[str, tuple]:
    """Path (relative to root) -> (status, error, sha256, width, height, id, vec_seq)."""
    with sqlite3.connect(db / "catalog.db", timeout=30) as con:
        rows = con.execute(
            "select path, status, error, sha256, width, height, id, vec_seq from images"
        ).fetchall()
    return {os.path.relpath(os.fsdecode(r[0]), root): tuple(r[1:]) for r in rows}


def assert_consistent(db: Path, final: bool) -> dict[int, np.ndarray]:
    """The invariants that hold whenever the indexer is not running, even right after a kill."""
    catalog = Catalog.open(db)
    try:
        dim = int(catalog.get_meta("dim") or 0)
        with sqlite3.connect(db / "catalog.db", timeout=30) as con:
            rows = con.execute("select id, path, status, vector from images").fetchall()
        paths = [r[1] for r in rows]
        assert len(paths) == len(set(paths)), "a path has two rows"
        live = {r[0]: np.frombuffer(r[3], np.float32) for r in rows if r[2] == "indexed"}
        assert all(r[3] is None for r in rows if r[2] != "indexed")
        assert all(len(v) == dim for v in live.values())
        # A reader opening the collection now: every live row one vector, nothing else.
        reader = VectorIndex.load(db, dim) if dim else None
        if reader is not None:
            reader.sync(catalog)
            ids = index_ids(reader)
            assert sorted(ids.tolist()) == sorted(live), "FAISS and catalog disagree"
            for i, v in live.items():
                assert np.allclose(reader.reconstruct(i), v, atol=1e-6)
        # Every live row has its region tokens (orphans may wait for the next run's reconcile).
        cache = TokenCache.open_existing(db)
        if live:
            assert cache is not None
            got = cache.get(np.array(sorted(live), dtype=np.int64))
            assert all(t is not None for t in got), "an indexed row lost its tokens"
        if final:
            report = check_collection(db, catalog)
            assert report.ok and report.problems == [], [str(p) for p in report.problems]
            assert set(cache.filled().tolist()) == set(live)
            assert leftover_files(db) == []
        return live
    finally:
        catalog.close()


def run_cli(db: Path, folder: Path, scorer: str, workers: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "vtsearch.cli", "--db", str(db), "--reranker", scorer, "index",
           str(folder), "--batch-size", "2", "--workers", str(workers)]  # fmt: skip
    return subprocess.Popen(
        cmd,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


@pytest.mark.slow
def test_sigkill_at_20_random_points_then_resume(tmp_path, scorer_path, lite):
    rng = np.random.default_rng(SEED)
    folder, ref_folder = tmp_path / "photos", tmp_path / "ref-photos"
    db, ref_db = tmp_path / "coll", tmp_path / "ref-coll"
    first_corpus(folder)
    first_corpus(ref_folder)
    kills, log = 0, []
    for phase, n_kills in enumerate(KILLS):
        if phase == 1:
            second_corpus(folder)
            second_corpus(ref_folder)
        before = state(db, folder) if db.exists() else {}
        for _ in range(n_kills):
            committed = state(db, folder) if db.exists() else {}
            proc = run_cli(db, folder, scorer_path, workers=int(rng.integers(0, 2)))
            start_seq, t0 = seq_of(db), time.time()
            if rng.random() < 0.3:  # anywhere: loading the model, scanning, writing
                deadline = t0 + rng.uniform(0.5, 12.0)
                while time.time() < deadline and proc.poll() is None:
                    time.sleep(0.01)
            else:  # after one more committed batch, part way into the next one
                target = start_seq + 1
                while seq_of(db) < target and proc.poll() is None and time.time() < t0 + 120:
                    time.sleep(0.005)
                time.sleep(rng.uniform(0.0, 0.6))
            if proc.poll() is None:
                # Half the time only the main process, as the OOM killer would; else the group.
                if rng.random() < 0.5:
                    os.kill(proc.pid, signal.SIGKILL)
                else:
                    os.killpg(proc.pid, signal.SIGKILL)
                kills += 1
                log.append(f"phase {phase}: killed after {time.time() - t0:.1f}s")
            proc.communicate(timeout=120)
            assert proc.returncode in (0, -signal.SIGKILL), proc.returncode
            if db.exists():
                assert_consistent(db, final=False)
                # Nothing committed before the kill was embedded again.
                now = state(db, folder)
                for path, s in committed.items():
                    if path in now and s[0] == "indexed" and now[path][2] == s[2]:
                        assert now[path][5:] == s[5:], f"{path} was redone"
        # Resume to the end: exit 0, nothing left to do afterwards.
        proc = run_cli(db, folder, scorer_path, workers=1)
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
        assert_consistent(db, final=True)
        now = state(db, folder)
        for path, s in before.items():  # the previous phase's rows kept what did not change
            if path in now and s[0] == "indexed" and now[path][2] == s[2]:
                assert now[path][5:] == s[5:], f"{path} was redone"
        # The reference: the same corpus indexed without interruption (in this process: the
        # same code as the CLI's, without paying for another model load).
        ref = Engine(ref_db, embedder=lite, reranker=scorer_path)
        assert not ref.index(ref_folder, batch_size=2, workers=0).interrupted
    assert kills >= 15, log  # a kill can find its run already finished; most must land

    # The resumed collection equals the uninterrupted one, file by file.
    got, want = state(db, folder), state(ref_db, ref_folder)
    assert {p: s[:5] for p, s in got.items()} == {p: s[:5] for p, s in want.items()}
    live, ref_live = assert_consistent(db, True), assert_consistent(ref_db, True)
    by_path = {p: s[5] for p, s in got.items()}
    ref_by_path = {p: s[5] for p, s in want.items()}
    cache, ref_cache = TokenCache.open_existing(db), TokenCache.open_existing(ref_db)
    for p, s in got.items():
        if s[0] != "indexed":
            continue
        a, b = by_path[p], ref_by_path[p]
        assert np.allclose(live[a], ref_live[b], atol=1e-4), p
        ta, tb = cache.get(np.array([a]))[0], ref_cache.get(np.array([b]))[0]
        assert np.allclose(ta, tb, atol=0.05 * np.abs(tb).max()), p
    hits = Engine(db, embedder=lite, reranker=scorer_path).search(image=folder / "p03.png", k=1)
    assert hits[0].path.endswith("p03.png")
