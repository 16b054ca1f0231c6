"""`vtsearch index --watch`: file events become debounced index runs, a periodic rescan catches
what the events missed, and stopping at any moment leaves a consistent collection."""

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import pytest
from conftest import make_photo

from vtsearch import Engine

#: How long a change may take to reach the catalog.
DEADLINE = 10.0


def _rows(db) -> dict[str, str]:
    """Indexed rows, ``{path: sha256}``, read as another process would."""
    try:
        with sqlite3.connect(db / "catalog.db") as con:
            got = con.execute("select path, sha256 from images where status='indexed'")
            return {p: h for p, h in got}
    except sqlite3.Error:
        return {}


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Watcher:
    """``Engine.watch`` in a thread, its runs recorded."""

    def __init__(self, eng: Engine, folder, **options) -> None:
        self.runs: list = []
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.report = None

        def target() -> None:
            try:
                self.report = eng.watch(
                    folder,
                    on_run=self.runs.append,
                    should_stop=self.stop.is_set,
                    workers=0,
                    **options,
                )
            except BaseException as e:
                self.error = e

        self.thread = threading.Thread(target=target, daemon=True)
        self.thread.start()

    def wait_for(self, condition, what: str) -> float:
        """Seconds until ``condition()`` held; fails after ``DEADLINE``."""
        t0 = time.monotonic()
        while not condition():
            if self.error is not None:
                raise self.error
            assert time.monotonic() - t0 < DEADLINE, f"not within {DEADLINE} s: {what}"
            time.sleep(0.05)
        return time.monotonic() - t0

    def of(self, reason: str) -> list:
        return [r for r in self.runs if r.reason == reason]

    def __enter__(self) -> "Watcher":
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(30)
        assert not self.thread.is_alive(), "the watch did not stop"
        if self.error is not None and exc[0] is None:
            raise self.error


def test_added_modified_and_deleted_files_are_indexed_within_seconds(tmp_path, photos, tiny_clip):
    db = tmp_path / "coll"
    eng = Engine(db, model=tiny_clip)
    with Watcher(eng, photos, debounce=0.3, rescan_every=3600) as w:
        w.wait_for(lambda: w.of("start"), "the first run")
        assert w.of("start")[0].report.embedded == 7
        saved = (db / "vectors.faiss").stat().st_mtime_ns

        new = make_photo(photos / "sub" / "new.png", seed=60)
        w.wait_for(lambda: str(new) in _rows(db), "an added file")
        # Another reader finds it at once, though the FAISS file is not rewritten for it.
        assert Engine(db).search(image=new, k=1)[0].path == str(new)

        changed = make_photo(photos / "img1.png", seed=61)
        w.wait_for(lambda: _rows(db).get(str(changed)) == _sha(changed), "a modified file")

        (photos / "img2.png").unlink()
        w.wait_for(lambda: str(photos / "img2.png") not in _rows(db), "a deleted file")
        w.wait_for(lambda: any(r.report.deleted for r in w.of("changes")), "its run's report")

        runs = len(w.runs)
        time.sleep(1.5)  # the runs' own reading of files never wakes the watch up again
        assert len(w.runs) == runs, w.runs[runs:]
        # Small runs leave the whole-index file alone (readers replay the catalog's changes)...
        assert (db / "vectors.faiss").stat().st_mtime_ns == saved
    # ...and it is saved once more when the watch ends.
    assert (db / "vectors.faiss").stat().st_mtime_ns > saved
    changes = w.of("changes")
    assert all(r.error is None for r in w.runs)
    assert sum(r.report.embedded for r in changes) == 2
    assert sum(r.report.deleted for r in changes) == 1
    assert 3 <= len(changes) <= 4  # one per change (a rewrite's events may straddle a run)
    assert not w.of("rescan")
    assert len(_rows(db)) == 7
    assert w.report.runs == len(w.runs)
    assert eng.check().ok


def test_a_burst_of_files_becomes_one_or_two_runs(tmp_path, photos, tiny_clip):
    db = tmp_path / "coll"
    with Watcher(Engine(db, model=tiny_clip), photos, debounce=1.0, rescan_every=3600) as w:
        w.wait_for(lambda: w.of("start"), "the first run")
        for i in range(20):
            make_photo(photos / "burst" / f"b{i:02d}.png", seed=100 + i)
        w.wait_for(lambda: len(_rows(db)) == 27, "20 new files")
        time.sleep(1.5)  # a trailing run would show up here
    changes = w.of("changes")
    assert 1 <= len(changes) <= 2, [(r.changes, r.report.embedded) for r in changes]
    assert sum(r.report.embedded for r in changes) == 20


