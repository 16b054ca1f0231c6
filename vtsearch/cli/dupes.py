"""`vtsearch dupes`: groups of exact and near copies, the file to keep first in each."""

from __future__ import annotations

import json

import click

from vtsearch.cli.common import engine, shown


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def _line(f) -> str:
    mark = "keep" if f.keep else "    "
    res = f"{f.width}x{f.height}" if f.width and f.height else "?"
    if f.keep:
        how = ""
    elif f.exact:
        how = "exact copy"
    else:
        how = f"similar {f.similarity:.2f}" if f.similarity == f.similarity else "similar"
    taken = f.taken_at.strftime("%Y-%m-%d") if f.taken_at else ""
    return (
        f"  {mark}  {res:>11}  {_size(f.bytes):>8}  {(f.format or '?'):<5} {taken:<10} "
        f"{how:<13} {shown(f.path)}"
    )


@click.command()
@click.option(
    "--threshold",
    type=float,
    default=None,
    help="Similarity (0-1] from which two images are near copies; higher finds fewer "
    "(default: the measure's own, chosen on planted copies of Flickr8k).",
)
@click.option("--exact-only", is_flag=True, help="Byte-identical files only.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per group.")
@click.pass_context
def dupes(ctx: click.Context, threshold: float | None, exact_only: bool, as_json: bool) -> None:
    """Find duplicate photos: exact copies and near copies (resized, re-encoded, cropped a
    little, small edits). Each group lists its files with resolution and size; the one to keep
    (largest resolution, then largest file, then oldest) is marked "keep". Nothing is deleted.

    \b
    Example:
      vtsearch dupes
      vtsearch dupes --threshold 0.7 --json
    """
    groups = engine(ctx).duplicates(threshold, exact_only=exact_only)
    if as_json:
        for n, g in enumerate(groups, 1):
            row = {"group": n, "measure": groups.measure, "threshold": groups.threshold}
            click.echo(json.dumps({**row, **g.to_dict()}))
        return
    how = "byte-identical" if exact_only else f"{groups.measure} >= {groups.threshold}"
    if not groups:
        click.echo(f"no duplicates found ({how})")
        return
    for n, g in enumerate(groups, 1):
        click.echo(f"group {n}: {len(g.files)} files, {g.kind} copies")
        for f in g.files:
            click.echo(_line(f))
    spare = sum(len(g.files) - 1 for g in groups)
    freed = sum(g.spare_bytes for g in groups)
    click.echo(
        f"{len(groups)} groups ({how}): {spare} files besides the ones to keep, {_size(freed)}"
    )
