"""Re-indexing the server's folder in a background thread, one run at a time.

The run is the library's incremental indexer (``Engine.index``) under the collection's write
lock, so a CLI indexer and the server never write at once. Queries keep answering meanwhile and
see the images committed so far.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from starlette.exceptions import HTTPException

from vtsearch.errors import VtsearchError
from vtsearch.server.models import IndexState, clean

if TYPE_CHECKING:
    from vtsearch.api import Engine

log = logging.getLogger("vtsearch.server")


class IndexJob:
    """The state of the server's index run: idle, running, done or failed."""

    def __init__(self, engine: Engine, folder: Path | None) -> None:
        self.engine, self.folder = engine, folder
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._state = "idle"
        self._done = self._total = 0
        self._phase: str | None = None
        self._report: dict | None = None
        self._error: str | None = None
        # A thread takes the torch thread count set last anywhere: one started while a query
        # runs on one thread (``one_torch_thread``) would embed on one core. The count the
        # server started with is what an index run gets.
        self._torch_threads = _torch_threads()

    def state(self) -> IndexState:
        with self._lock:
            return IndexState(
                state=self._state,
                folder=clean(str(self.folder)) if self.folder else None,
                done=self._done,
                total=self._total,
                phase=self._phase if self._state == "running" else None,
                report=self._report,
                error=self._error,
            )

    def start(self) -> IndexState:
        """Start a run; 409 when the server has no folder or a run is going."""
        with self._lock:
            if self.folder is None:
                raise HTTPException(409, "this server was started without --folder: no re-index")
            if self._state == "running":
                raise HTTPException(409, "an index run is already going")
            self._state, self._phase = "running", "reading"
            self._done = self._total = 0
            self._report = self._error = None
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="vtsearch-index", daemon=True)
            self._thread.start()
        return self.state()

    def stop(self, timeout: float = 60.0) -> None:
        """Ask a run to stop (what was embedded is committed) and wait for it."""
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def _follow(self, phase: str):
        def update(done: int, total: int) -> None:
            with self._lock:
                self._phase, self._done, self._total = phase, done, total

        return update

    def _run(self) -> None:
        try:
            import os

            import torch

            cores = (
                len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
            )
            torch.set_num_threads(self._torch_threads or cores or 1)
            report = self.engine.index(
                self.folder,
                progress=self._follow("embedding"),
                hash_progress=self._follow("reading"),
                should_stop=self._stop.is_set,
            )
        except VtsearchError as e:
            self._finish("failed", error=str(e))
        except Exception as e:
            log.error("index run failed", exc_info=e)
            self._finish("failed", error="internal error")
        else:
            self._finish("done", report=_report(report))

    def _finish(self, state: str, report: dict | None = None, error: str | None = None) -> None:
        with self._lock:
            self._state, self._report, self._error = state, report, error
            self._phase = None


def _report(report) -> dict:
    """An ``IndexReport`` as JSON: file lists as ``{"path", "reason"}``, paths valid UTF-8."""
    d = dataclasses.asdict(report)
    for name in ("failed", "kept"):
        d[name] = [{"path": clean(p), "reason": clean(r)} for p, r in d[name]]
    for name in ("missing_roots", "dropped_roots"):
        d[name] = [clean(p) for p in d[name]]
    d["images_per_second"] = report.images_per_second
    return d


def _torch_threads() -> int:
    """torch's thread count now, when torch is loaded (it is, once the engine has been used)."""
    import sys

    torch = sys.modules.get("torch")
    return int(torch.get_num_threads()) if torch is not None else 0
