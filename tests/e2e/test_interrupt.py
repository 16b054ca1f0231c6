"""Ctrl-C stops an indexing run after the current batch; the next run resumes."""

import os
import signal
import sqlite3
import subprocess
import sys
import time

from conftest import make_photo


def _indexed(db):
    try:
        with sqlite3.connect(db / "catalog.db") as con:
            return con.execute("select count(*) from images where status='indexed'").fetchone()[0]
    except sqlite3.Error:
        return 0


def test_sigint_stops_after_a_batch_and_the_next_run_resumes(tmp_path, tiny_clip):
    photos = tmp_path / "photos"
    for i in range(400):
        make_photo(photos / f"p{i:03d}.png", seed=i, size=(256, 256))
    db = tmp_path / "coll"
    cmd = [
        sys.executable,
        "-m",
        "vtsearch.cli",
        "--db",
        str(db),
        "--model",
        tiny_clip,
        "index",
        str(photos),
        "--batch-size",
        "8",
        "--workers",
        "2",
    ]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        start_new_session=True,
    )
    deadline = time.time() + 120
    while _indexed(db) < 16 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    # Like a terminal's Ctrl-C: the signal goes to the whole process group, workers included.
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Interrupted" in err and "Traceback" not in err
    first = _indexed(db)
    assert 16 <= first < 400

    done = subprocess.run(
        cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"}
    )
    assert done.returncode == 0, done.stderr
    assert f"{400 - first} embedded, {first} unchanged" in done.stdout
    assert _indexed(db) == 400


def _bytes_read(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/io") as f:
            return int(next(line for line in f if line.startswith("rchar:")).split()[1])
    except (OSError, StopIteration):
        return 0


def test_sigint_while_reading_new_files_stops_at_once(tmp_path, tiny_clip):
    """Before any embedding, a run reads every new file in full for its content hash: a long,
    silent stretch on a network drive. Ctrl-C stops it there too, and nothing is written."""
    if not os.path.exists(f"/proc/{os.getpid()}/io"):
        import pytest

        pytest.skip("needs /proc/PID/io to see the run reading")
    photos = tmp_path / "photos"
    make_photo(photos / "a.png", seed=1)
    with open(photos / "huge.jpg", "wb") as f:  # sparse: 40 GiB to read, no disk used
        f.truncate(40 << 30)
    db = tmp_path / "coll"
    cmd = [sys.executable, "-m", "vtsearch.cli", "--db", str(db), "--model", tiny_clip]
    proc = subprocess.Popen(
        [*cmd, "index", str(photos), "--max-size-mb", "100000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        start_new_session=True,
    )
    try:
        start = _bytes_read(proc.pid)
        deadline = time.time() + 60
        while _bytes_read(proc.pid) - start < (2 << 30) and time.time() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=10)  # reading the rest would take far longer
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, err
    assert "Interrupted" in err and "Traceback" not in err
    assert _indexed(db) == 0
