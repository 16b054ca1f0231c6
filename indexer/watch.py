"""Keep a collection current while folders change: file events, debounced into index runs.

A watchdog observer follows each watched folder (recursively). Events of image files (and of
folders: one moved away takes its images with it) are collected; once no new one has come for
``debounce`` seconds, or ``max_delay`` seconds after the first of a steady stream, the folders
they came from get one ordinary incremental index run each (the caller's ``run``, which takes the
collection's write lock for that run only, so queries, ``vtsearch status`` and ``vtsearch check``
work between runs). The index run diffs the whole folder against the catalog, so one event or a
thousand cost the same single run, and a move is matched by content hash as in any run.

File events can be missed (watchdog on a network drive, an inotify queue overflow, a folder that
was unmounted while watched): every ``rescan_every`` seconds without a run, a full run catches up
whatever happened. A run that cannot happen now (another process holds the write lock, a folder
looks empty or is gone, a full disk) is reported and tried again later, with a growing pause.

``should_stop`` is polled between runs and inside them: what was embedded is committed, and the
collection is as consistent as after any interrupted run. Nothing is printed: each run is reported
through ``on_run``.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from watchdog import events as wd
from watchdog.observers import Observer

from vtsearch.errors import (
    CollectionNotFoundError,
    ConfigError,
    DiskFullError,
    IndexLockedError,
    RootError,
)
from vtsearch.indexer.pipeline import IndexReport

#: Errors after which a watch goes on: the run is reported with the error and tried again.
RETRIED = (IndexLockedError, RootError, DiskFullError, CollectionNotFoundError)
#: The events a watch asks the observer for. Opening and reading a file (the indexer hashing and
#: decoding it) makes none of them, so runs never wake the watch up again.
_EVENTS = [
    wd.FileCreatedEvent,
    wd.FileModifiedEvent,
    wd.FileDeletedEvent,
    wd.FileMovedEvent,
    wd.FileClosedEvent,
    wd.DirCreatedEvent,
    wd.DirDeletedEvent,
    wd.DirMovedEvent,
    *[getattr(wd, n) for n in ("FileAttribEvent",) if hasattr(wd, n)],  # watchdog 6+: touch
]
_EVENT_TYPES = {cls.event_type for cls in _EVENTS}
#: The longest pause between tries of a run that could not happen.
MAX_RETRY_SECONDS = 300.0

#: Runs one incremental index run of a folder (None: every folder of the collection) under the
#: collection's write lock, polling the given stop callback; returns its report.
RunIndex = Callable[[Path | None, Callable[[], bool]], IndexReport]


@dataclass
class WatchRun:
    """One index run of a watch (or one that could not happen; see ``error``)."""

    #: "start" (the run that brings the collection up to date first), "changes" (file events)
    #: or "rescan" (the periodic full run that catches missed events).
    reason: str
    #: The folder run over; None for every folder of the collection.
    root: str | None
    #: Files and folders with events that led to the run (0 for "start" and "rescan").
    changes: int = 0
    #: What the run did; None when it could not happen.
    report: IndexReport | None = None
    #: Why the run could not happen this time (it is tried again), else None.
    error: str | None = None


@dataclass
class WatchReport:
    """What a whole watch did, until it was stopped."""

    #: Runs that happened (interrupted ones included).
    runs: int = 0
    #: Runs that could not happen and were tried again.
    retried: int = 0
    #: Every run's report added up.
    total: IndexReport = field(default_factory=IndexReport)


class _Pending:
    """Paths with events since the last run, by watched folder; filled by the observer's thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._paths: dict[Path, set[str]] = {}
        self.first: float | None = None
        self.last: float | None = None
        #: No run for the pending paths before this time (a run that could not happen).
        self.hold_until = 0.0

    def add(self, root: Path, paths: Iterable[str]) -> None:
        now = time.monotonic()
        with self._lock:
            self._paths.setdefault(root, set()).update(paths)
            self.first = now if self.first is None else self.first
            self.last = now

    def due(self, now: float, debounce: float, max_delay: float) -> bool:
        with self._lock:
            if not self._paths or now < self.hold_until:
                return False
            assert self.first is not None and self.last is not None
            return now - self.last >= debounce or now - self.first >= max_delay

    def take(self) -> dict[Path, set[str]]:
        """Everything pending, which is forgotten."""
        with self._lock:
            got, self._paths = self._paths, {}
            self.first = self.last = None
            return got


class _Handler(wd.FileSystemEventHandler):
    """Records the relevant events of one watched folder."""

    def __init__(
        self, pending: _Pending, root: Path, extensions: set[str], ignore: tuple[str, ...]
    ) -> None:
        self.pending, self.root, self.extensions, self.ignore = pending, root, extensions, ignore

    def on_any_event(self, event: wd.FileSystemEvent) -> None:
        paths = [os.fsdecode(p) for p in (event.src_path, event.dest_path) if p]
        if event.event_type not in _EVENT_TYPES or not paths:
            return
        if not event.is_directory:
            paths = [p for p in paths if os.path.splitext(p)[1].lower() in self.extensions]
        elif event.event_type not in ("created", "deleted", "moved"):
            return
        # The collection's own files (its thumbnails are JPEGs) when it lives in a watched folder.
        paths = [p for p in paths if not p.startswith(self.ignore)]
        if paths:
            self.pending.add(self.root, paths)


