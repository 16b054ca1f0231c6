"""Walk a folder and diff what is there against the catalog."""

from __future__ import annotations

import errno
import hashlib
import os
import stat as statmod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from vtsearch.storage.catalog import FileRecord


@dataclass(frozen=True)
class FileStat:
    path: str
    size: int
    mtime_ns: int


@dataclass
class Plan:
    """What a run must do, decided from file stats and content hashes."""

    #: Files to decode and embed: ``(stat, sha256, id of the row they overwrite or None)``.
    embed: list[tuple[FileStat, str | None, int | None]] = field(default_factory=list)
    #: Rows whose file moved or was touched without a content change: ``(id, new stat)``.
    relink: list[tuple[int, FileStat]] = field(default_factory=list)
    #: New paths whose content is already indexed elsewhere: ``(stat, sha256)``, vector reused.
    copy: list[tuple[FileStat, str]] = field(default_factory=list)
    #: Rows whose file is gone.
    delete: list[int] = field(default_factory=list)
    unchanged: int = 0
    #: Files found but not usable before decoding (unreadable, too large): ``(stat, reason)``.
    #: A folder that could not be listed is here too, its path ending in ``os.sep``.
    rejected: list[tuple[FileStat, str]] = field(default_factory=list)


def scan_folder(
    root: Path, extensions: Iterable[str], max_bytes: int
) -> tuple[list[FileStat], list[tuple[FileStat, str]]]:
    """Image files under ``root`` (recursively, following no symlinked folders) and rejects.

    A rejected entry whose path ends in ``os.sep`` is a folder that could not be listed: the files
    catalogued under it are kept as they are (see ``plan_changes``), not taken for deleted.
    """
    exts = {e.lower() for e in extensions}
    found: list[FileStat] = []
    rejected: list[tuple[FileStat, str]] = []
    unlisted: list[tuple[FileStat, str]] = []
    for path in _walk(root, unlisted):
        if os.path.splitext(path)[1].lower() not in exts:
            continue
        try:
            st = os.stat(path)
        except OSError as e:
            rejected.append((FileStat(path, 0, 0), _stat_error(path, e)))
            continue
        stat = FileStat(path, st.st_size, st.st_mtime_ns)
        if not statmod.S_ISREG(st.st_mode):
            rejected.append((stat, "not a regular file (a pipe, socket or device)"))
        elif st.st_size == 0:
            rejected.append((stat, "empty file (0 bytes)"))
        elif st.st_size > max_bytes:
            rejected.append((stat, f"file larger than the limit of {max_bytes} bytes"))
        else:
            found.append(stat)
    found.sort(key=lambda f: f.path)
    return found, rejected + unlisted


def _stat_error(path: str, e: OSError) -> str:
    if e.errno == errno.ELOOP:
        return "symbolic link loop"
    if os.path.islink(path) and e.errno == errno.ENOENT:
        return f"broken symbolic link (to {os.readlink(path)!r})"
    return f"cannot stat: {e.strerror or e}"


def _walk(root: Path, unlisted: list[tuple[FileStat, str]]) -> Iterator[str]:
    # Symlinked files are followed, symlinked folders are not: that rules out loops.
    def onerror(e: OSError) -> None:
        folder = os.path.join(e.filename or str(root), "")
        unlisted.append((FileStat(folder, 0, 0), f"cannot list folder: {e.strerror or e}"))

    for dirpath, dirnames, filenames in os.walk(root, onerror=onerror, followlinks=False):
        dirnames.sort()
        for name in filenames:
            yield os.path.join(dirpath, name)


def file_sha256(path: str, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def plan_changes(
    files: list[FileStat],
    known: dict[str, FileRecord],
    rejected: list[tuple[FileStat, str]] | None = None,
) -> Plan:
    """Diff the scan against the catalog: unchanged by size+mtime, then by content hash."""
    plan = Plan(rejected=list(rejected or []))
    present = {f.path for f in files} | {r[0].path for r in plan.rejected}
    # Files under a folder that could not be listed are not gone: keep them as they are.
    hidden = tuple(r[0].path for r in plan.rejected if r[0].path.endswith(os.sep))
    if hidden:
        present |= {p for p in known if p.startswith(hidden)}
    vanished = {r.sha256: r for p, r in known.items() if p not in present and r.sha256}
    indexed_hashes = {r.sha256 for r in known.values() if r.status == "indexed" and r.sha256}
    claimed: set[int] = set()

    for f in files:
        rec = known.get(f.path)
        if rec is not None and rec.size == f.size and rec.mtime_ns == f.mtime_ns:
            plan.unchanged += 1
            continue
        try:
            digest = file_sha256(f.path)
        except OSError as e:
            plan.rejected.append((f, f"cannot read: {e.strerror or e}"))
            continue
        if rec is not None:
            if digest == rec.sha256 and rec.status == "indexed":
                plan.relink.append((rec.id, f))  # touched, same bytes
            else:
                plan.embed.append((f, digest, rec.id))
            continue
        moved = vanished.get(digest)
        if moved is not None and moved.id not in claimed and moved.status == "indexed":
            claimed.add(moved.id)
            plan.relink.append((moved.id, f))
        elif digest in indexed_hashes:
            plan.copy.append((f, digest))
        else:
            plan.embed.append((f, digest, None))

    plan.delete = [r.id for p, r in known.items() if p not in present and r.id not in claimed]
    return plan
