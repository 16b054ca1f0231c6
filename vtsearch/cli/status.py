"""`vtsearch status` and `vtsearch roots`: what the collection holds, and its folders."""

from __future__ import annotations

import json
from pathlib import Path

import click

from vtsearch.cli.common import engine, shown


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Show the collection: model, counts, failed files, size on disk.

    \b
    Example:
      vtsearch status
    """
    st = engine(ctx).status()
    if as_json:
        data = {**st.__dict__, "failed": [(shown(p), r) for p, r in st.failed]}
        data["roots"] = [{"path": shown(p), "exists": ok, "images": n} for p, ok, n in st.roots]
        click.echo(json.dumps(data, default=str))
        return
    click.echo(f"collection: {st.path}" + (" (read-only for you)" if st.readonly else ""))
    click.echo(f"catalog:    {shown(st.catalog)}")
    click.echo(f"model:      {st.model_id} (dim {st.dim}, index {st.index_kind})")
    click.echo(f"indexed:    {st.indexed}")
    click.echo(f"failed:     {st.counts.get('failed', 0)}")
    click.echo(f"texts:      {st.counts.get('texts', 0)}")
    click.echo(f"on disk:    {st.bytes_on_disk / 1e6:.1f} MB")
    click.echo(f"folders:    {len(st.roots)}")
    for path, exists, n in st.roots:
        click.echo(f"  {shown(path)} ({'' if exists else 'missing, '}{n} images)")
    for path, reason in st.failed:
        click.echo(f"  failed: {shown(path)}: {reason}")


@click.group()
def roots() -> None:
    """The folders indexed into the collection.

    \b
    Example:
      vtsearch roots list
      vtsearch roots remove /media/old-drive/photos
    """


@roots.command("list")
@click.pass_context
def roots_list(ctx: click.Context) -> None:
    """List the indexed folders, with their image counts; missing ones are marked.

    \b
    Example:
      vtsearch roots list
    """
    for path, exists, n in engine(ctx).status().roots:
        click.echo(f"{shown(path)}\t{n}\t{'ok' if exists else 'missing'}")


@roots.command("remove")
@click.argument("folder", type=click.Path(path_type=Path))
@click.pass_context
def roots_remove(ctx: click.Context, folder: Path) -> None:
    """Drop FOLDER and every image indexed under it from the collection (files stay on disk).

    \b
    Example:
      vtsearch roots remove ~/Pictures/old
    """
    n = engine(ctx).forget_root(folder)
    click.echo(f"removed {folder}: {n} images dropped from the collection")