class DeafObserver:
    """An observer that hears nothing: every event is missed (a network drive, say)."""

    def schedule(self, *args, **kwargs):
        return object()

    def unschedule(self, watch) -> None:
        pass

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def join(self, timeout=None) -> None:
        pass


def test_a_missed_event_is_caught_by_the_periodic_rescan(tmp_path, photos, tiny_clip, monkeypatch):
    monkeypatch.setattr("vtsearch.indexer.watch.Observer", DeafObserver)
    db = tmp_path / "coll"
    with Watcher(Engine(db, model=tiny_clip), photos, debounce=0.1, rescan_every=1.0) as w:
        w.wait_for(lambda: w.of("start"), "the first run")
        new = make_photo(photos / "unheard.png", seed=70)
        w.wait_for(lambda: str(new) in _rows(db), "a file no event announced")
    assert not w.of("changes")
    assert sum(r.report.embedded for r in w.of("rescan")) == 1


def test_stopping_mid_run_leaves_a_consistent_collection_and_the_next_run_completes(
    tmp_path, tiny_clip, monkeypatch
):
    monkeypatch.setenv("VTSEARCH_COMMIT_IMAGES", "8")
    folder = tmp_path / "photos"
    for i in range(120):
        make_photo(folder / f"p{i:03d}.png", seed=i, size=(128, 128))
    db = tmp_path / "coll"
    eng = Engine(db, model=tiny_clip)
    runs: list = []
    # Stop once two batches are committed: a stop request in the middle of the first run.
    report = eng.watch(
        folder,
        on_run=runs.append,
        should_stop=lambda: len(_rows(db)) >= 16,
        batch_size=8,
        workers=0,
    )
    assert [r.reason for r in runs] == ["start"] and runs[0].report.interrupted
    first = len(_rows(db))
    assert 16 <= first < 120 and report.runs == 1
    check = eng.check()
    assert check.ok, [str(p) for p in check.problems]

    runs.clear()
    eng.watch(folder, on_run=runs.append, should_stop=lambda: bool(runs), workers=0)
    done = runs[0].report
    assert not done.interrupted
    assert (done.embedded, done.unchanged) == (120 - first, first)
    assert len(_rows(db)) == 120 and eng.check().ok


def test_a_run_that_cannot_take_the_lock_is_retried(tmp_path, photos, tiny_clip):
    """Another process writing (a plain `vtsearch index`) holds the lock: the watch waits."""
    from vtsearch.storage.lock import write_lock

    db = tmp_path / "coll"
    Engine(db, model=tiny_clip).index(photos, workers=0)
    done = threading.Event()

    def hold() -> None:
        with write_lock(db):
            done.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    time.sleep(0.2)
    try:
        with Watcher(Engine(db, model=tiny_clip), photos, debounce=0.1) as w:
            w.wait_for(lambda: w.runs, "the first try")
            assert w.runs[0].report is None and "another vtsearch process" in w.runs[0].error
            done.set()
            holder.join()
            make_photo(photos / "later.png", seed=80)
            w.wait_for(lambda: len(_rows(db)) == 8, "the retried run")
    finally:
        done.set()
        holder.join()


def test_cli_watch_without_a_collection_is_one_line(tmp_path):
    from click.testing import CliRunner

    from vtsearch.cli import main

    r = CliRunner().invoke(main, ["--db", str(tmp_path / "none"), "index", "--watch"])
    assert r.exit_code == 4 and r.output.startswith("Error: no collection")
    assert len(r.output.strip().splitlines()) == 1


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_cli_prints_a_line_per_run_and_exits_0_on_a_signal(tmp_path, photos, tiny_clip, sig):
    db = tmp_path / "coll"
    cmd = [sys.executable, "-m", "vtsearch.cli", "--db", str(db), "--model", tiny_clip]
    proc = subprocess.Popen(
        [*cmd, "index", "--watch", str(photos), "--debounce", "0.2", "--workers", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        start_new_session=True,
    )
    try:
        first = proc.stdout.readline()
        assert "start: 7 files, 7 embedded (" in first, (first, proc.poll())
        make_photo(photos / "new.png", seed=90)
        (photos / "img0.png").unlink()
        second = proc.stdout.readline()
        assert "2 changed: 1 embedded, 1 deleted" in second, second
        if sig == signal.SIGINT:
            os.killpg(proc.pid, sig)  # a terminal's Ctrl-C goes to the whole group
        else:
            proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "stopped watching after 2 runs" in err
    assert len(_rows(db)) == 7
