"""`vtsearch index`: index a folder, or refresh every folder of the collection."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import click

from vtsearch import config
from vtsearch.cli.common import engine, shown


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
@click.pass_context
def index(
    ctx: click.Context,
    folder: Path | None,
    batch_size: int | None,
    workers: int | None,
    extensions: tuple[str, ...],
    max_size_mb: int,
) -> None:
    """Index the images under FOLDER; re-runs only touch what changed.

    Without FOLDER, every folder indexed into the collection before is refreshed (see
    `vtsearch status`); one that is gone is reported and keeps its images until
    `vtsearch roots remove`. Ctrl-C stops cleanly at any point; run again to resume.

    \b
    Example:
      vtsearch index ./photos
      vtsearch index                      # refresh every indexed folder
      vtsearch --db ./my-index index ./photos --batch-size 64
    """
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

    exts = tuple(e if e.startswith(".") else f".{e}" for e in extensions)
    try:
        report = engine(ctx).index(
            folder,
            batch_size=batch_size,
            workers=workers,
            extensions=exts or config.DEFAULT_EXTENSIONS,
            max_bytes=max_size_mb * 1024 * 1024,
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
    if report.interrupted:
        click.echo("Interrupted: run the same command again to resume.", err=True)
        ctx.exit(130)
