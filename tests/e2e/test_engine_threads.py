"""One Engine shared by several threads while another process indexes into its collection: no
crash, no failed search, no row twice, and at the end the index holds each catalog vector once.
The vector index itself, synced by two threads at once, stores each vector once."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys

import numpy as np
from conftest import make_photo

from vtsearch import Engine
from vtsearch.storage.catalog import Catalog, NewImage

# A commit (and a save of the FAISS file) per batch of 2: many changes for the readers to sync.
ENV = {
    **os.environ,
    "HF_HUB_OFFLINE": "1",
    "VTSEARCH_CHECKPOINT_SECONDS": "0",
    "VTSEARCH_COMMIT_IMAGES": "1",
}

#: Four threads search one shared engine until the stop file appears, then the engine's index is
#: compared with the catalog. A crash (a double free in FAISS) is this process's return code.
SEARCHER = """
import json, sys, threading, time
from pathlib import Path
import torch
from vtsearch import Engine
from vtsearch.storage.vectors import index_ids

db, model, stop = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
threads_before = torch.get_num_threads()
eng = Engine(db, model=model)
eng.search(text="a photo", k=20, rerank=False)  # the model loads before the threads start
seen, errors, repeated, seqs, searches = set(), [], [], set(), [0]

def loop():
    deadline = time.time() + 180
    while not stop.exists() and time.time() < deadline:
        try:
            hits = eng.search(text="a photo", k=20, rerank=False)
        except Exception as e:
            errors.append(repr(e))
            return
        ids = [h.id for h in hits]
        if len(set(ids)) != len(ids) or len(ids) != 20:
            repeated.append(ids)
        seen.update(ids)
        seqs.add(eng._parts._vindex.seq)
        searches[0] += 1

threads = [threading.Thread(target=loop) for _ in range(4)]
for t in threads:
    t.start()
print("searching", flush=True)
for t in threads:
    t.join()
eng.search(text="a photo", k=20, rerank=False)  # catches up with the indexer's last commit
late = []
probe = threading.Thread(target=lambda: late.append(torch.get_num_threads()))
probe.start()
probe.join()
print(json.dumps({
    "errors": errors, "repeated": repeated, "seen": sorted(seen), "seqs": len(seqs),
    "searches": searches[0], "index_ids": index_ids(eng._parts._vindex).tolist(),
    "threads": [threads_before, torch.get_num_threads(), late[0]],
}))
"""

#: Rounds of: a batch of catalog writes, then two threads syncing one fresh index at once.
SYNCER = """
import json, sys, threading
from pathlib import Path
import numpy as np
from vtsearch.storage.vectors import index_ids
from vtsearch.storage.catalog import Catalog, NewImage
from vtsearch.storage.vectors import VectorIndex

dim, rng = 32, np.random.default_rng(0)
catalog = Catalog.open(Path(sys.argv[1]))
catalog.bind_model("test-model", dim)
for r in range(15):
    vecs = rng.standard_normal((400, dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    rows = [NewImage(f"/r{r}/{i}.png", 1, 1, f"{r}-{i}", v) for i, v in enumerate(vecs)]
    catalog.write_batch(rows)
    vindex, start, errors = VectorIndex(dim), threading.Barrier(2), []

    def sync():
        start.wait()
        try:
            vindex.sync(catalog)
        except Exception as e:
            errors.append(repr(e))

    threads = [threading.Thread(target=sync) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    live = sorted(i for i, _ in catalog.live_vectors())
    print(json.dumps({"errors": errors, "held": sorted(index_ids(vindex).tolist()),
                      "live": live, "len": len(vindex)}), flush=True)
"""


def indexed_ids(db) -> list[int]:
    with sqlite3.connect(db / "catalog.db", timeout=30) as con:
        return [r[0] for r in con.execute("select id from images where status='indexed'")]


def test_shared_engine_searched_by_threads_while_another_process_indexes(tmp_path, tiny_clip):
    first, more, db = tmp_path / "first", tmp_path / "more", tmp_path / "coll"
    for i in range(8):
        make_photo(first / f"f{i}.png", seed=i)
    Engine(db, model=tiny_clip).index(first, workers=0)
    # Rows of an archive folder that is not indexed again: a collection large enough that FAISS's
    # searches, adds and removes (run without the GIL) last long enough to overlap.
    catalog = Catalog.open(db)
    dim, n_archive = int(catalog.get_meta("dim")), 10_000
    vecs = np.random.default_rng(0).standard_normal((n_archive, dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    archive = tmp_path / "archive"
    catalog.write_batch(
        [NewImage(f"{archive}/a{i}.png", 1, 1, f"a{i}", v) for i, v in enumerate(vecs)]
    )
    catalog.close()
    n_more = 150
    for i in range(n_more):
        make_photo(more / f"m{i:03d}.png", seed=1000 + i)
    stop = tmp_path / "stop"
    searcher = subprocess.Popen(
        [sys.executable, "-c", SEARCHER, str(db), tiny_clip, str(stop)],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert searcher.stdout.readline().strip() == "searching", searcher.stderr.read()[-2000:]
        cli = [sys.executable, "-m", "vtsearch.cli", "--db", str(db), "--model", tiny_clip]
        indexer = subprocess.run(
            [*cli, "index", str(more), "--batch-size", "2", "--workers", "0"],
            env=ENV,
            capture_output=True,
            text=True,
            timeout=180,
        )
        stop.touch()
        out, err = searcher.communicate(timeout=120)
    finally:
        stop.touch()
        if searcher.poll() is None:
            searcher.kill()
    assert indexer.returncode == 0, indexer.stderr[-2000:]
    # A crash in FAISS kills the searcher (SIGABRT, SIGSEGV): its return code says so.
    rc = searcher.returncode
    assert rc == 0, f"the searcher died ({rc}): {err[-2000:]}"
    got = json.loads(out.strip().splitlines()[-1])
    assert got["errors"] == [] and got["repeated"] == []
    assert got["seqs"] >= 20, f"the searches overlapped only {got['seqs']} commits"
    live = indexed_ids(db)
    assert len(live) == 8 + n_archive + n_more
    assert set(got["seen"]) <= set(live)  # rows were only added: every hit was an indexed row
    held = got["index_ids"]
    assert len(held) == len(set(held)) and set(held) == set(live), "index and catalog differ"
    before, after, new_thread = got["threads"]
    assert after == before and new_thread == before, f"torch threads {before} -> {got['threads']}"


def test_two_threads_syncing_one_index_store_each_vector_once(tmp_path):
    r = subprocess.run(
        [sys.executable, "-c", SYNCER, str(tmp_path / "coll")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    rc = r.returncode
    assert rc == 0, f"died ({rc}): {r.stderr[-2000:]}"
    rounds = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(rounds) == 15
    for n, got in enumerate(rounds, 1):
        assert got["errors"] == []
        assert got["held"] == got["live"], f"round {n}: a vector stored twice, or missing"
        assert got["len"] == len(got["live"]) == 400 * n
