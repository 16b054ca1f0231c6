"""`vtsearch optimize`: rebuild a collection's vector index into the kind its size calls for."""

from __future__ import annotations

import click

from vtsearch.cli.common import engine

# Spelled out, not imported: `vtsearch --help` must not import numpy or faiss.
KINDS = ("auto", "flat", "hnsw", "ivfpq")


@click.command()
@click.option(
    "--kind",
    type=click.Choice(KINDS),
    default="auto",
    show_default=True,
    help="Index kind; auto picks by collection size and memory.",
)
@click.option("--force", is_flag=True, help="Rebuild even when the index is already right.")
@click.option("--dry-run", is_flag=True, help="Only say what would be rebuilt.")
@click.option(
    "--memory-gb",
    type=float,
    default=None,
    help="Memory the index may plan for (default: this machine's RAM).",
)
@click.pass_context
def optimize(
    ctx: click.Context, kind: str, force: bool, dry_run: bool, memory_gb: float | None
) -> None:
    """Rebuild the vector index when the collection has outgrown its kind.

    Exact search (flat) while the collection is small, a graph index (HNSW) once it is large,
    compressed IVF-PQ when the vectors would not fit in memory. Also compacts an index that
    holds many removed vectors. Queries keep working on the old index until the new one is saved.

    \b
    Example:
      vtsearch optimize
      vtsearch optimize --dry-run
      vtsearch --db ./my-index optimize --kind hnsw
    """
    reports = engine(ctx).optimize(
        kind=None if kind == "auto" else kind,
        force=force,
        dry_run=dry_run,
        memory_bytes=int(memory_gb * (1 << 30)) if memory_gb else None,
    )
    for r in reports:
        what = "images" if r.name == "vectors" else r.name
        if r.reason is None:
            click.echo(f"{what}: {r.count} vectors in a {r.before.kind} index: already right")
        elif not r.rebuilt:
            click.echo(f"{what}: would rebuild {r.before.kind} -> {r.after.kind} ({r.reason})")
        else:
            click.echo(
                f"{what}: rebuilt {r.before.kind} -> {r.after.kind} ({r.reason}) in "
                f"{r.seconds:.1f} s, {r.bytes_before / 1e6:.1f} MB -> {r.bytes_after / 1e6:.1f} MB"
            )
