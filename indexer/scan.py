"""Walk a folder and diff what is there against the catalog."""

from __future__ import annotations

import errno
import hashlib
import os
import stat as statmod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from vtsearch.storage.catalog import FileRecord, is_under


@dataclass(frozen=True)
class FileStat:
    path: str
    size: int
    mtime_ns: int
    #: Inode change time and number: an edit in place that keeps size and mtime moves them.
    ctime_ns: int | None = None
    inode: int | None = None

    def same_as(self, rec: FileRecord) -> bool:
        """Whether ``rec`` still describes this file without reading it. A row written before
        change times were recorded goes by size and mtime alone."""
        if (rec.size, rec.mtime_ns) != (self.size, self.mtime_ns):
            return False
        return rec.ctime_ns is None or (rec.ctime_ns, rec.inode) == (self.ctime_ns, self.inode)


#: Called with (files hashed, files to hash) while a run reads new and changed files.
HashProgress = Callable[[int, int], None]


@dataclass
class Plan:
    """What a run must do, decided from file stats and content hashes."""

    #: Files to decode and embed: ``(stat, sha256, id of the row they overwrite or None)``.
    embed: list[tuple[FileStat, str | None, int | None]] = field(default_factory=list)
    #: Rows whose file moved (a new path, same content, anywhere in the collection before):
    #: ``(id, new stat)``.
    relink: list[tuple[int, FileStat]] = field(default_factory=list)
    #: Rows whose file kept its path and content but not its stat (touched, chmod, or a row
    #: written before change times were recorded): ``(id, new stat)``.
    refresh: list[tuple[int, FileStat]] = field(default_factory=list)
    #: New paths whose content is already indexed elsewhere: ``(stat, sha256)``, vector reused.
    copy: list[tuple[FileStat, str]] = field(default_factory=list)
    #: Rows whose file is gone.
    delete: list[int] = field(default_factory=list)
    unchanged: int = 0
    #: Files found but not usable before decoding (unreadable, too large): ``(stat, reason)``.
    #: A folder that could not be listed is here too, its path ending in ``os.sep``.
    rejected: list[tuple[FileStat, str]] = field(default_factory=list)
    #: Files that could not be used this time while their row holds a good vector, which is
    #: kept (the next run tries again): ``(path, reason)``.
    kept: list[tuple[str, str]] = field(default_factory=list)
    #: The plan was cut short by a stop request: none of it may be applied.
    interrupted: bool = False


class Stopped(Exception):
    """A stop request arrived while scanning or hashing."""


