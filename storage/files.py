"""Collection files: temp files that follow the umask, and OS errors as typed storage errors.

A collection may live in a folder a group shares, so its files are created with the modes the
user's umask allows (``tempfile.mkstemp`` would make them 0600 whatever the umask). A full disk
or a file this user may not read or write is reported as a one-line :class:`StorageError` that
names the file and the fix, never as a traceback.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
import sqlite3
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from vtsearch.errors import CollectionPermissionError, DiskFullError, StorageError

#: No room left: the disk, the user's quota, or the file system's largest file.
_NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
#: Not allowed: the file's or folder's mode, or a file system mounted read-only.
_DENIED = {errno.EACCES, errno.EPERM, errno.EROFS}
#: SQLite reports these as ``OperationalError`` text, not as an errno.
_SQLITE_FULL = ("database or disk is full",)
_SQLITE_DENIED = ("attempt to write a readonly database", "unable to open database file")


def create_temp(folder: Path, prefix: str, suffix: str = ".tmp") -> Path:
    """Create an empty file under a random name in ``folder`` and return its path.

    The file is created with mode 0666 less the umask, like any file the user creates, so that
    renaming it over a collection file gives the group the access the user meant it to have.

    Args:
        folder: Where to create it (the folder of the file it will replace, so the rename is
            atomic).
        prefix: Start of the name, e.g. ``".tokens-"``.
        suffix: End of the name.

    Returns:
        The path of the new, empty file; the caller renames or deletes it.

    Raises:
        OSError: The file cannot be created (wrap the call in :func:`os_errors`).

    Example:
        >>> import tempfile
        >>> create_temp(Path(tempfile.mkdtemp()), ".x-").stat().st_size
        0
    """
    flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY | getattr(os, "O_CLOEXEC", 0)
    while True:
        path = folder / f"{prefix}{secrets.token_hex(8)}{suffix}"
        try:
            fd = os.open(path, flags, 0o666)
        except FileExistsError:  # 64 random bits: only ever a stale file of a crashed run
            continue
        os.close(fd)
        return path


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def _free(path: Path) -> int | None:
    """Bytes free on the file system of ``path`` (or of its nearest existing folder)."""
    for folder in (path, *path.parents):
        try:
            return shutil.disk_usage(folder).free
        except OSError:
            continue
    return None


def _database_text(exc: BaseException) -> str | None:
    """SQLite's message in an ``OperationalError`` of sqlite3 or SQLAlchemy, else None."""
    if isinstance(exc, sqlite3.OperationalError):
        return str(exc)
    # Looked up, not imported: SQLAlchemy costs 0.1 s to import, and an exception of its class
    # can only exist once the catalog has imported it.
    sa_exc = sys.modules.get("sqlalchemy.exc")
    if sa_exc is not None and isinstance(exc, sa_exc.OperationalError):
        return str(exc.orig)
    return None


def storage_error(
    path: Path | str, exc: BaseException, action: str = "write", needed: int | None = None
) -> StorageError | None:
    """The typed error that says what went wrong with ``path`` and what to do, or None.

    Args:
        path: The collection file (or folder) the operation was on; the message names it.
        exc: What the operation raised: an ``OSError``, or an ``OperationalError`` of sqlite3
            or SQLAlchemy.
        action: The verb for the message: ``"read"``, ``"write"``, ``"grow"``, ...
        needed: Bytes the operation needed, when known (a full disk's message tells it).

    Returns:
        :class:`DiskFullError` for a full disk or quota, :class:`CollectionPermissionError` for
        a file or folder this user may not access or a read-only file system, None for any
        other error (the caller lets it through unchanged).

    Example:
        >>> e = storage_error("/c/tokens.json", PermissionError(errno.EACCES, "denied"), "read")
        >>> type(e).__name__, str(e).split(";")[0]
        ('CollectionPermissionError', 'cannot read /c/tokens.json: permission denied')
    """
    path = Path(path)
    code = exc.errno if isinstance(exc, OSError) else None
    text = _database_text(exc) or ""
    if code in _NO_SPACE or any(t in text for t in _SQLITE_FULL):
        if code == errno.EFBIG:
            return DiskFullError(
                f"file too large: cannot {action} {path} beyond the largest file its file system "
                "holds; move the collection to another disk (--db)"
            )
        what = "disk quota exceeded" if code == errno.EDQUOT else "disk full"
        by = f" by {_size(needed)}" if needed else ""
        free = _free(path)
        left = f" ({_size(free)} free)" if free is not None and code != errno.EDQUOT else ""
        return DiskFullError(
            f"{what}: cannot {action} {path}{by}{left}; free some space and run the same "
            "command again"
        )
    if code == errno.EROFS:
        return CollectionPermissionError(
            f"cannot {action} {path}: read-only file system; use a collection on a writable "
            "disk (--db)"
        )
    if code in _DENIED or any(t in text for t in _SQLITE_DENIED):
        if code not in _DENIED:
            # SQLite does not say whether a mode, a folder or a read-only disk was in the way.
            fix = (
                "check that this user may write it and its folder and that its disk is not "
                "read-only, or use your own --db"
            )
            return CollectionPermissionError(f"cannot {action} {path}: {text}; {fix}")
        if action == "read":
            fix = "ask the collection's owner to make it readable (chmod g+r) or use your own --db"
        else:
            fix = (
                "ask the collection's owner to make it and its folder writable (chmod g+w) "
                "or use your own --db"
            )
        return CollectionPermissionError(f"cannot {action} {path}: permission denied; {fix}")
    return None


@contextmanager
def os_errors(path: Path | str, action: str = "write", needed: int | None = None) -> Iterator[None]:
    """Re-raise a full disk or a denied access inside the block as a typed storage error.

    Other errors, typed errors raised inside included, pass through unchanged.

    Args:
        path: The file the block reads or writes (the message names it).
        action: The verb for the message (see :func:`storage_error`).
        needed: Bytes the block needs, when known.

    Example:
        >>> with os_errors("/nowhere/catalog.db", "read"):
        ...     Path("/nowhere/catalog.db").read_text()
        Traceback (most recent call last):
        FileNotFoundError: [Errno 2] No such file or directory: '/nowhere/catalog.db'
    """
    try:
        yield
    except Exception as exc:
        typed = storage_error(path, exc, action, needed)
        if typed is None:
            raise
        raise typed from exc
