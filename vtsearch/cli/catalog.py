"""`vtsearch move-catalog`: put a collection's catalog on PostgreSQL."""

from __future__ import annotations

import click

from vtsearch.cli.common import engine


@click.command("move-catalog")
@click.argument("url")
@click.pass_context
def move_catalog(ctx: click.Context, url: str) -> None:
    """Move the collection's catalog from its SQLite file into the empty PostgreSQL database
    URL (postgresql+psycopg://user@host/db). Ids, history and vector index files are kept; the
    folder remembers the server, and the SQLite file stays beside, renamed. Stop every other
    vtsearch process using the collection first (a running serve would keep reading the old
    file). A move that was killed is finished by running it again.

    \b
    Example:
      createdb vtsearch
      vtsearch --db ./my-index move-catalog postgresql+psycopg://me@dbhost/vtsearch
    """
    report = engine(ctx).move_catalog(url)
    rows = ", ".join(f"{n} {t}" for t, n in report.rows.items() if n)
    click.echo(f"moved to {report.url}: {rows}")
    click.echo(f"the old SQLite file is kept as {report.kept_file}")
