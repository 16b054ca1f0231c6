"""The `vtsearch` command: a thin click layer over ``vtsearch.api.Engine``.

Heavy libraries (torch, transformers, faiss) are imported inside commands so `--help` is instant.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import click

from vtsearch import config
from vtsearch.errors import VtsearchError


class _Group(click.Group):
    """Turns library errors into one line on stderr and the error's exit code."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except VtsearchError as e:
            click.echo(f"Error: {e}", err=True)
            ctx.exit(e.exit_code)


def _shown(path: str) -> str:
    """A path as a message can print it: a name that is not UTF-8 shows its odd bytes escaped
    (``\\xe9``), not as lone surrogates that no terminal or JSON parser takes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _engine(ctx: click.Context):
    from vtsearch.api import Engine

    return Engine(
        ctx.obj["db"],
        model=ctx.obj["model"],
        device=ctx.obj["device"],
        reranker=ctx.obj["reranker"],
    )


@click.group(cls=_Group)
@click.option(
    "--db",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Collection folder (default: $VTSEARCH_HOME/default).",
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
        db=db or config.default_collection(), model=model, device=device, reranker=reranker
    )


@main.command()
@click.argument(
    "folder", required=False, type=click.Path(path_type=Path, exists=True, file_okay=False)
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=None,
    help="Images per forward pass (default: 6 on CPU, 64 on GPU).",
)
@click.option(
    "--workers",
    default=None,
    type=click.IntRange(min=0),
    help="Decode threads on CPU (default: one per core), processes on GPU (cores - 1, at most "
    "8); 0 decodes in the main thread.",
)
@click.option(
    "--ext",
    "extensions",
    multiple=True,
    help="File extension to include (repeatable; default: common image types).",
)
@click.option(
    "--max-size-mb",
    type=click.IntRange(min=1),
    default=config.DEFAULT_MAX_FILE_BYTES // (1024 * 1024),
    show_default=True,
    help="Skip files larger than this.",
)
@click.pass_context
def index(
    ctx: click.Context,
    folder: Path | None,
    batch_size: int | None,
    workers: int | None,
    extensions: tuple[str, ...],
    max_size_mb: int,
) -> None:
    """Index the images under FOLDER; re-runs only touch what changed.

    Without FOLDER, every folder indexed into the collection before is refreshed (see
    `vtsearch status`); one that is gone is reported and keeps its images until
    `vtsearch roots remove`. Ctrl-C stops cleanly at any point; run again to resume.

    \b
    Example:
      vtsearch index ./photos
      vtsearch index                      # refresh every indexed folder
      vtsearch --db ./my-index index ./photos --batch-size 64
    """
    from tqdm import tqdm

    stop = {"asked": False}

    def on_sigint(_sig: int, _frame: object) -> None:
        stop["asked"] = True
        click.echo("\nStopping...", err=True)

    previous = signal.signal(signal.SIGINT, on_sigint)
    quiet = not sys.stderr.isatty()
    bars: dict[str, tqdm] = {}

    def follow(desc: str, unit: str):
        def update(done: int, total: int) -> None:
            bar = bars.get(desc)
            if bar is None:
                bar = bars[desc] = tqdm(total=total, unit=unit, desc=desc, disable=quiet)
            bar.total = total
            bar.update(done - bar.n)  # update() (not n=) keeps tqdm's rate right

        return update

    exts = tuple(e if e.startswith(".") else f".{e}" for e in extensions)
    try:
        report = _engine(ctx).index(
            folder,
            batch_size=batch_size,
            workers=workers,
            extensions=exts or config.DEFAULT_EXTENSIONS,
            max_bytes=max_size_mb * 1024 * 1024,
            progress=follow("embedding", "img"),
            hash_progress=follow("reading new files", "file"),
            should_stop=lambda: stop["asked"],
        )
    finally:
        for bar in bars.values():
            bar.close()
        signal.signal(signal.SIGINT, previous)
    click.echo(
        f"{report.scanned} files: {report.embedded} embedded, {report.unchanged} unchanged, "
        f"{report.relinked} moved, {report.copied} copied, {report.deleted} deleted, "
        f"{len(report.failed)} failed ({report.seconds:.1f} s, "
        f"{report.images_per_second:.1f} images/s)"
    )
    for path, reason in report.failed:
        click.echo(f"  failed: {_shown(path)}: {reason}", err=True)
    for path, reason in report.kept:
        click.echo(f"  not updated: {_shown(path)}: {reason} (indexed version kept)", err=True)
    for path in report.missing_roots:
        click.echo(
            f"  missing folder: {_shown(path)} (its images are kept; to drop them: "
            f"vtsearch roots remove {_shown(path)})",
            err=True,
        )
    for path in report.dropped_roots:
        click.echo(f"  forgot folder: {_shown(path)} (gone, no images left)", err=True)
    if report.interrupted:
        click.echo("Interrupted: run the same command again to resume.", err=True)
        ctx.exit(130)


@main.command()
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
    eng = _engine(ctx)
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


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Show the collection: model, counts, failed files, size on disk.

    \b
    Example:
      vtsearch status
    """
    st = _engine(ctx).status()
    if as_json:
        data = {**st.__dict__, "failed": [(_shown(p), r) for p, r in st.failed]}
        data["roots"] = [
            {"path": _shown(p), "exists": ok, "images": n} for p, ok, n in st.roots
        ]
        click.echo(json.dumps(data, default=str))
        return
    click.echo(f"collection: {st.path}" + (" (read-only for you)" if st.readonly else ""))
    click.echo(f"model:      {st.model_id} (dim {st.dim}, index {st.index_kind})")
    click.echo(f"indexed:    {st.indexed}")
    click.echo(f"failed:     {st.counts.get('failed', 0)}")
    click.echo(f"texts:      {st.counts.get('texts', 0)}")
    click.echo(f"on disk:    {st.bytes_on_disk / 1e6:.1f} MB")
    click.echo(f"folders:    {len(st.roots)}")
    for path, exists, n in st.roots:
        click.echo(f"  {_shown(path)} ({'' if exists else 'missing, '}{n} images)")
    for path, reason in st.failed:
        click.echo(f"  failed: {_shown(path)}: {reason}")


