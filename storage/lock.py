"""One writer per collection: a lock file the OS releases when its process dies, so a killed
indexer never leaves a stale lock behind."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from vtsearch.errors import CollectionPermissionError, IndexLockedError

LOCK_FILE = "index.lock"


@contextmanager
def write_lock(folder: Path) -> Iterator[None]:
    """Hold the collection's write lock, or fail at once.

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
        yield
    finally:
        lock.release()
