"""The catalog on a real PostgreSQL server (started by the ``pg_server`` fixture): several
writers at once, the writer lock across machines, the CLI, and errors a user can act on. The
catalog, filter and incremental-index tests run on PostgreSQL too (``catalog_url``)."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from vtsearch import Engine
from vtsearch.errors import CatalogConnectionError, ConfigError, IndexLockedError
from vtsearch.storage.catalog import Catalog, NewImage
from vtsearch.storage.vectors import VectorIndex

WRITERS, BATCHES, PER_BATCH = 2, 25, 4


def _writer(url: str, folder: str, name: str) -> list[int]:
    """Write batches of new images, replace one of its own in each, remove every fifth."""
    cat = Catalog.open(__import__("pathlib").Path(folder), url=url)
    rng = np.random.default_rng(abs(hash(name)) % 2**32)
    mine: list[int] = []
    for b in range(BATCHES):
        items = [
            NewImage(f"/{name}/{b}-{i}.jpg", 1, 2, f"{name}{b}{i}", vector=rng.random(8, "f4"))
            for i in range(PER_BATCH)
        ]
        if mine:  # a changed file: its old row goes, a new id comes
            old = mine.pop(0)
            path = cat.rows_paths([old])[old]
            items.append(
                NewImage(path, 3, 4, f"{name}{b}x", vector=rng.random(8, "f4"), replace_id=old)
            )
        mine += [i for i, _ in cat.write_batch(items)]
        if b % 5 == 4:
            cat.remove([mine.pop()])
    cat.close()
    return mine


def test_two_writers_at_once_keep_ids_sequence_and_tombstones_right(tmp_path, pg_url):
    cat = Catalog.open(tmp_path, url=pg_url)
    cat.bind_model("synthetic", 8)
    follower = VectorIndex(8)  # a reader syncing while the writers work
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(WRITERS) as pool:
        pending = pool.starmap_async(
            _writer, [(pg_url, str(tmp_path), f"w{k}") for k in range(WRITERS)]
        )
        while not pending.ready():
            follower.sync(cat)
            time.sleep(0.01)
        kept = pending.get(timeout=120)
    follower.sync(cat)

    live = sorted(i for ids in kept for i in ids)
    assert len(live) == len(set(live)) == cat.counts()["indexed"]
    # Every commit got its own number, in order, with its own mark.
    seq, mark = cat.head()
    commits = WRITERS * (BATCHES + BATCHES // 5)
    assert seq == commits and mark == cat.mark_at(seq)
    assert len({cat.mark_at(s) for s in range(1, seq + 1)}) == commits
    # The follower, which synced from sequence numbers mid-flight, holds exactly the live rows.
    assert sorted(follower._ids().tolist()) == live
    fresh = VectorIndex(8)
    fresh.sync(cat)
    assert sorted(fresh._ids().tolist()) == live
    # Removed and replaced ids are tombstoned and never handed out again.
    assert cat.max_image_id() >= max(live)
    _, _, removed = cat.changes_since(0)
    assert not set(r[0] for r in removed) & set(live)
    assert len(removed) == WRITERS * (BATCHES - 1 + BATCHES // 5)


_HOLD = """
import sys, time
from pathlib import Path
from vtsearch import Engine
eng = Engine(Path(sys.argv[1]), catalog=sys.argv[2])
with eng._parts.write_lock():
    print("locked", flush=True)
    time.sleep(600)
"""


def test_one_indexer_at_a_time_across_folders_and_a_killed_one_lets_go(tmp_path, pg_url):
    """Two machines share the catalog, not the folder: the lock is the database's."""
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(tmp_path / "a"), pg_url],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        other = Engine(tmp_path / "b", catalog=pg_url)
        with pytest.raises(IndexLockedError, match="another machine"), other._parts.write_lock():
            pass
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=30)
        deadline = time.time() + 30
        while True:  # the server notices the dropped connection
            try:
                with other._parts.write_lock():
                    break
            except IndexLockedError:
                if time.time() > deadline:
                    raise
                time.sleep(0.2)
    finally:
        holder.kill()
        holder.wait()


