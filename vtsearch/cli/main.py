"""The `vtsearch` command: a thin click layer over ``vtsearch.api.Engine``, one module per
command or group, assembled here.

Heavy libraries (torch, transformers, faiss) are imported inside commands so `--help` is instant."""

from __future__ import annotations

from pathlib import Path

import click

from vtsearch import config
from vtsearch.cli.catalog import move_catalog
from vtsearch.cli.check import check
from vtsearch.cli.common import ErrorsAsMessages
from vtsearch.cli.dupes import dupes
from vtsearch.cli.evaluate import eval_cmd
from vtsearch.cli.export import export
from vtsearch.cli.index import index
from vtsearch.cli.optimize import optimize
from vtsearch.cli.query import query
from vtsearch.cli.serve import serve
from vtsearch.cli.shards import shards
from vtsearch.cli.status import roots, status
from vtsearch.cli.tag import tag
from vtsearch.cli.texts import texts
from vtsearch.cli.train import train


@click.group(cls=ErrorsAsMessages)
@click.option(
    "--db",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Collection folder (default: $VTSEARCH_HOME/default).",
)
@click.option(
    "--catalog",
    envvar="VTSEARCH_CATALOG",
    default=None,
    metavar="URL",
    help="Keep a new collection's catalog in PostgreSQL (postgresql+psycopg://user@host/db) "
    "instead of the SQLite file in --db; the folder remembers it.",
)
@click.option(
    "--ray",
    envvar="VTSEARCH_RAY",
    default=None,
    metavar="ADDRESS",
    help="Use a Ray cluster (auto, local, or host:port): indexing embeds there, and queries "
    "search the index's shards there once `vtsearch shards build` made them.",
)
@click.option("--model", default=None, help="Model name or folder (default: vtsearch-lite).")
@click.option("--device", default=None, help="cpu, cuda, cuda:1... (default: cuda if present).")
@click.option(
    "--reranker",
    default=None,
    help="fusion (the model's own scorer, default when it ships one), none, or a weights file.",
)
@click.version_option(package_name="vtsearch")
@click.pass_context
def main(
    ctx: click.Context,
    db: Path | None,
    catalog: str | None,
    ray: str | None,
    model: str | None,
    device: str | None,
    reranker: str | None,
) -> None:
    """Search your photos by words or by example.

    \b
    Example:
      vtsearch index ~/Pictures
      vtsearch query "a dog running on the beach"
    """
    ctx.ensure_object(dict)
    ctx.obj.update(
        db=db or config.default_collection(),
        catalog=catalog,
        ray=ray,
        model=model,
        device=device,
        reranker=reranker,
    )


for command in (index, query, status, roots, texts, eval_cmd, train, check, optimize, serve, dupes):
    main.add_command(command)
main.add_command(export)
main.add_command(tag)
main.add_command(move_catalog)
main.add_command(shards)