def watch_folders(
    folder: Path | None,
    recorded_roots: Callable[[], list[str]],
    run: RunIndex,
    *,
    extensions: Iterable[str],
    debounce: float = 2.0,
    max_delay: float = 30.0,
    rescan_every: float = 600.0,
    ignore: Iterable[Path] = (),
    on_run: Callable[[WatchRun], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    poll: float = 0.1,
    observer_factory: Callable[[], object] | None = None,
) -> WatchReport:
    """Index ``folder`` (None: every folder ``recorded_roots`` names), then keep it current
    until ``should_stop`` says so.

    Args:
        folder: The folder to watch, or None for the collection's recorded folders (read again
            at every rescan, so one indexed meanwhile is watched from then on and one removed is
            no longer).
        recorded_roots: The collection's folders.
        run: One index run (see :data:`RunIndex`).
        extensions: The image file extensions the runs index; other files' events are ignored.
        debounce: Seconds without a new event before the events so far become a run.
        max_delay: Seconds after the first event of a steady stream when a run starts anyway.
        rescan_every: Seconds without a run after which a full run catches missed events.
        ignore: Folders whose events do not count (the collection's own).
        on_run: Called after each run, or each run that could not happen, with a
            :class:`WatchRun`.
        should_stop: Polled every ``poll`` seconds and inside each run.
        observer_factory: Makes the observer; default watchdog's ``Observer`` (inotify on Linux).

    Returns:
        What the watch did, once stopped.

    Raises:
        ConfigError: no folder to watch, or the system's limit of inotify watches is reached.
    """
    stopped = should_stop or (lambda: False)
    exts = {e.lower() for e in extensions}
    skip = tuple(os.path.join(os.path.realpath(p), "") for p in ignore)
    pending = _Pending()
    observer = (observer_factory or Observer)()
    watched: dict[Path, object] = {}
    report = WatchReport()
    retry = {"pause": 0.0}

    def targets() -> list[Path]:
        return [folder] if folder is not None else [Path(r) for r in recorded_roots()]

    def follow_folders() -> None:
        """Watch the folders not watched yet that exist; stop watching removed roots."""
        wanted = {Path(os.path.realpath(r)): r for r in targets()}
        for key in [k for k in watched if k not in wanted]:
            observer.unschedule(watched.pop(key))  # type: ignore[attr-defined]
        for key in wanted:
            if key in watched or not key.is_dir():
                continue  # a missing folder is caught by a rescan once it is back
            handler = _Handler(pending, key, exts, skip)
            try:
                watched[key] = observer.schedule(  # type: ignore[attr-defined]
                    handler, str(key), recursive=True, event_filter=_EVENTS
                )
            except OSError as e:
                if e.errno in (errno.ENOSPC, errno.EMFILE):
                    raise ConfigError(
                        f"cannot watch {key}: the system's limit of inotify watches is reached; "
                        "raise it (sudo sysctl fs.inotify.max_user_watches=1048576) or run "
                        "`vtsearch index` from time to time instead"
                    ) from e
                # Gone between the check and the watch: the next rescan tries again.

    def index_run(reason: str, root: Path | None, changes: int) -> bool:
        """One run, reported; False when it could not happen (it is held back a while)."""
        try:
            got = run(root, stopped)
        except RETRIED as e:
            retry["pause"] = min(MAX_RETRY_SECONDS, max(5.0, 2 * retry["pause"]))
            report.retried += 1
            if on_run:
                on_run(WatchRun(reason, _shown(root), changes, error=str(e)))
            return False
        retry["pause"] = 0.0
        report.runs += 1
        report.total.merge(got)
        if on_run:
            on_run(WatchRun(reason, _shown(root), changes, report=got))
        return True

    if folder is None and not recorded_roots():
        raise ConfigError(
            "no folders are recorded in the collection yet: vtsearch index --watch FOLDER"
        )
    follow_folders()
    observer.start()  # type: ignore[attr-defined]  # before the first run: no change is missed
    try:
        pending.take()
        ok = index_run("start", folder, 0)
        next_rescan = time.monotonic() + (rescan_every if ok else retry["pause"])
        while not stopped():
            now = time.monotonic()
            if pending.due(now, debounce, max_delay):
                current = {Path(os.path.realpath(r)): r for r in targets()}
                for key, paths in pending.take().items():
                    if key not in current:
                        continue  # removed from the collection meanwhile
                    if not index_run("changes", current[key], len(paths)):
                        pending.add(key, paths)
                        pending.hold_until = time.monotonic() + retry["pause"]
                    elif folder is not None:
                        next_rescan = time.monotonic() + rescan_every
                    if stopped():
                        break
            elif now >= next_rescan:
                follow_folders()
                pending.take()  # a full run covers what happened before it started
                ok = index_run("rescan", folder, 0)
                next_rescan = time.monotonic() + (rescan_every if ok else retry["pause"])
            else:
                time.sleep(poll)
    finally:
        observer.stop()  # type: ignore[attr-defined]
        observer.join(timeout=10)  # type: ignore[attr-defined]
    return report


def _shown(root: Path | None) -> str | None:
    return None if root is None else str(root)
