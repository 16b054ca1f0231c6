"""`vtsearch export`: the collection's ids, paths, metadata, tags and vectors for other tools."""

from __future__ import annotations

from pathlib import Path

import click

from vtsearch.cli.common import engine


@click.command()
@click.argument("out", type=click.Path(path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["parquet", "npy"]),
    default="parquet",
    show_default=True,
    help="parquet: one file, vectors included; npy: a folder of vectors.npy, ids.npy and "
    "meta.parquet.",
)
@click.option(
    "--include-failed",
    is_flag=True,
    help="Also the files that could not be indexed (no vector; their error says why).",
)
@click.pass_context
def export(ctx: click.Context, out: Path, fmt: str, include_failed: bool) -> None:
    """Write every indexed image's id, path, metadata, tags and vector to OUT.

    Parquet columns: id, path, path_bytes (raw bytes of a name that is not UTF-8), root, size,
    mtime, width, height, format, taken_at, sha256, status, error, tags, vector. The layouts are
    described in docs/indexing.md. Indexing may go on meanwhile: the export shows one moment.

    \b
    Example:
      vtsearch export photos.parquet
      vtsearch export ./photos-npy --format npy
    """
    rep = engine(ctx).export(out, fmt, include_failed=include_failed)
    click.echo(
        f"exported {rep.rows} images to {out} ({rep.format}, {rep.bytes / 1e6:.1f} MB, "
        f"{rep.seconds:.1f} s)"
    )
