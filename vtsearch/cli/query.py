"""`vtsearch query`: images (or the collection's texts) for words, a picture, or both."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import click

from vtsearch.cli.common import engine

#: Columns of ``--format csv``, for images and for texts.
CSV_IMAGES = ("id", "path", "score", "bi_score", "rerank_score", "width", "height", "taken_at")
CSV_TEXTS = ("id", "text", "score", "bi_score", "rerank_score", "source")


def _when(ctx: click.Context, param: click.Parameter, value: str | None):
    """A date option's value, read as the library reads it (a bad one names the option)."""
    if value is None:
        return None
    from vtsearch.errors import QueryError
    from vtsearch.storage.filters import parse_when

    try:
        return parse_when(value, param.opts[-1])
    except QueryError as e:
        raise click.BadParameter(str(e)) from None


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
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "csv", "paths"]),
    default=None,
    metavar="FORMAT",
    help="text: score and path (default); json: one JSON object per line (strict: a score that "
    "is not a number is null; a path that is not valid UTF-8 comes as `path` with replacement "
    "characters plus `path_b64`, the base64 of its exact bytes); csv: a header, then a row "
    f"per result ({', '.join(CSV_IMAGES)}); paths: one path per line (for xargs). Paths in "
    "text, csv and paths are the file names' own bytes.",
)
@click.option("--json", "as_json", is_flag=True, help="The same as --format json.")
@click.option(
    "--in",
    "folders",
    multiple=True,
    metavar="FOLDER",
    help="Only images in this folder (or any of several --in).",
)
@click.option(
    "--glob",
    metavar="PATTERN",
    help="Only images whose file name (a pattern without /) or path matches, e.g. 'IMG_*.jpg'.",
)
@click.option(
    "--after",
    callback=_when,
    metavar="DATE",
    help="Only images taken on or after DATE (YYYY-MM-DD, YYYY-MM or YYYY): the EXIF time, "
    "else the file's modification time.",
)
@click.option("--before", callback=_when, metavar="DATE", help="Only images taken before DATE.")
@click.option(
    "--landscape", "orientation", flag_value="landscape", help="Only images wider than high."
)
@click.option("--portrait", "orientation", flag_value="portrait", help="Only higher than wide.")
@click.option("--square", "orientation", flag_value="square", help="Only square images.")
@click.option(
    "--min-width",
    type=click.IntRange(min=1),
    metavar="PIXELS",
    help="Only images this wide or wider.",
)
@click.option(
    "--min-height", type=click.IntRange(min=1), metavar="PIXELS", help="Only this high or higher."
)
@click.option(
    "--file-type",
    "file_types",
    multiple=True,
    metavar="TYPE",
    help="Only files of this format: jpeg, png, heic, webp, gif, tiff, bmp, avif (repeatable).",
)
@click.option(
    "--tag",
    "tags",
    multiple=True,
    metavar="TAG",
    help="Only images tagged TAG by `vtsearch tag` (repeatable: all of them).",
)
@click.option(
    "--min-score",
    type=float,
    help="Leave out results whose final score (after re-ranking) is below this.",
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
    fmt: str | None,
    as_json: bool,
    folders: tuple[str, ...],
    glob: str | None,
    after,
    before,
    orientation: str | None,
    min_width: int | None,
    min_height: int | None,
    file_types: tuple[str, ...],
    tags: tuple[str, ...],
    min_score: float | None,
    over_texts: bool,
    no_rerank: bool,
    rerank_k: int | None,
) -> None:
    """Find images matching TEXT, an --image, or both.

    TEXT may add or subtract weighted terms: "a beach - people + sunset^0.5".
    Filters (--in, --after, --before, --landscape, --tag and the others) are applied inside
    the search: -n 10 gives 10 results whenever 10 images match.
    With --texts, rank the texts added by `vtsearch texts add` (image -> text).

    \b
    Example:
      vtsearch query "a red car"
      vtsearch query "a beach" --in ~/Pictures/2024 --after 2024-06-01 --before 2024-09-01
      vtsearch query "a cat" --landscape --file-type jpeg --format paths | xargs -d '\\n' ls -l
      vtsearch query --image photo.jpg -n 5 --format csv
      vtsearch query --image photo.jpg --texts
    """
    from vtsearch.errors import QueryError
    from vtsearch.storage.filters import Filters

    if text is None and image is None:
        raise click.UsageError("give TEXT, --image FILE, or both")
    if as_json and fmt not in (None, "json"):
        raise click.UsageError(f"--json and --format {fmt} disagree; give one")
    fmt = "json" if as_json else fmt or "text"
    try:
        filters = Filters(
            # Relative to here, as a shell path is; the catalog keeps links resolved.
            folders=tuple(os.path.realpath(os.path.expanduser(f)) for f in folders),
            glob=glob,
            after=after,
            before=before,
            orientation=orientation,
            min_width=min_width,
            min_height=min_height,
            formats=file_types,
            tags=tags,
            min_score=min_score,
        )
    except QueryError as e:
        raise click.UsageError(str(e)) from None
    if over_texts and (filters.restricts or fmt == "paths"):
        what = "--format paths" if fmt == "paths" else "filters other than --min-score"
        raise click.UsageError(f"{what} apply to images, not to --texts")
    eng = engine(ctx)
    opts = {"k": limit, "rerank": not no_rerank, "rerank_k": rerank_k}
    if over_texts:
        results = eng.search_texts(image=image, text=text, **opts)
        if filters.min_score is not None:
            results = [r for r in results if r.score >= filters.min_score]
    else:
        results = eng.search(text=text, image=image, filters=filters, **opts)
    _print(results, fmt, over_texts)


def _print(results: list, fmt: str, texts: bool) -> None:
    if fmt == "csv":
        out = io.StringIO(newline="")
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(CSV_TEXTS if texts else CSV_IMAGES)
        for r in results:
            row = [_cell(getattr(r, c)) for c in (CSV_TEXTS if texts else CSV_IMAGES)]
            writer.writerow(row)
        # A path that is not UTF-8 (held with lone surrogates) goes out as its own bytes.
        click.echo(out.getvalue().encode("utf-8", "surrogateescape"), nl=False)
        return
    for r in results:
        if fmt == "json":
            click.echo(json.dumps(r.to_dict(), allow_nan=False))
        elif fmt == "paths":
            click.echo(os.fsencode(r.path))
        elif not texts:
            # The path's own bytes: a file name that is not UTF-8 stays one the shell can open.
            click.echo(f"{r.score:.4f}\t".encode() + os.fsencode(r.path))
        else:
            click.echo(f"{r.score:.4f}\t{r.text}")


def _cell(value) -> str:
    """A CSV cell: empty for None (or a score that is not a number), ISO 8601 for a time."""
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value) if value == value and abs(value) != float("inf") else ""
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)
