"""`vtsearch index`: index a folder, or refresh every folder of the collection; with `--watch`,
keep doing so as files change."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from vtsearch import config
from vtsearch.cli.common import engine, shown

if TYPE_CHECKING:
    from vtsearch.indexer.pipeline import IndexReport
    from vtsearch.indexer.watch import WatchRun


@click.command()
@click.argument(
    "folder", required=False, type=click.Path(path_type=Path, exists=True, file_okay=False)
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=None,
    help="Images per forward pass (default: 6 on CPU, 64 on GPU).",
)
@click.option(
    "--workers",
    default=None,
    type=click.IntRange(min=0),
    help="Decode threads on CPU (default: one per core), processes on GPU (cores - 1, at most "
    "8); 0 decodes in the main thread.",
)
@click.option(
    "--ext",
    "extensions",
    multiple=True,
    help="File extension to include (repeatable; default: common image types).",
)
@click.option(
    "--max-size-mb",
    type=click.IntRange(min=1),
    default=config.DEFAULT_MAX_FILE_BYTES // (1024 * 1024),
    show_default=True,
    help="Skip files larger than this.",
)
@click.option(
    "--manifest",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    default=None,
    help="Index the files this file lists (one absolute path a line) instead of a FOLDER; "
    "files of their shared folder it no longer lists are removed.",
)
@click.option(
    "--ray",
    "ray_address",
    default=None,
    metavar="ADDRESS",
    help="Decode and embed on a Ray cluster: auto (the one this machine is in), local (start one "
    "here), or host:port. The cluster must see the files at the same paths.",
)
@click.option(
    "--watch",
    is_flag=True,
    help="Then keep the collection current as files change, one line per run, until Ctrl-C.",
)
@click.option(
    "--debounce",
    type=click.FloatRange(min=0),
    default=2.0,
    show_default=True,
    help="With --watch: seconds without a new file event before changes are indexed.",
)
@click.option(
    "--rescan-minutes",
    type=click.FloatRange(min=0, min_open=True),
    default=10.0,
    show_default=True,
    help="With --watch: a full rescan this often catches changes the file system did not "
    "report (network drives).",
)
@click.pass_context
def index(
    ctx: click.Context,
    folder: Path | None,
    batch_size: int | None,
    workers: int | None,
    extensions: tuple[str, ...],
    max_size_mb: int,
    manifest: Path | None,
    ray_address: str | None,
    watch: bool,
    debounce: float,
    rescan_minutes: float,
) -> None:
    """Index the images under FOLDER; re-runs only touch what changed.

    Without FOLDER, every folder indexed into the collection before is refreshed (see
    `vtsearch status`); one that is gone is reported and keeps its images until
    `vtsearch roots remove`. Ctrl-C stops cleanly at any point; run again to resume.

    With --watch, the folder (or every folder) is indexed, then watched: changes are indexed
    a moment after they happen, each run under the write lock for that run only, so queries
    and `vtsearch status` keep working. Ctrl-C ends the watch (exit status 0).

    \b
    Example:
      vtsearch index ./photos
      vtsearch index                      # refresh every indexed folder
      vtsearch --db ./my-index index ./photos --batch-size 64
      vtsearch index --watch ./photos     # and keep it current
      vtsearch index --ray auto /mnt/shared/photos   # embed on the Ray cluster
      vtsearch index --ray auto --manifest shard-07.txt
    """
    if watch and (ray_address or manifest):
        raise click.UsageError("--watch watches folders here; not with --ray or --manifest")
    if manifest and folder:
        raise click.UsageError("give FOLDER or --manifest, not both")
    exts = tuple(e if e.startswith(".") else f".{e}" for e in extensions)
    options = {
        "batch_size": batch_size,
        "workers": workers,
        "extensions": exts or config.DEFAULT_EXTENSIONS,
        "max_bytes": max_size_mb * 1024 * 1024,
    }
    if watch:
        _watch(ctx, folder, debounce, rescan_minutes * 60, options)
        return
    options["ray"] = ray_address
    options["manifest"] = manifest
    from tqdm import tqdm

    stop = {"asked": False}

    def on_sigint(_sig: int, _frame: object) -> None:
        stop["asked"] = True
        click.echo("\nStopping...", err=True)

    previous = signal.signal(signal.SIGINT, on_sigint)
    quiet = not sys.stderr.isatty()
    bars: dict[str, tqdm] = {}

    def follow(desc: str, unit: str):
        def update(done: int, total: int) -> None:
            bar = bars.get(desc)
            if bar is None:
                bar = bars[desc] = tqdm(total=total, unit=unit, desc=desc, disable=quiet)
            bar.total = total
            bar.update(done - bar.n)  # update() (not n=) keeps tqdm's rate right

        return update

    try:
        report = engine(ctx).index(
            folder,
            **options,
            progress=follow("embedding", "img"),
            hash_progress=follow("reading new files", "file"),
            should_stop=lambda: stop["asked"],
        )
    finally:
        for bar in bars.values():
            bar.close()
        signal.signal(signal.SIGINT, previous)
    click.echo(
        f"{report.scanned} files: {report.embedded} embedded, {report.unchanged} unchanged, "
        f"{report.relinked} moved, {report.copied} copied, {report.deleted} deleted, "
        f"{len(report.failed)} failed ({report.seconds:.1f} s, "
        f"{report.images_per_second:.1f} images/s)"
    )
    _details(report)
    if report.interrupted:
        click.echo("Interrupted: run the same command again to resume.", err=True)
        ctx.exit(130)


def _details(report: IndexReport) -> None:
    """The files and folders a run could not handle, on stderr."""
    for path, reason in report.failed:
        click.echo(f"  failed: {shown(path)}: {reason}", err=True)
    for path, reason in report.kept:
        click.echo(f"  not updated: {shown(path)}: {reason} (indexed version kept)", err=True)
    for path in report.missing_roots:
        click.echo(
            f"  missing folder: {shown(path)} (its images are kept; to drop them: "
            f"vtsearch roots remove {shown(path)})",
            err=True,
        )
    for path in report.dropped_roots:
        click.echo(f"  forgot folder: {shown(path)} (gone, no images left)", err=True)


def _watch(
    ctx: click.Context, folder: Path | None, debounce: float, rescan_every: float, options: dict
) -> None:
    """Index, then follow the changes until SIGINT or SIGTERM; one line per run on stdout."""
    stop = {"asked": False}

    def on_signal(_sig: int, _frame: object) -> None:
        if not stop["asked"]:
            click.echo("\nStopping...", err=True)
        stop["asked"] = True

    def on_run(run: WatchRun) -> None:
        click.echo(_run_line(run, show_root=folder is None))
        if run.report is not None:
            _details(run.report)

    eng = engine(ctx)
    if folder is None:
        eng.roots()  # no collection: say so before anything else
    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        what = shown(str(folder)) if folder else "every indexed folder"
        click.echo(f"watching {what} (Ctrl-C to stop)", err=True)
        report = eng.watch(
            folder,
            debounce=debounce,
            rescan_every=rescan_every,
            on_run=on_run,
            should_stop=lambda: stop["asked"],
            **options,
        )
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    total = report.total
    click.echo(
        f"stopped watching after {report.runs} runs: {total.embedded} embedded, "
        f"{total.relinked} moved, {total.copied} copied, {total.deleted} deleted, "
        f"{len(total.failed)} failed",
        err=True,
    )


def _run_line(run: WatchRun, show_root: bool) -> str:
    """``12:00:05 3 changed: 2 embedded, 1 deleted (0.3 s)``: what one run of a watch did."""
    why = f"{run.changes} changed" if run.reason == "changes" else run.reason
    where = f" {shown(run.root)}" if show_root and run.root else ""
    head = f"{time.strftime('%H:%M:%S')} {why}{where}:"
    if run.report is None:
        return f"{head} not indexed now ({run.error}); trying again later"
    r = run.report
    done = [
        f"{n} {what}"
        for n, what in (
            (r.embedded, "embedded"),
            (r.relinked, "moved"),
            (r.copied, "copied"),
            (r.deleted, "deleted"),
            (len(r.failed), "failed"),
            (len(r.kept), "not updated"),
        )
        if n
    ]
    body = ", ".join(done) or "no changes"
    if run.reason == "start":
        body = f"{r.scanned} files, {body}"
    stopped = ", interrupted" if r.interrupted else ""
    return f"{head} {body} ({r.seconds:.1f} s{stopped})"
