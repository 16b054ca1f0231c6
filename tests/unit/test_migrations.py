"""Schema migrations through Alembic: a catalog the previous vtsearch made (schema 3, before
Alembic; ``tests/data/schema3-catalog.db`` was written by that version's own code) upgrades in
place and keeps every row; a newer one is refused."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from vtsearch.errors import SchemaVersionError
from vtsearch.storage.catalog import Catalog
from vtsearch.storage.migrate import head_revision
from vtsearch.storage.records import NewImage
from vtsearch.storage.schema import SCHEMA_VERSION

SCHEMA3 = Path(__file__).resolve().parents[1] / "data" / "schema3-catalog.db"


@pytest.fixture
def schema3(tmp_path) -> Path:
    shutil.copy(SCHEMA3, tmp_path / "catalog.db")
    return tmp_path


def _revision(folder: Path) -> list:
    con = sqlite3.connect(folder / "catalog.db")
    try:
        return con.execute("SELECT version_num FROM alembic_version").fetchall()
    finally:
        con.close()


def test_a_schema_3_catalog_upgrades_in_place_and_keeps_its_rows(schema3):
    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        _revision(schema3)  # made before Alembic
    cat = Catalog.open(schema3)
    assert cat.get_meta("schema_version") == str(SCHEMA_VERSION) == "4"
    assert _revision(schema3) == [(head_revision(),)]
    recs = cat.records()
    assert sorted(recs) == [f"/photos/{i:02d}.jpg" for i in range(1, 6)] + [
        "/photos/bad.jpg",
        "/photos/odd-\udcff.jpg",
    ]
    assert recs["/photos/03.jpg"].mtime_ns == 1_700_000_000_000_000_003
    assert recs["/photos/03.jpg"].inode == 10_000_000_003
    assert cat.counts() == {"indexed": 6, "failed": 1}
    assert cat.roots() == ["/photos"]
    assert [t.text for t in cat.texts([1, 2]).values()] == ["a dog", "a cat"]
    ((tag,),) = cat.tags_of([2]).values()
    assert (tag.set_name, tag.label, tag.score, tag.confidence) == ("animals", "dog", 0.5, 0.9)
    seq, mark = cat.head()
    assert seq == 3 and mark == cat.mark_at(3)
    # The history a saved FAISS file replays is intact: the first image's removal included.
    _, added, removed = cat.changes_since(0)
    assert len(added) == 6 and [r[0] for r in removed] == [1]
    # And it takes new writes, numbered after the old ones.
    ((new_id, _),) = cat.write_batch(
        [NewImage("/photos/new.jpg", 1, 2, "hn", vector=np.ones(4, dtype=np.float32))]
    )
    assert new_id == 9 and cat.head()[0] == 4
    cat.close()
    # Opening again runs nothing: the version is current.
    assert Catalog.open(schema3).get_meta("schema_version") == "4"


def test_an_old_catalog_is_not_upgraded_by_a_reader(schema3):
    with pytest.raises(SchemaVersionError, match="needs an upgrade to 4"):
        Catalog.open(schema3, readonly=True)


def test_a_catalog_newer_than_this_vtsearch_is_refused(schema3):
    Catalog.open(schema3).set_meta("schema_version", str(SCHEMA_VERSION + 1))
    with pytest.raises(SchemaVersionError, match="newer than this vtsearch"):
        Catalog.open(schema3)


def test_the_migrations_make_the_schema_the_models_describe(tmp_path, catalog_url):
    """What ``alembic revision --autogenerate`` would find: nothing to add, on either database."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from vtsearch.storage.schema import Base

    cat = Catalog.open(tmp_path, url=catalog_url)
    with cat.engine.connect() as con:
        diff = compare_metadata(MigrationContext.configure(con), Base.metadata)
    assert diff == []


def _open(folder) -> str:
    Catalog.open(folder).close()
    return "ok"


def test_processes_creating_one_new_catalog_at_once_make_it_once(tmp_path):
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(4) as pool:
        assert pool.map(_open, [tmp_path] * 8) == ["ok"] * 8
    assert _revision(tmp_path) == [(head_revision(),)]
    cat = Catalog.open(tmp_path)
    assert cat.get_meta("schema_version") == str(SCHEMA_VERSION) and cat.head() == (0, None)
