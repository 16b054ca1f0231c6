"""`vtsearch check`: verify that a collection's catalog, vector index and token cache agree."""

from __future__ import annotations

import json

import click


@click.command()
@click.option("--repair", is_flag=True, help="Rebuild what is derivable from the catalog.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_context
def check(ctx: click.Context, repair: bool, as_json: bool) -> None:
    """Check that the catalog, the FAISS index and the token cache agree.

    Exits 1 when a problem is left. With --repair, the FAISS file is rebuilt from the catalog's
    vectors, token records no row points at are dropped, and rows that lost their vector or
    tokens are embedded again by the next `vtsearch index` run.

    \b
    Example:
      vtsearch check
      vtsearch --db ./my-index check --repair
    """
    from vtsearch.api import Engine

    report = Engine(ctx.obj["db"], catalog=ctx.obj["catalog"]).check(repair=repair)
    if as_json:
        click.echo(json.dumps(report.to_dict()))
    else:
        click.echo(f"collection: {report.path}")
        tokens = "no cache" if report.tokens is None else report.tokens
        click.echo(f"indexed rows: {report.indexed}, vectors: {report.vectors}, tokens: {tokens}")
        for note in report.notes:
            click.echo(f"  note: {note}")
        for problem in report.problems:
            click.echo(f"  problem: {problem}")
        if report.ok:
            click.echo("repaired" if report.problems else "ok")
        else:
            click.echo("problems found; run `vtsearch check --repair` to fix what is derivable")
    if not report.ok:
        ctx.exit(1)
