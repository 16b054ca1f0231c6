"""catalog.db restored from a backup, beside a FAISS file saved after it: searches return only
indexed rows of the restored catalog, scored by their own vectors, as many as asked for; also
once the restored catalog's sequence numbers have caught up with the FAISS file's, for an engine
opened before the restore and one opened after."""

from __future__ import annotations

import shutil
import sqlite3
from contextlib import closing

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import make_photo

from vtsearch import Engine
from vtsearch.cli import main
from vtsearch.models.registry import load_embedder
from vtsearch.search.query import encode_query

QUERY = "a photo"


@pytest.fixture(scope="module")
def query_vector(tiny_clip) -> np.ndarray:
    return encode_query(load_embedder(tiny_clip, "cpu"), QUERY, None).vector


def sqlite_copy(source, target) -> None:
    """A consistent copy of one database into another (SQLite's online backup), safe while
    other connections have either open."""
    with closing(sqlite3.connect(source)) as src, closing(sqlite3.connect(target)) as dst:
        src.backup(dst)


def first_then_changed(folder, db, model: str, saved) -> None:
    """Index 8 photos, back the catalog up, then delete 3, add 4 and a text file named .jpg."""
    for i in range(8):
        make_photo(folder / f"p{i}.png", seed=i)
    with Engine(db, model=model) as eng:
        eng.index(folder, workers=0)
        sqlite_copy(db / "catalog.db", saved)
        for i in (0, 3, 5):
            (folder / f"p{i}.png").unlink()
        for i in range(4):
            make_photo(folder / f"n{i}.png", seed=100 + i)
        (folder / "notes.jpg").write_text("not a picture: a text file with an image's name")
        eng.index(folder, workers=0)


def catalog_state(db) -> tuple[int, dict[int, np.ndarray]]:
    """The catalog's sequence number, and the vectors of its indexed rows by id."""
    with closing(sqlite3.connect(db / "catalog.db")) as con:
        seq = int(con.execute("select value from meta where key='seq'").fetchone()[0])
        rows = con.execute("select id, vector from images where status='indexed'").fetchall()
    return seq, {i: np.frombuffer(v, dtype=np.float32) for i, v in rows}


def assert_exact(eng: Engine, db, query: np.ndarray) -> None:
    """Every indexed row comes back once, ranked and scored as exact search over the catalog
    ranks and scores it."""
    _, live = catalog_state(db)
    exact = sorted(((float(v @ query), i) for i, v in live.items()), reverse=True)
    for k in (3, len(live)):
        hits = eng.search(text=QUERY, k=k, rerank=False)
        assert [h.id for h in hits] == [i for _, i in exact[:k]]
        assert np.allclose([h.score for h in hits], [s for s, _ in exact[:k]], atol=1e-5)


def test_restored_catalog_is_searched_by_its_own_vectors(tmp_path, tiny_clip, query_vector):
    folder, db, saved = tmp_path / "photos", tmp_path / "coll", tmp_path / "backup.db"
    first_then_changed(folder, db, tiny_clip, saved)
    _, newer = catalog_state(db)
    # Restored the plain way: no process has the collection open, its -wal/-shm go with it.
    for name in ("catalog.db-wal", "catalog.db-shm"):
        (db / name).unlink(missing_ok=True)
    shutil.copyfile(saved, db / "catalog.db")
    _, restored = catalog_state(db)
    assert set(restored) != set(newer)  # the FAISS file holds rows the catalog does not know

    check = CliRunner().invoke(main, ["--db", str(db), "check"])
    # A problem found and reported (exit 1), not a crash.
    assert check.exit_code == 1 and isinstance(check.exception, SystemExit), check.output
    assert "restored from a backup?" in check.output, check.output
    assert_exact(Engine(db, model=tiny_clip), db, query_vector)


def test_restore_then_more_indexing_past_the_saved_index(tmp_path, tiny_clip, query_vector):
    folder, db, saved = tmp_path / "photos", tmp_path / "coll", tmp_path / "backup.db"
    first_then_changed(folder, db, tiny_clip, saved)
    faiss_seq, _ = catalog_state(db)
    early = Engine(db, model=tiny_clip)
    early.search(text=QUERY, k=3, rerank=False)  # its index now reflects the newer catalog
    # Restored under the running engine, through SQLite (its connections see the new content).
    sqlite_copy(saved, db / "catalog.db")
    # New files sorted first take the ids the newer catalog gave n0.png...: the text file's
    # failed row gets the id under which the saved index holds the vector of n0.png.
    (folder / "a-bad.jpg").write_text("a text file again")
    for i in range(2):
        make_photo(folder / f"a{i}.png", seed=200 + i)
    Engine(db, model=tiny_clip).index(folder, workers=0)
    seq, _ = catalog_state(db)
    assert seq >= faiss_seq, "the restored catalog did not catch up with the FAISS file"
    assert_exact(early, db, query_vector)
    assert_exact(Engine(db, model=tiny_clip), db, query_vector)
