"""The catalog of a collection: one row per image file, its vector, and index metadata, in the
collection folder's SQLite file or a PostgreSQL database (``server_db``).

``Catalog`` is assembled from mixins: ``catalog_meta`` (metadata, schema version, model),
``catalog_filters`` (search filters), ``catalog_history``, ``catalog_roots`` and ``catalog_texts``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
from sqlalchemy import bindparam, create_engine, delete, event, func, insert, select, text, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from vtsearch.storage.catalog_filters import FilterRows
from vtsearch.storage.catalog_history import History
from vtsearch.storage.catalog_meta import MetaRows
from vtsearch.storage.catalog_roots import RootRows
from vtsearch.storage.catalog_tags import TagRows, drop_tags
from vtsearch.storage.catalog_texts import TextRows
from vtsearch.storage.files import os_errors
from vtsearch.storage.migrate import check as check_schema
from vtsearch.storage.records import FileRecord, NewImage, is_under
from vtsearch.storage.schema import ImageRow, Tombstone
from vtsearch.storage.server_db import record, redacted, server_engine, server_url
from vtsearch.storage.sqlite import (
    CATALOG_FILE,
    file_signature,
    sqlite_pragmas,
    sqlite_url,
    writable,
    writes,
)

__all__ = ["Catalog", "FileRecord", "ImageRow", "NewImage"]


#: The columns of a ``FileRecord``, in its field order.
_RECORD = (
    ImageRow.id,
    ImageRow.path,
    ImageRow.size,
    ImageRow.mtime_ns,
    ImageRow.sha256,
    ImageRow.status,
    ImageRow.ctime_ns,
    ImageRow.inode,
)


class Catalog(MetaRows, FilterRows, History, RootRows, TextRows, TagRows):
    """SQLAlchemy 2.0 catalog over ``catalog.db`` in a collection folder (or any database URL).

    Example:
        >>> cat = Catalog.open(Path("/tmp/coll"))  # doctest: +SKIP
        >>> cat.bind_model("vtsearch-lite", 640)  # doctest: +SKIP
    """

    def __init__(self, engine: Engine, readonly: bool = False, location: str | None = None) -> None:
        self.engine = engine
        #: What error messages name: the database file, or the server's URL without password.
        self.location = location or str(engine.url.database or engine.url)
        #: Opened for reading only (a folder or file this user may not write): nothing is created
        #: or migrated, and writes fail.
        self.readonly = readonly
        self._signature = file_signature(Path(self.location)) if readonly else ()
        check_schema(engine, readonly)

    @property
    def on_server(self) -> bool:
        """Whether the catalog is on a database server (PostgreSQL), not a SQLite file."""
        return self.engine.dialect.name != "sqlite"

    @property
    def snapshot(self) -> Engine:
        """The engine for reads that must see one moment across several statements. A server's
        default (READ COMMITTED) lets each statement see other writers' later commits: a FAISS
        file would record a sequence number older than vectors it holds."""
        if not self.on_server:
            return self.engine
        return self.engine.execution_options(isolation_level="REPEATABLE READ")

    @classmethod
    def open(cls, folder: Path, readonly: bool | None = None, url: str | None = None) -> Catalog:
        """The catalog of the collection in ``folder``: its SQLite file, or the PostgreSQL
        database ``url`` names (or the folder recorded when it was made with one).

        ``readonly`` None: read-only when this user may not write the SQLite file.

        Raises:
            ConfigError: ``url`` is not a PostgreSQL URL, or the folder's catalog is elsewhere.
            CatalogConnectionError: the server cannot be reached.
        """
        server = server_url(folder, url, CATALOG_FILE)
        if server is not None:
            engine = server_engine(server)
            if not readonly:
                with os_errors(folder, "write"):
                    folder.mkdir(parents=True, exist_ok=True)
                    record(folder, server)
            return cls(engine, bool(readonly), redacted(server))
        if readonly is None:
            readonly = folder.is_dir() and not writable(folder)
        db = folder / CATALOG_FILE
        with os_errors(db, "read" if readonly else "write"):
            if not readonly:
                folder.mkdir(parents=True, exist_ok=True)
            engine = _sqlite_engine(db, readonly)
            if not readonly:
                # WAL lets queries read a consistent snapshot while an indexer writes. The mode
                # is stored in the file, so setting it once per writer is enough (and a reader
                # that may not write must not try).
                with engine.connect() as con:
                    con.exec_driver_sql("PRAGMA journal_mode=WAL")
            return cls(engine, readonly, str(db))

    def refresh_if_stale(self) -> None:
        """Reopen a read-only reader's database when a writer has touched it since.

        A reader that may not write opens the file ``immutable`` when no writer is at work (see
        ``sqlite_url``): SQLite then neither locks nor looks for changes, so a later writer's
        commits would go unseen, and its checkpoints would corrupt what the reader has cached.
        Called before each query's first read (``head``).
        """
        if not self.readonly or not self.engine.url.query.get("immutable"):
            return
        db = Path(self.location)
        if file_signature(db) != self._signature:
            self.engine.dispose()
            self.engine = _sqlite_engine(db, readonly=True)
            self._signature = file_signature(db)

    def close(self) -> None:
        self.engine.dispose()

    # -- reads ----------------------------------------------------------------------------------
    def records(self, under: str | None = None) -> dict[str, FileRecord]:
        """Catalogued files by path, without vectors; ``under``: only those in that folder."""
        stmt = select(*_RECORD)
        with Session(self.engine) as s:
            got = {r.path: FileRecord(*r) for r in s.execute(stmt)}
        if under is None:
            return got
        return {p: r for p, r in got.items() if is_under(p, under)}

    def indexed_by_hash(self, hashes: Iterable[str]) -> dict[str, list[FileRecord]]:
        """Indexed rows anywhere in the collection whose content hash is one of ``hashes``."""
        wanted = list(set(hashes))
        out: dict[str, list[FileRecord]] = {}
        with Session(self.engine) as s:
            for i in range(0, len(wanted), 500):
                stmt = select(*_RECORD).where(
                    ImageRow.sha256.in_(wanted[i : i + 500]), ImageRow.status == "indexed"
                )
                for r in s.execute(stmt.order_by(ImageRow.id)):
                    out.setdefault(r.sha256, []).append(FileRecord(*r))
        return out

    def row_by_hash(self, sha256: str) -> ImageRow | None:
        with Session(self.engine, expire_on_commit=False) as s:
            row = s.scalars(
                select(ImageRow).where(ImageRow.sha256 == sha256, ImageRow.status == "indexed")
            ).first()
            if row is not None:
                s.expunge(row)
            return row

    def rows(self, ids: Iterable[int]) -> dict[int, ImageRow]:
        ids = list(ids)
        with Session(self.engine, expire_on_commit=False) as s:
            found = s.scalars(select(ImageRow).where(ImageRow.id.in_(ids))).all()
            for r in found:
                s.expunge(r)
        return {r.id: r for r in found}

    def indexed_ids(self, ids: Iterable[int]) -> set[int]:
        """Which of ``ids`` name indexed rows."""
        ids = list(ids)
        with Session(self.engine) as s:
            stmt = select(ImageRow.id).where(ImageRow.id.in_(ids), ImageRow.status == "indexed")
            return set(s.scalars(stmt))

    def max_image_id(self) -> int:
        """The highest image id ever committed (ids are never reused), 0 for none."""
        with Session(self.engine) as s:
            if self.engine.dialect.name == "sqlite":
                got = s.execute(
                    text("SELECT seq FROM sqlite_sequence WHERE name = 'images'")
                ).scalar()
                if got is not None:
                    return int(got)
            elif self.engine.dialect.name == "postgresql":
                # The id sequence's last value (taken ids of rolled-back writes included).
                got = s.execute(
                    text("SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM images_id_seq")
                ).scalar()
                return int(got or 0)
            return int(s.scalar(select(func.max(ImageRow.id))) or 0)

    def live_vectors(self, chunk: int = 2000) -> Iterable[tuple[int, bytes | None]]:
        """``(id, vector blob)`` of every indexed row, in id order."""
        last = 0
        while True:
            with Session(self.engine) as s:
                got = s.execute(
                    select(ImageRow.id, ImageRow.vector)
                    .where(ImageRow.status == "indexed", ImageRow.id > last)
                    .order_by(ImageRow.id)
                    .limit(chunk)
                ).all()
            if not got:
                return
            yield from ((int(i), v) for i, v in got)
            last = int(got[-1][0])

    def duplicate_paths(self) -> list[str]:
        with Session(self.engine) as s:
            stmt = select(ImageRow.path).group_by(ImageRow.path).having(func.count() > 1)
            return list(s.scalars(stmt))

    def integrity_problems(self) -> list[str]:
        """What SQLite's ``quick_check`` finds wrong with the database file (empty when fine)."""
        if self.engine.dialect.name != "sqlite":
            return []
        with self.engine.connect() as con:
            rows = [r[0] for r in con.execute(text("PRAGMA quick_check"))]
        return [] if rows == ["ok"] else rows

    def counts(self) -> dict[str, int]:
        with Session(self.engine) as s:
            rows = s.execute(select(ImageRow.status, func.count()).group_by(ImageRow.status)).all()
        return {status: n for status, n in rows}

    def failures(self) -> list[tuple[str, str]]:
        with Session(self.engine) as s:
            stmt = select(ImageRow.path, ImageRow.error).where(ImageRow.status == "failed")
            return [(p, e or "") for p, e in s.execute(stmt.order_by(ImageRow.path))]

    # -- writes ---------------------------------------------------------------------------------
    @writes
    def write_batch(
        self,
        items: list[NewImage],
        before_commit: Callable[[list[tuple[int, np.ndarray | None]]], None] | None = None,
    ) -> list[tuple[int, np.ndarray | None]]:
        """Insert or overwrite rows with their vectors in one transaction.

        Returns ``(id, vector)`` for each item in order; ``vector`` is None for failed files. Every
        returned id is new (never committed before), including the new version of a changed file.
        ``before_commit`` gets the same list once the ids are known but before the commit, so side
        files (the token cache) are written before the rows that point at them become visible.
        """
        now = time.time()
        with Session(self.engine) as s, s.begin():
            seq = self._next_seq(s)
            replaced = [it.replace_id for it in items if it.replace_id is not None]
            if replaced:
                old = s.execute(
                    select(ImageRow.id, ImageRow.status).where(ImageRow.id.in_(replaced))
                ).all()
                for row_id, status in old:
                    if status == "indexed":
                        s.merge(Tombstone(id=row_id, seq=seq))
                # The paths are free again before their new versions are inserted.
                s.execute(delete(ImageRow).where(ImageRow.id.in_([i for i, _ in old])))
                drop_tags(s, [i for i, _ in old])
            ok = [it.error is None and it.vector is not None for it in items]
            values = [
                {
                    "path": it.path,
                    "size": it.size,
                    "mtime_ns": it.mtime_ns,
                    "sha256": it.sha256,
                    "width": it.width,
                    "height": it.height,
                    "format": it.format,
                    "taken_at": it.taken_at,
                    "status": "indexed" if good else "failed",
                    "error": None if good else it.error,
                    "vector": (
                        np.ascontiguousarray(it.vector, dtype=np.float32).tobytes()
                        if good
                        else None
                    ),
                    "vec_seq": seq if good else 0,
                    "indexed_at": now,
                    "ctime_ns": it.ctime_ns,
                    "inode": it.inode,
                }
                for it, good in zip(items, ok, strict=True)
            ]
            # A Core INSERT ... RETURNING of all rows, ids in the order of ``values``, instead of
            # ORM objects flushed one at a time (a quarter less time per indexed photo).
            ids = (
                s.scalars(
                    insert(ImageRow).returning(ImageRow.id, sort_by_parameter_order=True), values
                ).all()
                if values
                else []
            )
            out = [
                (row_id, it.vector if good else None)
                for row_id, it, good in zip(ids, items, ok, strict=True)
            ]
            if before_commit is not None:
                before_commit(out)
        return out

    @writes
    def touch(self, updates: list[tuple[int, str, int, int, int | None, int | None]]) -> None:
        """Record a new path and stat (size, mtime, ctime, inode) for files whose content did not
        change (moved, touched)."""
        if not updates:
            return
        old = self.rows_paths([u[0] for u in updates])
        moved = [u for u in updates if old.get(u[0]) != u[1]]
        stat = update(ImageRow).where(ImageRow.id == bindparam("rid"))
        with Session(self.engine) as s, s.begin():
            # Moved paths are first set aside (as no absolute path reads), so two rows that swap
            # paths never collide on uniqueness; then one executemany per step (a first refresh
            # after an upgrade touches every row).
            if moved:
                s.connection().execute(
                    stat.values(path=bindparam("tmp")),
                    [{"rid": u[0], "tmp": f"moving:{u[0]}"} for u in moved],
                )
            s.connection().execute(
                stat.values(
                    path=bindparam("p"),
                    size=bindparam("size"),
                    mtime_ns=bindparam("mtime"),
                    ctime_ns=bindparam("ctime"),
                    inode=bindparam("ino"),
                ),
                [
                    {"rid": r, "p": p, "size": sz, "mtime": m, "ctime": c, "ino": i}
                    for r, p, sz, m, c, i in updates
                ],
            )

    def rows_paths(self, ids: list[int]) -> dict[int, str]:
        """The paths of rows by id."""
        out: dict[int, str] = {}
        with Session(self.engine) as s:
            for i in range(0, len(ids), 500):
                stmt = select(ImageRow.id, ImageRow.path).where(ImageRow.id.in_(ids[i : i + 500]))
                out.update((int(r), p) for r, p in s.execute(stmt))
        return out

    @writes
    def mark_for_reindex(self, ids: list[int], reason: str | None = None) -> None:
        """Make the next index run embed these rows again (their stat and hash are forgotten).

        With ``reason`` the rows also lose their vector now (status "failed" with that reason, and
        a tombstone); without it they stay searchable until they are re-embedded.
        """
        if not ids:
            return
        with Session(self.engine) as s, s.begin():
            seq = self._next_seq(s) if reason else 0
            for i in range(0, len(ids), 500):
                chunk = ids[i : i + 500]
                values: dict = {"mtime_ns": -1, "sha256": None}
                if reason:
                    live = s.scalars(
                        select(ImageRow.id).where(
                            ImageRow.id.in_(chunk), ImageRow.status == "indexed"
                        )
                    ).all()
                    for row_id in live:
                        s.merge(Tombstone(id=row_id, seq=seq))
                    values.update(status="failed", error=reason, vector=None, vec_seq=0)
                    drop_tags(s, chunk)  # scored from the vector it just lost
                s.execute(update(ImageRow).where(ImageRow.id.in_(chunk)).values(**values))

    @writes
    def remove(self, ids: list[int]) -> None:
        """Delete rows (files that vanished) and tombstone their vectors."""
        if not ids:
            return
        with Session(self.engine) as s, s.begin():
            seq = self._next_seq(s)
            for i in range(0, len(ids), 500):
                chunk = ids[i : i + 500]
                indexed = s.scalars(
                    select(ImageRow.id).where(ImageRow.id.in_(chunk), ImageRow.status == "indexed")
                ).all()
                for row_id in indexed:
                    s.merge(Tombstone(id=row_id, seq=seq))
                s.execute(delete(ImageRow).where(ImageRow.id.in_(chunk)))
                drop_tags(s, chunk)


def _sqlite_engine(db: Path, readonly: bool) -> Engine:
    engine = create_engine(sqlite_url(db, readonly))
    event.listen(engine, "connect", sqlite_pragmas)
    return engine