def test_the_folder_remembers_its_catalog_and_refuses_another(tmp_path, pg_url, pg_server):
    Catalog.open(tmp_path / "coll", url=pg_url).close()
    recorded = (tmp_path / "coll" / "catalog.url").read_text().strip()
    assert recorded == pg_url and not (tmp_path / "coll" / "catalog.db").exists()
    assert Catalog.open(tmp_path / "coll").on_server  # no URL needed again
    with pytest.raises(ConfigError, match="keeps its catalog at"):
        Catalog.open(tmp_path / "coll", url=pg_server.url("elsewhere"))
    Catalog.open(tmp_path / "local").close()
    with pytest.raises(ConfigError, match="has its own catalog"):
        Catalog.open(tmp_path / "local", url=pg_url)
    with pytest.raises(ConfigError, match="takes a PostgreSQL URL"):
        Catalog.open(tmp_path / "x", url="mysql://u@h/db")


def test_an_unreachable_server_is_a_clear_error(tmp_path, pg_server):
    url = f"postgresql+psycopg://vtsearch:secret@127.0.0.1:{pg_server.port}/no_such_db"
    with pytest.raises(CatalogConnectionError, match="no_such_db") as e:
        Catalog.open(tmp_path, url=url)
    assert "secret" not in str(e.value)


def test_cli_indexes_and_queries_with_the_catalog_on_postgres(tmp_path, photos, tiny_clip, pg_url):
    def vts(*args: str, catalog: str | None = None) -> subprocess.CompletedProcess:
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        extra = ["--catalog", catalog] if catalog else []
        cmd = [sys.executable, "-m", "vtsearch.cli", "--db", str(tmp_path / "coll"), *extra, *args]
        return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)

    done = vts("--model", tiny_clip, "index", str(photos), catalog=pg_url)
    assert done.returncode == 0, done.stderr
    done = vts("query", "--image", str(photos / "img0.png"), "-n", "1")
    assert done.returncode == 0, done.stderr
    assert "img0.png" in done.stdout
    shown = vts("status")
    assert shown.returncode == 0 and f"catalog:    {pg_url}" in shown.stdout
    assert "indexed:    7" in shown.stdout
    bad = vts("status", catalog=pg_url.rsplit("/", 1)[0] + "/other")
    assert bad.returncode == 2 and "keeps its catalog at" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_a_sqlite_collection_moves_to_postgres_and_carries_on(tmp_path, photos, tiny_clip, pg_url):
    from conftest import make_photo

    coll = tmp_path / "coll"
    eng = Engine(coll, model=tiny_clip)
    eng.index(photos, workers=0)
    before = [(h.path, round(h.score, 5)) for h in eng.search(image=photos / "img0.png", k=5)]
    old_max = Catalog.open(coll).max_image_id()
    eng.close()

    report = Engine(coll).move_catalog(pg_url)
    assert report.rows["images"] == 7 and not (coll / "catalog.db").exists()
    assert (coll / "catalog.db.moved-to-postgresql").exists()

    moved = Engine(coll)  # the folder now names the server
    assert moved._parts.catalog(create=False).on_server
    assert [
        (h.path, round(h.score, 5)) for h in moved.search(image=photos / "img0.png", k=5)
    ] == before
    assert moved.index(photos, workers=0).embedded == 0  # nothing re-embedded
    make_photo(photos / "later.png", seed=77)
    assert moved.index(photos, workers=0).embedded == 1
    cat = Catalog.open(coll)
    assert cat.max_image_id() == old_max + 1 and cat.counts() == {"indexed": 8}
    with pytest.raises(ConfigError, match="already keeps its catalog on a server"):
        Engine(coll).move_catalog(pg_url)


