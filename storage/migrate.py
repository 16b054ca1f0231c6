"""Bringing a catalog's schema up to this vtsearch's: Alembic revisions (``storage/migrations``)
on SQLite and PostgreSQL alike, run once per version change under a lock.

A catalog whose ``meta['schema_version']`` is current costs one read on open; Alembic is imported
only when there is work. A catalog made before Alembic (schema 1 to 3, SQLite) is first brought to
schema 3 as that vtsearch did, then marked as at the ``schema3`` revision, and upgraded from there.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Connection, insert, inspect, select, text, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError, ProgrammingError

from vtsearch.errors import SchemaVersionError
from vtsearch.storage.schema import FILTER_INDEX, SCHEMA_VERSION, Meta

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
#: The revision of the schema vtsearch made before Alembic (every such catalog has its tables).
BASELINE = "schema3"
#: The key of the PostgreSQL advisory lock migrations hold (any constant: one per database).
_MIGRATION_LOCK = 0x76747300


def stored_version(engine: Engine) -> int | None:
    """The catalog's schema version, or None for an empty database."""
    try:
        with engine.connect() as con:
            got = con.scalar(select(Meta.value).where(Meta.key == "schema_version"))
    except (OperationalError, ProgrammingError) as e:
        if "meta" not in str(e.orig):  # no such table: an empty database
            raise
        return None
    return int(got) if got is not None else None


def check(engine: Engine, readonly: bool) -> None:
    """Upgrade the schema to ``SCHEMA_VERSION`` when it is older (one read when it is not).

    Raises:
        SchemaVersionError: the catalog is newer than this vtsearch, or older and ``readonly``.
    """
    stored = stored_version(engine)
    if stored == SCHEMA_VERSION or (stored is None and readonly):
        return
    if stored is not None and stored > SCHEMA_VERSION:
        raise _newer(stored)
    if readonly:
        raise SchemaVersionError(
            f"this collection has catalog schema {stored} and needs an upgrade to "
            f"{SCHEMA_VERSION}, which needs write access: run `vtsearch status` once as a user "
            "who may write to the collection"
        )
    upgrade(engine)


def upgrade(engine: Engine) -> None:
    """Run every Alembic revision the catalog lacks, in one transaction that holds the
    database's write lock (SQLite: ``BEGIN IMMEDIATE``, DDL included; PostgreSQL: an advisory
    lock), so two processes opening an old or new catalog at once migrate it one after the
    other, the second finding it done."""
    with engine.connect() as con:
        if con.dialect.name != "sqlite":
            with con.begin():
                con.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK})
                _upgrade(con)
            return
        # pysqlite would run DDL outside any transaction: it is given the transaction itself.
        con = con.execution_options(isolation_level="AUTOCOMMIT")
        con.exec_driver_sql("BEGIN IMMEDIATE")
        try:
            _upgrade(con)
        except BaseException:
            con.exec_driver_sql("ROLLBACK")
            raise
        con.exec_driver_sql("COMMIT")


def _upgrade(con: Connection) -> None:
    from alembic.migration import MigrationContext

    stored = _version(con)
    if stored is not None and stored >= SCHEMA_VERSION:
        if stored > SCHEMA_VERSION:
            raise _newer(stored)
        return
    if MigrationContext.configure(con).get_current_revision() is None and _has_images(con):
        _pre_alembic(con, stored or 1)
        _alembic(con, "stamp", BASELINE)
    _alembic(con, "upgrade", "head")
    done = update(Meta).where(Meta.key == "schema_version").values(value=str(SCHEMA_VERSION))
    if con.execute(done).rowcount == 0:
        con.execute(insert(Meta).values(key="schema_version", value=str(SCHEMA_VERSION)))


def head_revision() -> str:
    """The newest revision this vtsearch knows."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(MIGRATIONS)).get_current_head()


def _alembic(con: Connection, verb: str, revision: str) -> None:
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = con
    getattr(command, verb)(cfg, revision)


def _version(con: Connection) -> int | None:
    if not _has_table(con, "meta"):
        return None
    got = con.scalar(select(Meta.value).where(Meta.key == "schema_version"))
    return int(got) if got is not None else None


def _has_table(con: Connection, name: str) -> bool:
    return inspect(con).has_table(name)


def _has_images(con: Connection) -> bool:
    return _has_table(con, "images")


def _pre_alembic(con: Connection, stored: int) -> None:
    """Bring a catalog of schema 1 or 2 to schema 3, as vtsearch did before Alembic."""
    from vtsearch.storage.schema import Base

    if stored < 2:
        have = {c["name"] for c in inspect(con).get_columns("images")}
        for col in ("ctime_ns", "inode"):
            if col not in have:
                con.exec_driver_sql(f"ALTER TABLE images ADD COLUMN {col} INTEGER")
    # Schema 3 added only tables (the tags', ``roots`` and ``commits`` in 2) and an index.
    missing = [t for t in Base.metadata.sorted_tables if not _has_table(con, t.name)]
    Base.metadata.create_all(con, tables=missing)
    have_ix = {ix["name"] for ix in inspect(con).get_indexes("images")}
    if FILTER_INDEX.name not in have_ix:
        FILTER_INDEX.create(con)


def _newer(stored: int) -> SchemaVersionError:
    return SchemaVersionError(
        f"this collection has catalog schema {stored}, newer than this vtsearch understands "
        f"({SCHEMA_VERSION}); upgrade vtsearch to open it"
    )
