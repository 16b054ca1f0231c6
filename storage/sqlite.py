"""The SQLite side of the catalog: the database URL (any path, read-only readers), connection
settings, and writes whose disk or permission errors name the file."""

from __future__ import annotations

import functools
import os
import urllib.parse
from pathlib import Path

from sqlalchemy import URL

from vtsearch.storage.files import os_errors

CATALOG_FILE = "catalog.db"


def sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    # FULL: a committed batch survives a power cut too, so it is never embedded twice. One fsync
    # per batch of images costs nothing next to the embedding. Neither pragma writes the file.
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def writable(folder: Path) -> bool:
    db = folder / CATALOG_FILE
    if db.exists() and not os.access(db, os.W_OK):
        return False
    return os.access(folder, os.W_OK)


def sqlite_url(db: Path, readonly: bool) -> URL:
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


def file_signature(db: Path) -> tuple:
    """What changes when a writer touches the database: the file's identity, size and time, and
    whether a write-ahead log exists beside it."""
    try:
        st = os.stat(db)
        sig: tuple = (st.st_ino, st.st_size, st.st_mtime_ns)
    except OSError:
        sig = ()
    return (*sig, Path(str(db) + "-wal").exists())


def writes(method):
    """A full disk or a database this user may not write is a typed error naming the file."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with os_errors(self.location, "write"):
            return method(self, *args, **kwargs)

    return wrapper
