"""`vtsearch shards`: split the vector index into shards that Ray actors hold (past one machine)."""

from __future__ import annotations

import click

from vtsearch.cli.common import engine

# Spelled out, not imported: `vtsearch --help` must not import numpy or faiss.
KINDS = ("auto", "flat", "ivfpq")


@click.group()
def shards() -> None:
    """Shard the vector index for searching on a Ray cluster.

    The index (IVF-PQ, trained once on a sample) is split into shards, vector id into shard
    id % N; each shard is a file under the collection's shards/ folder that one Ray actor loads.
    The layout is recorded in the catalog.

    \b
    Example:
      vtsearch shards build --shards 2
      vtsearch shards show
    """


@shards.command("build")
@click.option("--shards", "n_shards", type=click.IntRange(1), default=2, show_default=True)
@click.option(
    "--kind",
    type=click.Choice(KINDS),
    default="auto",
    show_default=True,
    help="auto: IVF-PQ once there are enough vectors to train on, exact (flat) before.",
)
@click.option("--nlist", type=click.IntRange(1), default=None, help="IVF lists (default: by size).")
@click.option("--nprobe", type=click.IntRange(1), default=None, help="Lists searched per query.")
@click.option("--pq-m", type=click.IntRange(1), default=None, help="PQ bytes per vector.")
@click.pass_context
def build(
    ctx: click.Context,
    n_shards: int,
    kind: str,
    nlist: int | None,
    nprobe: int | None,
    pq_m: int | None,
) -> None:
    """Build the shard files from the catalog's vectors, in bounded memory.

    Holds the collection's write lock while it runs; queries keep working.

    \b
    Example:
      vtsearch shards build --shards 4
      vtsearch --db ./big shards build --kind ivfpq --nlist 4096 --nprobe 32
    """
    layout = engine(ctx).build_shards(n_shards, kind, nlist=nlist, nprobe=nprobe, pq_m=pq_m)
    click.echo(_describe(layout))


@shards.command("show")
@click.option("--json", "as_json", is_flag=True, help="Print the layout as JSON.")
@click.pass_context
def show(ctx: click.Context, as_json: bool) -> None:
    """Show the shard layout recorded in the catalog.

    \b
    Example:
      vtsearch shards show --json
    """
    layout = engine(ctx).shard_layout()
    if layout is None:
        click.echo("not sharded (vtsearch shards build)")
    elif as_json:
        click.echo(layout.to_json())
    else:
        click.echo(_describe(layout))


def _describe(layout) -> str:
    spec = layout.spec
    params = (
        f", {spec.nlist} lists, {spec.nprobe} probed, {spec.pq_m} B codes, trained on "
        f"{layout.trained_on}"
        if spec.kind == "ivfpq"
        else ""
    )
    return (
        f"{layout.n_shards} shards of {layout.built_for} {layout.dim}-d vectors ({spec.kind}"
        f"{params}), at catalog sequence {layout.seq}: {', '.join(layout.files)}"
    )
