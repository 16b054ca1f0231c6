"""What every command shares: library errors as one line and an exit code, the engine of the
collection the options name, paths as a terminal can print them."""

from __future__ import annotations

import os

import click

from vtsearch.errors import VtsearchError


class ErrorsAsMessages(click.Group):
    """Turns library errors into one line on stderr and the error's exit code."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except VtsearchError as e:
            click.echo(f"Error: {e}", err=True)
            ctx.exit(e.exit_code)


def shown(path: str) -> str:
    """A path as a message can print it: a name that is not UTF-8 shows its odd bytes escaped
    (``\\xe9``), not as lone surrogates that no terminal or JSON parser takes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def engine(ctx: click.Context):
    from vtsearch.api import Engine

    return Engine(
        ctx.obj["db"],
        model=ctx.obj["model"],
        device=ctx.obj["device"],
        reranker=ctx.obj["reranker"],
        catalog=ctx.obj["catalog"],
        ray=ctx.obj["ray"],
    )