def test_a_move_killed_after_the_copy_is_finished_by_running_it_again(
    tmp_path, photos, tiny_clip, pg_url
):
    from vtsearch.storage.catalog_move import move_to_server

    coll = tmp_path / "coll"
    eng = Engine(coll, model=tiny_clip)
    eng.index(photos, workers=0)
    eng.close()
    move_to_server(coll, pg_url)
    # As if killed between the server's commit and the folder's record: the file is back.
    (coll / "catalog.url").unlink()
    os.replace(coll / "catalog.db.moved-to-postgresql", coll / "catalog.db")
    report = Engine(coll).move_catalog(pg_url)
    assert report.rows["images"] == 7 and (coll / "catalog.url").exists()
    assert Engine(coll).status().indexed == 7
    # Another collection's catalog is refused: the database holds one already.
    other = tmp_path / "other"
    eng = Engine(other, model=tiny_clip)
    eng.index(photos / "sub", workers=0)
    eng.close()
    with pytest.raises(ConfigError, match="already holds a catalog"):
        Engine(other).move_catalog(pg_url)


def test_every_feature_runs_on_a_postgres_catalog(tmp_path, photos, tiny_clip, pg_url):
    """Texts, tags, filters, duplicates, export and check: the same catalog code on the server."""
    import pyarrow.parquet as pq

    from vtsearch.storage.filters import Filters

    coll = tmp_path / "coll"
    eng = Engine(coll, model=tiny_clip, catalog=pg_url)
    eng.index(photos, workers=0)
    assert eng.add_texts(["a red square", "a blue circle"], source="mine") == 2
    hits = eng.search_texts(image=photos / "img0.png", k=2)
    assert {h.text for h in hits} == {"a red square", "a blue circle"}
    report = eng.tag("red,blue,green", top_k=1)
    assert report.tags == 7 and all(len(eng.image(i).tags) == 1 for i in range(1, 8))
    label = eng.image(1).tags[0]
    tagged = eng.search(image=photos / "img0.png", k=10, filters=Filters(tags=(label,)))
    assert tagged and all(label in eng.image(h.id).tags for h in tagged)
    inside = eng.search(
        image=photos / "img0.png", k=10, filters=Filters(folders=(str(photos / "sub"),))
    )
    assert [os.path.basename(h.path) for h in inside] == ["deep.jpg"]
    (photos / "img0-copy.png").write_bytes((photos / "img0.png").read_bytes())
    eng.index(photos, workers=0)
    groups = eng.duplicates(exact_only=True)
    assert [sorted(os.path.basename(f.path) for f in g.files) for g in groups] == [
        ["img0-copy.png", "img0.png"]
    ]
    out = eng.export(tmp_path / "rows.parquet")
    assert out.rows == 8 and len(pq.read_table(tmp_path / "rows.parquet")) == 8
    assert eng.check().ok
    eng.close()


def test_odd_file_names_round_trip_on_postgres(tmp_path, pg_url):
    names = [
        os.fsdecode(b"/p/caf\xe9/x.jpg"),  # not UTF-8
        "/p/\uffff41.jpg",  # the escape marker in a valid name
        "/p/\uffffzz.jpg",
        "/p/plain.jpg",
    ]
    cat = Catalog.open(tmp_path, url=pg_url)
    cat.write_batch(
        [NewImage(n, 1, 2, f"h{i}", vector=np.ones(4, "f4")) for i, n in enumerate(names)]
    )
    assert sorted(cat.records()) == sorted(names)
    from vtsearch.storage.filters import Filters

    assert len(cat.matching_ids(Filters(folders=(os.fsdecode(b"/p/caf\xe9"),)))) == 1


def test_no_password_is_written_to_the_folder_or_shown(tmp_path, pg_url):
    with_password = pg_url.replace("vtsearch@", "vtsearch:hunter2@") + "?password=hunter3"
    cat = Catalog.open(tmp_path, url=with_password)  # trust logins: the server ignores it
    recorded = (tmp_path / "catalog.url").read_text()
    assert "hunter" not in recorded and "hunter" not in cat.location
    assert recorded.strip() == pg_url
