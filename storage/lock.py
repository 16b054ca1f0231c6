"""One writer per collection: a lock file the OS releases when its process dies, so a killed
indexer never leaves a stale lock behind; with a catalog on PostgreSQL, also the database's
advisory lock, which the server releases when the holder's connection drops (writers on other
machines share the catalog, not the folder's lock file)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from vtsearch.errors import CollectionPermissionError, IndexLockedError

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

LOCK_FILE = "index.lock"
#: The advisory lock's key: one collection per database, so any constant will do ("vtsw").
WRITER_KEY = 0x76747377


@contextmanager
def write_lock(folder: Path, server: Engine | None = None) -> Iterator[None]:
    """Hold the collection's write lock (and ``server``'s advisory lock), or fail at once.

    Raises:
        IndexLockedError: another process is writing to the collection.
        CollectionPermissionError: this user may not write to it.
    """
    from filelock import FileLock, Timeout

    lock_path = folder / LOCK_FILE
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(lock_path))
        lock.acquire(timeout=0)
    except Timeout as e:
        raise IndexLockedError(
            f"another vtsearch process is writing to {folder}; wait for it to finish"
        ) from e
    except PermissionError as e:
        raise CollectionPermissionError(
            f"cannot write to the collection {folder} ({lock_path}: permission denied); "
            "searching it works read-only, index into a collection of your own with --db"
        ) from e
    try:
        if server is None:
            yield
        else:
            with advisory_lock(server, folder):
                yield
    finally:
        lock.release()


@contextmanager
def advisory_lock(engine: Engine, folder: Path | str) -> Iterator[None]:
    """Hold the catalog database's writer lock on a connection of its own, or fail at once.

    Raises:
        IndexLockedError: another process (on any machine) holds it.
    """
    from sqlalchemy import text

    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as con:
        if not con.scalar(text("SELECT pg_try_advisory_lock(:k)"), {"k": WRITER_KEY}):
            raise IndexLockedError(
                f"another vtsearch process is writing to the catalog of {folder} (on this or "
                "another machine); wait for it to finish"
            )
        try:
            yield
        finally:
            # A connection that dropped has lost the lock already (the server ends a session's
            # locks with it); its error must not hide the run's own.
            with contextlib.suppress(Exception):
                con.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": WRITER_KEY})
