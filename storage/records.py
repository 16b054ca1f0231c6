"""What the catalog hands out and takes in: a file's record, a stored text, a new image row."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime

import numpy as np


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


def is_under(path: str, folder: str) -> bool:
    """Whether ``path`` is ``folder`` or inside it (by path components, any separator).

    Example:
        >>> is_under("/a/b/c.jpg", "/a/b"), is_under("/a/bc.jpg", "/a/b"), is_under("/x", "/")
        (True, False, True)
    """
    return path == folder or path.startswith(os.path.join(folder, ""))


def root_of(path: str, roots: list[str]) -> str | None:
    """The innermost of ``roots`` that holds ``path``, or None.

    Example:
        >>> root_of("/a/b/c.jpg", ["/a", "/a/b", "/x"]), root_of("/y/z.jpg", ["/a"])
        ('/a/b', None)
    """
    holding = [r for r in roots if is_under(path, r)]
    return max(holding, key=len) if holding else None