@main.group()
def roots() -> None:
    """The folders indexed into the collection.

    \b
    Example:
      vtsearch roots list
      vtsearch roots remove /media/old-drive/photos
    """


@roots.command("list")
@click.pass_context
def roots_list(ctx: click.Context) -> None:
    """List the indexed folders, with their image counts; missing ones are marked.

    \b
    Example:
      vtsearch roots list
    """
    for path, exists, n in _engine(ctx).status().roots:
        click.echo(f"{_shown(path)}\t{n}\t{'ok' if exists else 'missing'}")


@roots.command("remove")
@click.argument("folder", type=click.Path(path_type=Path))
@click.pass_context
def roots_remove(ctx: click.Context, folder: Path) -> None:
    """Drop FOLDER and every image indexed under it from the collection (files stay on disk).

    \b
    Example:
      vtsearch roots remove ~/Pictures/old
    """
    n = _engine(ctx).forget_root(folder)
    click.echo(f"removed {folder}: {n} images dropped from the collection")


@main.group()
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
    n = _engine(ctx).add_texts(lines, source=source or file.name)
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
    n = _engine(ctx).remove_texts(source)
    click.echo(f"{n} texts removed")


@main.command("eval")
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


@main.group()
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
    from vtsearch.models.train_biencoder import train_biencoder

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
        from vtsearch.models.train_fusion import train_fusion

        out = out or default_weights("vtsearch-lite")
        metrics = train_fusion(
            flickr, out, cache_dir=cache, seed=seed, folds=folds, epochs=epochs or 4, log=log
        )
    else:
        from vtsearch.models.finetune_fusion import finetune_fusion
        from vtsearch.models.registry import load_embedder
        from vtsearch.search.evaluate import read_captions

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


from vtsearch.commands_optimize import optimize as _optimize  # noqa: E402

main.add_command(_optimize)
from vtsearch.commands_check import check as _check  # noqa: E402

main.add_command(_check)


if __name__ == "__main__":
    main()
