"""`vtsearch tag`: zero-shot tags from a label list, stored in the catalog for `query --tag`."""

from __future__ import annotations

import click

from vtsearch.cli.common import engine


@click.command()
@click.option(
    "--labels",
    default=None,
    metavar="FILE|LIST",
    help="A file with one label per line, or labels separated by commas ('cat,dog,car').",
)
@click.option("--name", default="default", show_default=True, help="Name of this label set.")
@click.option(
    "--threshold",
    type=float,
    default=None,
    help="Keep labels whose calibrated confidence (0-1) is this or more (default: the "
    "model's calibrated threshold).",
)
@click.option(
    "--top-k",
    type=int,
    default=1,
    show_default=True,
    help="An image no label reaches the threshold for keeps its K most similar labels (0: none).",
)
@click.option("--limit", type=int, default=5, show_default=True, help="At most this many tags.")
@click.option("--list", "list_sets", is_flag=True, help="Show the label sets and tag counts.")
@click.option("--remove", default=None, metavar="NAME", help="Drop the label set NAME's tags.")
@click.pass_context
def tag(
    ctx: click.Context,
    labels: str | None,
    name: str,
    threshold: float | None,
    top_k: int,
    limit: int,
    list_sets: bool,
    remove: str | None,
) -> None:
    """Tag every indexed image with the labels it shows, zero-shot: each label is embedded in
    several prompt wordings ("a photo of a {}.", ...), every image is scored against them, and
    labels above a calibrated confidence are stored (else the top K). Running it again after
    new images are indexed tags only those; changed labels re-tag all. Search with
    `vtsearch query "..." --tag dog`.

    \b
    Example:
      vtsearch tag --labels "cat,dog,car,beach,mountain,snow"
      vtsearch tag --labels species.txt --name flowers
      vtsearch query "in the garden" --tag tulips
      vtsearch tag --list
    """
    eng = engine(ctx)
    if list_sets:
        for s in eng.tag_sets():
            rule = f"confidence >= {s.threshold:g}" if s.threshold is not None else "rank only"
            click.echo(
                f"{s.name}: {len(s.labels)} labels, {s.images} images scored, {s.tags} tags "
                f"({rule}, else top {s.top_k}; {s.model})"
            )
        for label, count in eng.tag_counts():
            click.echo(f"  {count:>7}  {label}")
        return
    if remove is not None:
        click.echo(f"{eng.remove_tags(remove)} tags removed")
        return
    if labels is None:
        raise click.UsageError("give --labels (a file or 'cat,dog'), --list or --remove")
    try:
        r = eng.tag(labels, name=name, threshold=threshold, top_k=top_k, limit=limit)
    except KeyboardInterrupt:  # what was written is kept, a chunk per transaction
        click.echo("interrupted: run again to tag the rest", err=True)
        ctx.exit(130)
    if r.replaced:
        click.echo(f"label set {r.name!r} changed: its earlier tags were dropped", err=True)
    rule = (
        f"kept labels at confidence >= {r.threshold:g}, else top {top_k}"
        if r.threshold is not None
        else f"kept the top {top_k} (this model has no calibration)"
    )
    click.echo(
        f"{r.scored} images tagged ({r.already} already were) with {r.labels} labels: "
        f"{r.tags} tags; {rule}" + (f"; {r.fallback} by top {top_k}" if r.calibrated else "")
    )
