"""Queries while an indexer runs never fail and never see half-written state; a second indexer is
refused with a clear message; the lock of a dead process does not block."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner
from conftest import make_photo, save_random_scorer

from vtsearch import Engine
from vtsearch.cli import main
from vtsearch.errors import IndexLockedError

# A commit per batch: the runs are short, and each batch is a point to be interrupted at.
ENV = {
    **os.environ,
    "HF_HUB_OFFLINE": "1",
    "VTSEARCH_CHECKPOINT_SECONDS": "0",
    "VTSEARCH_COMMIT_IMAGES": "1",
}


def indexed(db) -> int:
    try:
        with sqlite3.connect(db / "catalog.db", timeout=30) as con:
            return con.execute("select count(*) from images where status='indexed'").fetchone()[0]
    except sqlite3.Error:
        return 0


@pytest.fixture(scope="module")
def scorer_path(tmp_path_factory):
    return save_random_scorer(tmp_path_factory.mktemp("fusion"), rerank_k=6)


def test_queries_during_indexing_never_fail_nor_see_half_written_state(tmp_path, lite, scorer_path):
    photos = tmp_path / "photos"
    n = 30
    for i in range(n):
        make_photo(photos / f"p{i:02d}.png", seed=i)
    corpus = {str(p) for p in photos.iterdir()}
    db = tmp_path / "coll"
    base = [sys.executable, "-m", "vtsearch.cli", "--db", str(db), "--reranker", scorer_path]
    indexer = subprocess.Popen(
        [*base, "index", str(photos), "--batch-size", "2", "--workers", "0"],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 120
        while indexed(db) == 0 and time.time() < deadline and indexer.poll() is None:
            time.sleep(0.05)
        assert indexer.poll() is None, "the indexer finished before any query could run"

        # A second indexer is refused at once, with the reason; status works meanwhile.
        second = CliRunner().invoke(main, ["--db", str(db), "index", str(photos)])
        assert second.exit_code == 5, second.output
        assert "another vtsearch process is writing to" in second.output
        with pytest.raises(IndexLockedError):
            Engine(db, embedder=lite).index(photos)
        status = CliRunner().invoke(main, ["--db", str(db), "status"])
        assert status.exit_code == 0, status.output
        cli_query = subprocess.Popen(
            [*base, "query", "a photo", "-n", "3", "--json"],
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

        engine = Engine(db, embedder=lite, reranker=scorer_path)
        seen, queries, during = [], 0, 0
        while indexer.poll() is None or queries < 3:
            # A long-lived engine catches up from the catalog; a fresh one loads the saved file.
            eng = engine if queries % 3 else Engine(db, embedder=lite, reranker=scorer_path)
            for text, image, k in (("a colourful photo", None, 5), (None, photos / "p00.png", 3)):
                hits = eng.search(text=text, image=image, k=k, rerank=text is not None)
                visible = len(eng._parts._vindex)  # what this search's snapshot of the catalog held
                paths = [h.path for h in hits]
                assert set(paths) <= corpus and len(set(paths)) == len(paths)
                assert len(hits) == min(k, visible)
                assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
                # Rows only ever get added here: the catalog has at least what the reader saw.
                assert visible <= indexed(db) <= n
                seen.append(visible)
            queries += 1
            during += indexer.poll() is None
            time.sleep(0.1)  # leave the indexer some of the two cores
        _, err = indexer.communicate(timeout=300)
        assert indexer.returncode == 0, err
        q_out, q_err = cli_query.communicate(timeout=300)
        assert cli_query.returncode == 0, q_err
        assert len(q_out.strip().splitlines()) <= 3 and "Traceback" not in q_err
    finally:
        for p in (indexer,):
            if p.poll() is None:
                p.kill()
    assert during >= 3, f"only {during} queries ran while indexing"
    assert len(set(seen)) >= 2, "the queries never saw the collection grow"
    assert Engine(db, embedder=lite, reranker=scorer_path).check().ok
    final = Engine(db, embedder=lite, reranker=scorer_path).search(text="a photo", k=n)
    assert {h.path for h in final} == corpus


HOLDER = """
import sys, time
from vtsearch import Engine
lock = Engine(sys.argv[1])._parts.write_lock()
lock.__enter__()
print("locked", flush=True)
time.sleep(600)
"""


def test_a_second_writer_is_refused_and_a_killed_holder_leaves_no_stale_lock(
    tmp_path, photos, tiny_clip
):
    db = tmp_path / "coll"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(db)], stdout=subprocess.PIPE, text=True, env=ENV
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        eng = Engine(db, model=tiny_clip)
        with pytest.raises(
            IndexLockedError, match=r"another vtsearch process is writing to .*wait"
        ):
            eng.index(photos, workers=0)
        r = CliRunner().invoke(main, ["--db", str(db), "--model", tiny_clip, "index", str(photos)])
        assert r.exit_code == 5 and "Error: another vtsearch process is writing" in r.output
        # The holder dies without releasing anything: the OS drops its lock with it.
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=30)
    finally:
        if holder.poll() is None:
            holder.kill()
    assert (db / "index.lock").exists()  # the file stays; only a live holder's lock counts
    report = eng.index(photos, workers=0)
    assert report.embedded == 7 and eng.check().ok