def scan_folder(
    root: Path,
    extensions: Iterable[str],
    max_bytes: int,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[list[FileStat], list[tuple[FileStat, str]]]:
    """Image files under ``root`` (recursively, following no symlinked folders) and rejects.

    A rejected entry whose path ends in ``os.sep`` is a folder that could not be listed: the files
    catalogued under it are kept as they are (see ``plan_changes``), not taken for deleted.
    Raises :class:`Stopped` when ``should_stop`` says so (polled every folder).
    """
    unlisted: list[tuple[FileStat, str]] = []
    found, rejected = stat_files(_walk(root, unlisted, should_stop), extensions, max_bytes)
    return found, rejected + unlisted


def stat_files(
    paths: Iterable[str], extensions: Iterable[str], max_bytes: int
) -> tuple[list[FileStat], list[tuple[FileStat, str]]]:
    """The image files among ``paths`` (by extension), sorted, and those that cannot be used
    with the reason: what :func:`scan_folder` finds in a folder, for a given list (a manifest)."""
    exts = {e.lower() for e in extensions}
    found: list[FileStat] = []
    rejected: list[tuple[FileStat, str]] = []
    for path in paths:
        if os.path.splitext(path)[1].lower() not in exts:
            continue
        try:
            st = os.stat(path)
        except OSError as e:
            rejected.append((FileStat(path, 0, 0), _stat_error(path, e)))
            continue
        stat = FileStat(path, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
        if not statmod.S_ISREG(st.st_mode):
            rejected.append((stat, "not a regular file (a pipe, socket or device)"))
        elif st.st_size == 0:
            rejected.append((stat, "empty file (0 bytes)"))
        elif st.st_size > max_bytes:
            rejected.append((stat, f"file larger than the limit of {max_bytes} bytes"))
        else:
            found.append(stat)
    found.sort(key=lambda f: f.path)
    return found, rejected


def _stat_error(path: str, e: OSError) -> str:
    if e.errno == errno.ELOOP:
        return "symbolic link loop"
    if os.path.islink(path) and e.errno == errno.ENOENT:
        return f"broken symbolic link (to {os.readlink(path)!r})"
    return f"cannot stat: {e.strerror or e}"


def _walk(
    root: Path, unlisted: list[tuple[FileStat, str]], should_stop: Callable[[], bool] | None
) -> Iterator[str]:
    # Symlinked files are followed, symlinked folders are not: that rules out loops.
    def onerror(e: OSError) -> None:
        folder = os.path.join(e.filename or str(root), "")
        unlisted.append((FileStat(folder, 0, 0), f"cannot list folder: {e.strerror or e}"))

    for dirpath, dirnames, filenames in os.walk(root, onerror=onerror, followlinks=False):
        if should_stop and should_stop():
            raise Stopped
        dirnames.sort()
        for name in filenames:
            yield os.path.join(dirpath, name)


def file_sha256(
    path: str, chunk: int = 1 << 20, should_stop: Callable[[], bool] | None = None
) -> str:
    """SHA-256 of a file's bytes; raises :class:`Stopped` between chunks when asked to stop (a
    large file on a network drive takes a while)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
            if should_stop and should_stop():
                raise Stopped
    return h.hexdigest()


#: Looks up indexed rows anywhere in the collection by content hash (``Catalog.indexed_by_hash``).
HashLookup = Callable[[Iterable[str]], dict[str, list[FileRecord]]]


def plan_changes(
    files: list[FileStat],
    known: dict[str, FileRecord],
    rejected: list[tuple[FileStat, str]] | None = None,
    *,
    root: str | None = None,
    elsewhere: HashLookup | None = None,
    should_stop: Callable[[], bool] | None = None,
    progress: HashProgress | None = None,
) -> Plan:
    """Diff the scan against the catalog: unchanged by stat, then by content hash.

    ``known`` holds the rows this scan could have seen (under ``root``, of the extensions
    scanned): only they can be deleted. ``elsewhere`` finds rows with a given content anywhere in
    the collection, so a file that moved in from another folder (a renamed root) keeps its vector
    and row, and a copy of a file indexed elsewhere reuses its vector. Failed rows are always
    tried again. A file that cannot be used this time never costs a row its good vector.
    """
    plan = Plan()
    present = {f.path for f in files} | {r[0].path for r in rejected or []}
    # Files under a folder that could not be listed are not gone: keep them as they are.
    hidden = tuple(r[0].path for r in rejected or [] if r[0].path.endswith(os.sep))
    if hidden:
        present |= {p for p in known if p.startswith(hidden)}
    _plan_rejects(plan, rejected or [], known)
    vanished = {r.sha256: r for p, r in known.items() if p not in present and r.sha256}
    claimed: set[int] = set()

    todo = []
    for f in files:
        rec = known.get(f.path)
        if rec is not None and rec.status == "indexed" and f.same_as(rec):
            plan.unchanged += 1
            if rec.ctime_ns is None:
                plan.refresh.append((rec.id, f))  # record the change time it lacked
        else:
            todo.append(f)
    hashed = _hash_all(todo, plan, known, should_stop, progress)
    if plan.interrupted:
        return plan
    # Rows elsewhere with the content of a file new here: moved in, or copied.
    new_digests = [d for f, d in hashed if f.path not in known and d not in vanished]
    others = elsewhere(new_digests) if elsewhere and new_digests else {}
    here = {r.sha256 for r in known.values() if r.status == "indexed" and r.sha256}

    for f, digest in hashed:
        rec = known.get(f.path)
        if rec is not None:
            if digest == rec.sha256 and rec.status == "indexed":
                plan.refresh.append((rec.id, f))  # touched, same bytes
                plan.unchanged += 1
            else:
                plan.embed.append((f, digest, rec.id))
            continue
        moved = vanished.get(digest)
        if moved is None or moved.id in claimed or moved.status != "indexed":
            moved = _moved_in(others.get(digest, ()), claimed, root)
        if moved is not None:
            claimed.add(moved.id)
            plan.relink.append((moved.id, f))
        elif digest in here or others.get(digest):
            plan.copy.append((f, digest))
        else:
            plan.embed.append((f, digest, None))

    plan.delete = [r.id for p, r in known.items() if p not in present and r.id not in claimed]
    return plan


def _plan_rejects(
    plan: Plan, rejected: list[tuple[FileStat, str]], known: dict[str, FileRecord]
) -> None:
    """Rejected files: a good row stays (the reason may pass: a limit, a permission, a network
    drive); a row that is already failed, or none, records the reason."""
    for f, reason in rejected:
        rec = known.get(f.path)
        if rec is None or rec.status != "indexed":
            plan.rejected.append((f, reason))
        elif not (reason.startswith("file larger than") and f.same_as(rec)):
            plan.kept.append((f.path, reason))
        else:
            plan.unchanged += 1  # indexed before under a higher limit, and unchanged since


def _hash_all(
    todo: list[FileStat],
    plan: Plan,
    known: dict[str, FileRecord],
    should_stop: Callable[[], bool] | None,
    progress: HashProgress | None,
) -> list[tuple[FileStat, str]]:
    hashed = []
    for n, f in enumerate(todo):
        if progress:
            progress(n, len(todo))
        try:
            if should_stop and should_stop():
                raise Stopped
            hashed.append((f, file_sha256(f.path, should_stop=should_stop)))
        except Stopped:
            plan.interrupted = True
            return []
        except OSError as e:
            reason = f"cannot read: {e.strerror or e}"
            rec = known.get(f.path)
            if rec is not None and rec.status == "indexed":
                plan.kept.append((f.path, reason))
            else:
                plan.rejected.append((f, reason))
    if progress:
        progress(len(todo), len(todo))
    return hashed


def _moved_in(
    candidates: Iterable[FileRecord], claimed: set[int], root: str | None
) -> FileRecord | None:
    """A row outside ``root`` with this content whose file is gone: the file moved here."""
    for rec in candidates:
        if rec.id in claimed or (root is not None and is_under(rec.path, root)):
            continue
        if not os.path.lexists(rec.path):
            return rec
    return None


def read_manifest(path: Path) -> tuple[Path, list[str]]:
    """The files a manifest lists (one absolute path per line; blank lines and ``#`` comments
    skipped), their folders resolved as a walk of a resolved root spells them (links too), and
    the folder they share. A manifest run adds and updates the files it lists and leaves every
    other row alone: several lists may share a folder.

    Raises:
        ConfigError: the manifest cannot be read, lists nothing, or lists a relative path.
    """
    from vtsearch.errors import ConfigError

    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read the manifest {path}: {e.strerror or e}") from e
    paths = []
    for line in raw.splitlines():
        name = os.fsdecode(line.strip())
        if not name or name.startswith("#"):
            continue
        if not os.path.isabs(name):
            raise ConfigError(f"the manifest {path} lists {name!r}: give absolute paths")
        folder, base = os.path.split(os.path.normpath(name))
        paths.append(os.path.join(os.path.realpath(folder), base))
    if not paths:
        raise ConfigError(f"the manifest {path} lists no files")
    root = Path(os.path.commonpath([os.path.dirname(p) for p in paths]))
    return root, paths
