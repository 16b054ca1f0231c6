"""`vtsearch query`: images (or the collection's texts) for words, a picture, or both."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from vtsearch.cli.common import engine


@click.command()
@click.argument("text", required=False)
@click.option("--image", type=click.Path(path_type=Path), help="Find images similar to this one.")
@click.option(
    "-n",
    "--limit",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Number of results.",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print results as JSON lines (strict JSON: a score that is not a number is null). A path "
    "that is not valid UTF-8 comes as `path` with replacement characters plus `path_b64`, the "
    "base64 of its exact bytes.",
)
@click.option(
    "--texts", "over_texts", is_flag=True, help="Rank the collection's texts instead of images."
)
@click.option("--no-rerank", is_flag=True, help="Bi-encoder order only, no fusion re-ranking.")
@click.option(
    "--rerank-k",
    type=click.IntRange(min=1),
    default=None,
    # The number is DEFAULT_RERANK_K (not imported: it would load torch for --help; a test
    # checks that they agree).
    help="Candidates to re-rank (default: the re-ranker's own depth, recorded with its weights; "
    "10 for the shipped scorer).",
)
@click.pass_context
def query(
    ctx: click.Context,
    text: str | None,
    image: Path | None,
    limit: int,
    as_json: bool,
    over_texts: bool,
    no_rerank: bool,
    rerank_k: int | None,
) -> None:
    """Find images matching TEXT, an --image, or both.

    TEXT may add or subtract weighted terms: "a beach - people + sunset^0.5".
    With --texts, rank the texts added by `vtsearch texts add` (image -> text).

    \b
    Example:
      vtsearch query "a red car"
      vtsearch query --image photo.jpg -n 5 --json
      vtsearch query --image photo.jpg --texts
    """

    if text is None and image is None:
        raise click.UsageError("give TEXT, --image FILE, or both")
    eng = engine(ctx)
    opts = {"k": limit, "rerank": not no_rerank, "rerank_k": rerank_k}
    if over_texts:
        results = eng.search_texts(image=image, text=text, **opts)
    else:
        results = eng.search(text=text, image=image, **opts)
    for r in results:
        if as_json:
            click.echo(json.dumps(r.to_dict(), allow_nan=False))
        elif hasattr(r, "path"):
            # The path's own bytes: a file name that is not UTF-8 stays one the shell can open.
            click.echo(f"{r.score:.4f}\t".encode() + os.fsencode(r.path))
        else:
            click.echo(f"{r.score:.4f}\t{r.text}")
