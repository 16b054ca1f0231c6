"""The SQLite catalog of a collection: one row per image file, its vector, and index metadata."""

from __future__ import annotations

import functools
import os
import secrets
import time
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
from sqlalchemy import (
    URL,
    create_engine,
    delete,
    event,
    func,
    insert,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from vtsearch.errors import ModelMismatchError, SchemaVersionError
from vtsearch.storage.files import os_errors
from vtsearch.storage.schema import (
    SCHEMA_VERSION,
    Base,
    Commit,
    ImageRow,
    Meta,
    Root,
    TextRow,
    TextTombstone,
    Tombstone,
)

CATALOG_FILE = "catalog.db"

__all__ = ["Catalog", "FileRecord", "ImageRow", "NewImage"]


@dataclass(frozen=True)
class FileRecord:
    """What the scanner needs to know of a catalogued file."""

    id: int
    path: str
    size: int
    mtime_ns: int
    sha256: str | None
    status: str
    ctime_ns: int | None = None
    inode: int | None = None


@dataclass
class StoredText:
    text: str
    source: str | None
    vector: np.ndarray | None = None


@dataclass
class NewImage:
    """One decoded-and-embedded (or failed) file, ready to be written."""

    path: str
    size: int
    mtime_ns: int
    sha256: str | None
    vector: np.ndarray | None = None
    width: int | None = None
    height: int | None = None
    format: str | None = None
    taken_at: datetime | None = None
    error: str | None = None
    #: Row this file's new version supersedes (a changed file), or None. The old row is deleted in
    #: the same transaction and the new version gets a fresh id, so a batch killed before its commit
    #: never touched anything a committed row points at (its token record in particular).
    replace_id: int | None = None
    ctime_ns: int | None = None
    inode: int | None = None


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    # FULL: a committed batch survives a power cut too, so it is never embedded twice. One fsync
    # per batch of images costs nothing next to the embedding. Neither pragma writes the file.
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def _writable(folder: Path) -> bool:
    db = folder / CATALOG_FILE
    if db.exists() and not os.access(db, os.W_OK):
        return False
    return os.access(folder, os.W_OK)


def _sqlite_url(db: Path, readonly: bool) -> URL:
    """The database URL, built by SQLAlchemy so ``?``, ``%`` or ``#`` in a path stay in it."""
    if not readonly:
        return URL.create("sqlite", database=str(db))
    # A read-only reader opens the file as an SQLite URI (the path percent-quoted). Without a
    # ``-wal`` file no writer is at work, and SQLite cannot make the shared-memory file a WAL
    # reader needs in a folder it may not write: it then reads the file as it stands.
    query = {"mode": "ro", "uri": "true"}
    if not Path(str(db) + "-wal").exists():
        query["immutable"] = "1"
    return URL.create(
        "sqlite", database="file:" + urllib.parse.quote(os.fsencode(db.resolve())), query=query
    )


def _writes(method):
    """A full disk or a database this user may not write is a typed error naming the file."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with os_errors(self.location, "write"):
            return method(self, *args, **kwargs)

    return wrapper


class Catalog:
    """SQLAlchemy 2.0 catalog over ``catalog.db`` in a collection folder (or any database URL).

    Example:
        >>> cat = Catalog.open(Path("/tmp/coll"))  # doctest: +SKIP
        >>> cat.bind_model("vtsearch-lite", 640)  # doctest: +SKIP
    """

    def __init__(self, engine: Engine, readonly: bool = False, location: str | None = None) -> None:
        self.engine = engine
        #: What error messages name: the database file.
        self.location = location or str(engine.url.database or engine.url)
        #: Opened for reading only (a folder or file this user may not write): nothing is created
        #: or migrated, and writes fail.
        self.readonly = readonly
        if not readonly:
            Base.metadata.create_all(engine)
        self._check_schema()

    @classmethod
    def open(cls, folder: Path, readonly: bool | None = None) -> Catalog:
        """The catalog in ``folder``; ``readonly`` None: read-only when this user may not write."""
        if readonly is None:
            readonly = folder.is_dir() and not _writable(folder)
        db = folder / CATALOG_FILE
        with os_errors(db, "read" if readonly else "write"):
            if not readonly:
                folder.mkdir(parents=True, exist_ok=True)
            engine = create_engine(_sqlite_url(db, readonly))
            event.listen(engine, "connect", _sqlite_pragmas)
            if not readonly:
                # WAL lets queries read a consistent snapshot while an indexer writes. The mode
                # is stored in the file, so setting it once per writer is enough (and a reader
                # that may not write must not try).
                with engine.connect() as con:
                    con.exec_driver_sql("PRAGMA journal_mode=WAL")
            return cls(engine, readonly, str(db))

    def close(self) -> None:
        self.engine.dispose()

    # -- metadata -------------------------------------------------------------------------------
    def _check_schema(self) -> None:
        stored = self.get_meta("schema_version")
        if stored is None and not self.readonly:
            self.set_meta("schema_version", str(SCHEMA_VERSION))
        elif stored is not None and int(stored) > SCHEMA_VERSION:
            raise SchemaVersionError(
                f"this collection has catalog schema {stored}, newer than this vtsearch "
                f"understands ({SCHEMA_VERSION}); upgrade vtsearch to open it"
            )
        elif stored is not None and int(stored) < SCHEMA_VERSION:
            if self.readonly:
                raise SchemaVersionError(
                    f"this collection has catalog schema {stored} and needs an upgrade to "
                    f"{SCHEMA_VERSION}, which needs write access: run `vtsearch status` once as "
                    "a user who may write to the collection"
                )
            self._migrate(int(stored))

    @_writes
    def _migrate(self, stored: int) -> None:
        """Bring an older catalog up to ``SCHEMA_VERSION`` in one transaction."""
        with self.engine.begin() as con:
            if stored < 2:
                have = {c["name"] for c in inspect(con).get_columns("images")}
                for col in ("ctime_ns", "inode"):
                    if col not in have:
                        con.exec_driver_sql(f"ALTER TABLE images ADD COLUMN {col} INTEGER")
            con.execute(
                update(Meta).where(Meta.key == "schema_version").values(value=str(SCHEMA_VERSION))
            )

    def get_meta(self, key: str) -> str | None:
        with Session(self.engine) as s:
            row = s.get(Meta, key)
            return row.value if row else None

    @_writes
    def set_meta(self, key: str, value: str) -> None:
        with Session(self.engine) as s, s.begin():
            s.merge(Meta(key=key, value=value))

    def meta(self) -> dict[str, str]:
        with Session(self.engine) as s:
            return {m.key: m.value for m in s.scalars(select(Meta))}

    @_writes
    def bind_model(self, model_id: str, dim: int, revision: str = "") -> None:
        """Record the model of a new collection, or refuse one built by another model."""
        stored_model, stored_dim = self.get_meta("model_id"), self.get_meta("dim")
        if stored_model is None:
            with Session(self.engine) as s, s.begin():
                s.merge(Meta(key="model_id", value=model_id))
                s.merge(Meta(key="dim", value=str(dim)))
                s.merge(Meta(key="model_revision", value=revision))
                s.merge(Meta(key="created_at", value=str(time.time())))
            return
        stored_rev = self.get_meta("model_revision") or ""
        if stored_model == model_id and stored_rev != revision:
            raise ModelMismatchError(
                f"this collection was indexed with other weights of model '{model_id}' (revision "
                f"{stored_rev or 'unknown'}, installed {revision or 'unknown'}); re-index into a "
                "new collection with --db, or install the vtsearch version that built it"
            )
        if stored_model != model_id or int(stored_dim or 0) != dim:
            raise ModelMismatchError(
                f"this collection was indexed with model '{stored_model}' (dim {stored_dim}), "
                f"not '{model_id}' (dim {dim}); pass --model {stored_model}, or re-index into a "
                "new collection with --db"
            )

    # -- reads ----------------------------------------------------------------------------------
    def records(self, under: str | None = None) -> dict[str, FileRecord]:
        """Catalogued files by path, without vectors; ``under``: only those in that folder."""
        cols = (
            ImageRow.id,
            ImageRow.path,
            ImageRow.size,
            ImageRow.mtime_ns,
            ImageRow.sha256,
            ImageRow.status,
            ImageRow.ctime_ns,
            ImageRow.inode,
        )
        stmt = select(*cols)
        with Session(self.engine) as s:
            got = {r.path: FileRecord(*r) for r in s.execute(stmt)}
        if under is None:
            return got
        return {p: r for p, r in got.items() if is_under(p, under)}

    def indexed_by_hash(self, hashes: Iterable[str]) -> dict[str, list[FileRecord]]:
        """Indexed rows anywhere in the collection whose content hash is one of ``hashes``."""
        wanted = list(set(hashes))
        out: dict[str, list[FileRecord]] = {}
        cols = (
            ImageRow.id,
            ImageRow.path,
            ImageRow.size,
            ImageRow.mtime_ns,
            ImageRow.sha256,
            ImageRow.status,
            ImageRow.ctime_ns,
            ImageRow.inode,
        )
        with Session(self.engine) as s:
            for i in range(0, len(wanted), 500):
                stmt = select(*cols).where(
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

    def changes_since(
        self, seq: int, kind: str = "image"
    ) -> tuple[int, list[tuple[int, int, bytes]], list[tuple[int, int]]]:
        """Vectors written and removed after ``seq``, read in one snapshot.

        ``kind`` is ``"image"`` or ``"text"``. Returns ``(current_seq, [(id, vec_seq, vector)],
        [(id, tombstone_seq)])``.
        """
        current, _, added, removed = self.changes_marked(seq, kind)
        return current, added, removed

    def current_seq(self) -> int:
        return self.head()[0]

    def head(self) -> tuple[int, str | None]:
        """The current sequence number and its mark (None in catalogs older than schema 2)."""
        with Session(self.engine) as s:
            return _head(s)

    def mark_at(self, seq: int) -> str | None:
        """The mark this catalog gave sequence number ``seq``, or None when it has none."""
        with Session(self.engine) as s:
            return s.scalar(select(Commit.mark).where(Commit.seq == seq))

    def changes_marked(
        self, seq: int, kind: str = "image"
    ) -> tuple[int, str | None, list[tuple[int, int, bytes]], list[tuple[int, int]]]:
        """:meth:`changes_since`, with the mark of the returned sequence number (one snapshot)."""
        if kind == "image":
            row, tomb, live = ImageRow, Tombstone, ImageRow.status == "indexed"
        else:
            row, tomb, live = TextRow, TextTombstone, True
        with Session(self.engine) as s, s.begin():
            current, mark = _head(s)
            added = s.execute(
                select(row.id, row.vec_seq, row.vector).where(row.vec_seq > seq, live)
            ).all()
            removed = s.execute(select(tomb.id, tomb.seq).where(tomb.seq > seq)).all()
        return current, mark, [tuple(a) for a in added], [tuple(r) for r in removed]

    def max_image_id(self) -> int:
        """The highest image id ever committed (ids are never reused), 0 for none."""
        with Session(self.engine) as s:
            if self.engine.dialect.name == "sqlite":
                got = s.execute(
                    text("SELECT seq FROM sqlite_sequence WHERE name = 'images'")
                ).scalar()
                if got is not None:
                    return int(got)
            return int(s.scalar(select(func.max(ImageRow.id))) or 0)

    def dead_since(self, seq: int) -> tuple[int, list[int]]:
        """Ids whose vector was removed after ``seq`` and that are not live again, and the
        current sequence number, read in one snapshot."""
        with Session(self.engine) as s, s.begin():
            current = s.scalar(select(Meta.value).where(Meta.key == "seq"))
            live = select(ImageRow.id).where(ImageRow.status == "indexed")
            ids = s.scalars(
                select(Tombstone.id).where(Tombstone.seq > seq, Tombstone.id.not_in(live))
            ).all()
        return (int(current) if current else 0), list(ids)

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
    def _next_seq(self, s: Session) -> int:
        row = s.get(Meta, "seq")
        nxt = int(row.value) + 1 if row else 1
        mark = secrets.token_hex(8)
        s.merge(Meta(key="seq", value=str(nxt)))
        s.merge(Meta(key="mark", value=mark))
        s.merge(Commit(seq=nxt, mark=mark))
        return nxt

    @_writes
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

    @_writes
    def touch(self, updates: list[tuple[int, str, int, int, int | None, int | None]]) -> None:
        """Record a new path and stat (size, mtime, ctime, inode) for files whose content did not
        change (moved, touched)."""
        if not updates:
            return
        with Session(self.engine) as s, s.begin():
            # Paths first set aside, so two rows that swap paths never collide on uniqueness.
            for row_id, *_ in updates:
                s.execute(
                    update(ImageRow).where(ImageRow.id == row_id).values(path=f"\0moving:{row_id}")
                )
            for row_id, path, size, mtime_ns, ctime_ns, inode in updates:
                s.execute(
                    update(ImageRow)
                    .where(ImageRow.id == row_id)
                    .values(path=path, size=size, mtime_ns=mtime_ns, ctime_ns=ctime_ns, inode=inode)
                )

    @_writes
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
                s.execute(update(ImageRow).where(ImageRow.id.in_(chunk)).values(**values))

    @_writes
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

    # -- roots ----------------------------------------------------------------------------------
    def roots(self) -> list[str]:
        """The folders indexed into this collection, sorted."""
        with Session(self.engine) as s:
            return sorted(s.scalars(select(Root.path)))

    @_writes
    def add_root(self, path: str) -> None:
        """Record ``path`` as indexed, unless a root holds it; roots inside it are dropped (it
        covers them)."""
        with Session(self.engine) as s, s.begin():
            roots = s.scalars(select(Root.path)).all()
            if any(is_under(path, old) for old in roots):
                return
            for old in roots:
                if is_under(old, path):
                    s.execute(delete(Root).where(Root.path == old))
            s.add(Root(path=path, added_at=time.time()))

    @_writes
    def forget_root(self, path: str) -> int:
        """Drop a root and every row under it (their vectors tombstoned); returns the rows."""
        ids = [r.id for r in self.records(under=path).values()]
        self.remove(ids)
        with Session(self.engine) as s, s.begin():
            s.execute(delete(Root).where(Root.path == path))
        return len(ids)

    def count_under(self, path: str) -> int:
        return len(self.records(under=path))

    # -- texts ----------------------------------------------------------------------------------
    def known_texts(self, texts: Iterable[str]) -> set[str]:
        wanted = list(set(texts))
        found: set[str] = set()
        with Session(self.engine) as s:
            for i in range(0, len(wanted), 500):
                found.update(
                    s.scalars(select(TextRow.text).where(TextRow.text.in_(wanted[i : i + 500])))
                )
        return found

    @_writes
    def add_texts(self, texts: list[str], vectors: np.ndarray, source: str | None) -> list[int]:
        """Insert texts with their vectors in one transaction; returns their ids."""
        now = time.time()
        with Session(self.engine) as s, s.begin():
            seq = self._next_seq(s)
            rows = [
                TextRow(
                    text=t,
                    source=source,
                    vector=np.ascontiguousarray(v, np.float32).tobytes(),
                    vec_seq=seq,
                    added_at=now,
                )
                for t, v in zip(texts, vectors, strict=True)
            ]
            s.add_all(rows)
            s.flush()
            return [r.id for r in rows]

    def texts(self, ids: Iterable[int], vectors: bool = False) -> dict[int, StoredText]:
        """Texts by id, in one query (a removed text is absent); ``vectors``: with their stored
        vectors, for re-scoring and priors."""
        ids = list(ids)
        cols = [TextRow.id, TextRow.text, TextRow.source]
        if vectors:
            cols.append(TextRow.vector)
        with Session(self.engine) as s:
            return {
                row[0]: StoredText(
                    row[1], row[2], np.frombuffer(row[3], dtype=np.float32) if vectors else None
                )
                for row in s.execute(select(*cols).where(TextRow.id.in_(ids)))
            }

    def text_count(self) -> int:
        with Session(self.engine) as s:
            return int(s.scalar(select(func.count()).select_from(TextRow)) or 0)

    @_writes
    def remove_texts(self, source: str | None = None) -> int:
        """Remove the texts added from ``source`` (all texts when None); returns how many."""
        with Session(self.engine) as s, s.begin():
            stmt = select(TextRow.id)
            if source is not None:
                stmt = stmt.where(TextRow.source == source)
            ids = list(s.scalars(stmt))
            if not ids:
                return 0
            seq = self._next_seq(s)
            for row_id in ids:
                s.merge(TextTombstone(id=row_id, seq=seq))
            for i in range(0, len(ids), 500):
                s.execute(delete(TextRow).where(TextRow.id.in_(ids[i : i + 500])))
            return len(ids)


def _head(s: Session) -> tuple[int, str | None]:
    got = dict(s.execute(select(Meta.key, Meta.value).where(Meta.key.in_(("seq", "mark")))).all())
    return (int(got["seq"]) if got.get("seq") else 0), got.get("mark")


def is_under(path: str, folder: str) -> bool:
    """Whether ``path`` is ``folder`` or inside it (by path components, any separator).

    Example:
        >>> is_under("/a/b/c.jpg", "/a/b"), is_under("/a/bc.jpg", "/a/b"), is_under("/x", "/")
        (True, False, True)
    """
    return path == folder or path.startswith(os.path.join(folder, ""))
