"""`vtsearch eval`: recall of both directions on a captioned image set, re-ranked or not."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click


@click.command("eval")
@click.option(
    "--captions",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    required=True,
    help="image<TAB>caption lines (a header line is skipped).",
)
@click.option(
    "--images",
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    required=True,
    help="Folder holding the images named in --captions.",
)
@click.option(
    "--split",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    default=None,
    help="File of image names to evaluate on (default: every captioned image).",
)
@click.option(
    "--rerank-k",
    type=click.IntRange(min=1),
    default=None,
    help="Candidates to re-rank (default: the depth queries use, the re-ranker's own; 10 for the "
    "shipped scorer).",
)
@click.option(
    "--limit", type=click.IntRange(min=1), default=None, help="Evaluate on the first N images only."
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_context
def eval_cmd(
    ctx: click.Context,
    captions: Path,
    images: Path,
    split: Path | None,
    rerank_k: int | None,
    limit: int | None,
    as_json: bool,
) -> None:
    """Recall@1/5/10 and median rank in both directions, bi-encoder alone and re-ranked.

    Builds a throw-away index of the images, adds the captions as texts, and prints the table
    with a paired bootstrap 95% interval of the re-rank gain and the added latency per query.

    \b
    Example:
      vtsearch eval --captions ../shared/data/flickr8k/captions.tsv \\
        --images ../shared/data/flickr8k/images --split ../shared/data/flickr8k/splits/test.txt
    """
    import dataclasses
    import tempfile

    from tqdm import tqdm

    from vtsearch.api import Engine
    from vtsearch.search.evaluate import evaluate, read_captions

    names = split.read_text().split() if split else None
    caps = read_captions(captions, set(names) if names else None)
    order = [n for n in (names or sorted(caps)) if n in caps and (images / n).is_file()]
    order = order[:limit] if limit else order
    with tempfile.TemporaryDirectory(prefix="vtsearch-eval-") as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        for n in order:
            (folder / n).symlink_to((images / n).resolve())
        eng = Engine(
            Path(tmp) / "coll",
            model=ctx.obj["model"],
            device=ctx.obj["device"],
            reranker=ctx.obj["reranker"],
        )
        eng.index(folder)
        eng.add_texts([c for n in order for c in caps[n]], source="eval")
        paths = {n: folder / n for n in order}
        with tqdm(total=0, desc="queries", disable=not sys.stderr.isatty()) as bar:

            def progress(done: int, total: int) -> None:
                bar.total = total
                bar.update(done - bar.n)

            report = evaluate(
                eng, paths, {n: caps[n] for n in order}, rerank_k=rerank_k, progress=progress
            )
    if as_json:
        click.echo(json.dumps(dataclasses.asdict(report), indent=2))
        return
    click.echo(
        f"{report.images} images, {report.captions} captions, re-rank depth {report.rerank_k}"
    )
    click.echo(
        f"{'direction':<16}{'ranking':<12}{'R@1':>7}{'R@5':>7}{'R@10':>7}{'medR':>7}"
        f"{'ms/query':>10}"
    )
    for label, d in (("text->image", report.text_to_image), ("image->text", report.image_to_text)):
        rows = [("bi-encoder", d.bi, d.ms_per_query_bi)]
        if d.rerank is not None:
            rows.append(("prior only", d.prior_only, None))
            rows.append(("re-ranked", d.rerank, d.ms_per_query_rerank))
        for name, m, ms in rows:
            click.echo(
                f"{label:<16}{name:<12}{m['R@1']:>7.1f}{m['R@5']:>7.1f}{m['R@10']:>7.1f}"
                f"{m['median_rank']:>7.0f}" + (f"{ms:>10.1f}" if ms is not None else "")
            )
        if d.r1_gain_ci is not None:
            gain = d.rerank["R@1"] - d.bi["R@1"]
            own = d.rerank["R@1"] - d.prior_only["R@1"]
            share = (
                f"of it, the fusion scorer over the prior alone {own:+.1f} "
                f"[{d.scorer_gain_ci[0]:+.1f}, {d.scorer_gain_ci[1]:+.1f}]"
                if d.scorer_used
                else "the fusion scorer is off for this direction (prior only)"
            )
            click.echo(
                f"{label:<16}R@1 gain {gain:+.1f} points, paired bootstrap 95% interval "
                f"[{d.r1_gain_ci[0]:+.1f}, {d.r1_gain_ci[1]:+.1f}]; {share}"
            )
    if report.text_to_image.rerank is None:
        click.echo("(no fusion scorer for this model: bi-encoder figures only)")
