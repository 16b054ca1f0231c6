"""`vtsearch train`: train the default model's parts, or fine-tune the re-ranker on your own
captioned pictures."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.group()
def train() -> None:
    """Train the default model's parts on Flickr8k.

    \b
    Example:
      vtsearch train bi-encoder --flickr ../shared/data/flickr8k
      vtsearch train fusion --flickr ../shared/data/flickr8k
    """


_flickr_option = click.option(
    "--flickr",
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    required=True,
    help="Flickr8k folder (images/, captions.tsv, splits/).",
)
_cache_option = click.option(
    "--cache",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Feature cache folder (default: .cache/ in the repository).",
)


@train.command("bi-encoder")
@_flickr_option
@click.option(
    "--flowers",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="flowers-dev folder, used only to choose the ConSE mix.",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Where to write the weights (default: the package's weights folder).",
)
@_cache_option
@click.option("--seed", default=0, show_default=True)
def train_biencoder_cmd(
    flickr: Path, flowers: Path | None, out: Path | None, cache: Path | None, seed: int
) -> None:
    """Train the projection heads of vtsearch-lite (towers frozen) and write safetensors.

    \b
    Example:
      vtsearch train bi-encoder --flickr ../shared/data/flickr8k --out /tmp/weights
    """
    from vtsearch.training.train_biencoder import train_biencoder

    out = out or Path(__file__).parent / "models" / "weights"
    metrics = train_biencoder(flickr, out, seed=seed, cache_dir=cache, flowers_dir=flowers)
    click.echo(json.dumps(metrics, indent=2, default=str))


@train.command("fusion")
@click.option(
    "--flickr",
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    default=None,
    help="Flickr8k folder: train the shipped scorer from scratch (train split, dev selection).",
)
@click.option(
    "--captions",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    default=None,
    help="Your image<TAB>caption file: fine-tune the scorer on your own pictures.",
)
@click.option(
    "--images",
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    default=None,
    help="Folder the --captions image names are relative to (default: the file's folder).",
)
@click.option(
    "--base",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    default=None,
    help="Scorer to fine-tune (default: the shipped one).",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Weights file (default with --flickr: the package's vtsearch-lite-fusion.safetensors).",
)
@_cache_option
@click.option("--epochs", default=None, type=int, help="Epochs (default: 4).")
@click.option("--folds", default=5, show_default=True, help="Cross-fitting folds (--flickr).")
@click.option("--seed", default=0, show_default=True)
@click.pass_context
def train_fusion_cmd(
    ctx: click.Context,
    flickr: Path | None,
    captions: Path | None,
    images: Path | None,
    base: Path | None,
    out: Path | None,
    cache: Path | None,
    epochs: int | None,
    folds: int,
    seed: int,
) -> None:
    """Train the cross-attention fusion re-ranker (--flickr), or fine-tune it on your own
    captioned pictures (--captions); then use it with --reranker FILE.

    \b
    Example:
      vtsearch train fusion --flickr ../shared/data/flickr8k --out /tmp/fusion.safetensors
      vtsearch train fusion --captions my/captions.tsv --out my-fusion.safetensors
      vtsearch --reranker my-fusion.safetensors query "grandma's red bicycle"
    """
    from vtsearch.search.rerank import default_weights

    log = lambda m: click.echo(m, err=True)  # noqa: E731
    if (flickr is None) == (captions is None):
        raise click.UsageError("give either --flickr (train) or --captions (fine-tune)")
    if flickr is not None:
        from vtsearch.training.train_fusion import train_fusion

        out = out or default_weights("vtsearch-lite")
        metrics = train_fusion(
            flickr, out, cache_dir=cache, seed=seed, folds=folds, epochs=epochs or 4, log=log
        )
    else:
        from vtsearch.models.registry import load_embedder
        from vtsearch.search.evaluate import read_captions
        from vtsearch.training.finetune_fusion import finetune_fusion

        if out is None:
            raise click.UsageError("--out is needed with --captions (the shipped file stays)")
        base = base or default_weights("vtsearch-lite")
        obj = ctx.find_root().obj or {}
        embedder = load_embedder(obj.get("model") or "vtsearch-lite", obj.get("device"))
        metrics = finetune_fusion(
            read_captions(captions, None),
            images or captions.parent,
            out,
            embedder=embedder,
            base=base,
            epochs=epochs or 4,
            seed=seed,
            log=log,
        )
    click.echo(json.dumps(metrics, indent=2, default=str))


@train.command("tag-calibration")
@_flickr_option
@click.option(
    "--out",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Calibration file to record it in (default: the one shipped with the weights).",
)
@click.pass_context
def train_tag_calibration_cmd(ctx: click.Context, flickr: Path, out: Path | None) -> None:
    """Fit how the model's image-label similarity maps to a confidence, for `vtsearch tag`
    (on Flickr8k dev: a caption naming the label is the truth; about a minute on 2 cores).

    \b
    Example:
      vtsearch train tag-calibration --flickr ../shared/data/flickr8k
    """
    from dataclasses import asdict

    from vtsearch.models.calibration import CALIBRATIONS, save_tag_calibration
    from vtsearch.models.registry import load_embedder
    from vtsearch.training.tag_calibration import fit_tag_calibration

    obj = ctx.obj or {}
    embedder = load_embedder(obj.get("model") or "vtsearch-lite", obj.get("device"))
    fit = fit_tag_calibration(embedder, flickr)
    save_tag_calibration(embedder, fit.calibration, out or CALIBRATIONS)
    click.echo(json.dumps(asdict(fit), indent=2))


@train.command("concept-branch")
@_flickr_option
@_cache_option
@click.option("--label-alpha", type=float, default=0.1, show_default=True)
@click.option("--style", default="photo_definition", show_default=True, help="Class texts.")
def train_concept_branch_cmd(
    flickr: Path, cache: Path | None, label_alpha: float, style: str
) -> None:
    """Add the concept branch (all-mpnet-base-v2 ConSE vectors, read by label-like queries) to
    the shipped vtsearch-lite weights, and carry the re-ranker's query banks over.

    \b
    Example:
      vtsearch train concept-branch --flickr ../shared/data/flickr8k
    """
    from vtsearch.training.concept_branch import add_concept_branch

    click.echo(
        json.dumps(
            add_concept_branch(flickr, cache_dir=cache, label_alpha=label_alpha, style=style),
            indent=2,
        )
    )
