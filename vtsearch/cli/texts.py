"""`vtsearch texts`: the collection's text set (captions, labels) for image -> text search."""

from __future__ import annotations

import click

from vtsearch.cli.common import engine


@click.group()
def texts() -> None:
    """Manage the collection's texts (captions, labels) for image -> text search.

    \b
    Example:
      vtsearch texts add captions.txt
      vtsearch query --image photo.jpg --texts
    """


@texts.command("add")
@click.argument("file", type=click.File("r", encoding="utf-8"))
@click.option("--source", default=None, help="Name to group these texts by (default: FILE).")
@click.pass_context
def texts_add(ctx: click.Context, file: click.utils.LazyFile, source: str | None) -> None:
    """Add the texts in FILE, one per line (for `name<TAB>text` lines, the text after the tab).

    \b
    Example:
      vtsearch texts add labels.txt --source labels
    """
    lines = [line.rstrip("\n").split("\t")[-1] for line in file]
    n = engine(ctx).add_texts(lines, source=source or file.name)
    click.echo(f"{n} texts added")


@texts.command("remove")
@click.option("--source", default=None, help="Only the texts added under this name.")
@click.pass_context
def texts_remove(ctx: click.Context, source: str | None) -> None:
    """Remove texts (all, or those of one --source).

    \b
    Example:
      vtsearch texts remove --source labels
    """
    n = engine(ctx).remove_texts(source)
    click.echo(f"{n} texts removed")
