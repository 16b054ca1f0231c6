"""Train the heads of vtsearch-lite on Flickr8k and write its weights file.

The towers are locked (LiT), so training runs on cached tower features: the first run extracts
them (minutes), later runs take about two minutes on two CPU cores.

Recipe: an ensemble of independently seeded head pairs (MLP plus linear shortcut) on z-scored
features, symmetric InfoNCE with a learned temperature and label smoothing 0.1, one caption per
image per batch (two captions of one image are never each other's negatives) plus a half-weight
image-to-text term whose positive is the mean of all 5 captions, early stopping on Flickr8k dev.
The ConSE branch needs no training; its settings were chosen on Flickr8k dev and flowers-dev
(see ``weights/MODEL_CARD.md``).

Command line::

    python -m vtsearch.models.train_biencoder --flickr ../shared/data/flickr8k \\
        --flowers ../shared/data/flowers-dev --out vtsearch/models/weights
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import math
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vtsearch.errors import DatasetError
from vtsearch.models.features import image_features, text_features
from vtsearch.models.lite import MODEL_ID, LiteConfig, LiteHeads, save_heads

CAPTIONS_PER_IMAGE = 5
FLOWER_QUERY = "a photo of {}"
#: How each ImageNet class is written before MiniLM embeds it; see :func:`class_texts`.
CLASS_TEXT_STYLES = ("first", "synonyms", "photo", "definition", "photo_definition")


def load_flickr_split(flickr_dir: Path, split: str) -> tuple[list[Path], list[list[str]]]:
    """Image paths of a Flickr8k split and the five captions of each, in split-file order.

    Example:
        >>> paths, caps = load_flickr_split(Path("flickr8k"), "dev")  # doctest: +SKIP
        >>> len(paths), len(caps[0])
        (1000, 5)
    """
    flickr_dir = Path(flickr_dir)
    split_file = flickr_dir / "splits" / f"{split}.txt"
    tsv = flickr_dir / "captions.tsv"
    if not split_file.is_file() or not tsv.is_file():
        raise DatasetError(f"{flickr_dir} is not a Flickr8k folder (needs captions.tsv, splits/)")
    names = [ln.strip() for ln in split_file.read_text().splitlines() if ln.strip()]
    captions: dict[str, list[str]] = {}
    with tsv.open(newline="", encoding="utf-8") as f:
        rows = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        next(rows, None)
        for row in rows:
            if len(row) >= 2:
                captions.setdefault(row[0], []).append(row[1])
    short = [n for n in names if len(captions.get(n, [])) < CAPTIONS_PER_IMAGE]
    if short:
        raise DatasetError(f"{len(short)} {split} image(s) lack 5 captions, e.g. {short[0]}")
    paths = [flickr_dir / "images" / n for n in names]
    return paths, [captions[n][:CAPTIONS_PER_IMAGE] for n in names]


def load_flowers(flowers_dir: Path) -> tuple[list[Path], np.ndarray, list[str]]:
    """Photos of a class-per-folder set, their integer labels, and the folder names."""
    flowers_dir = Path(flowers_dir)
    if not flowers_dir.is_dir():
        raise DatasetError(f"{flowers_dir} is not a folder")
    species = sorted(d.name for d in flowers_dir.iterdir() if d.is_dir())
    if not species:
        raise DatasetError(f"{flowers_dir} has no class folders")
    paths, labels = [], []
    for i, name in enumerate(species):
        for p in sorted((flowers_dir / name).iterdir()):
            if p.is_file():
                paths.append(p)
                labels.append(i)
    return paths, np.asarray(labels), species


def class_texts(style: str) -> list[list[str]]:
    """Texts describing each ImageNet class; a class's embedding is the mean over its texts.

    Styles: ``first`` (first WordNet lemma), ``synonyms`` (all lemmas), ``photo`` ("a photo of a"
    + all lemmas), ``definition`` (lemmas + WordNet gloss), ``photo_definition`` (both texts).
    """
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    out = []
    for i in range(info.num_classes()):
        names = info.index_to_description(i)
        detailed = info.index_to_description(i, detailed=True)
        texts = {
            "first": [names.split(",")[0].strip()],
            "synonyms": [names],
            "photo": [f"a photo of a {names}"],
            "definition": [detailed],
            "photo_definition": [f"a photo of a {names}", detailed],
        }.get(style)
        if texts is None:
            raise ValueError(f"unknown class text style {style!r}; use one of {CLASS_TEXT_STYLES}")
        out.append(texts)
    return out


def class_embeddings(style: str, cache_dir: Path | None = None, tower=None) -> torch.Tensor:
    """Unit MiniLM embeddings ``[1000, 384]`` of the ImageNet classes written in ``style``."""
    groups = class_texts(style)
    flat = [t for g in groups for t in g]
    emb = torch.from_numpy(text_features(flat, cache_dir, tower=tower))
    sizes = [len(g) for g in groups]
    means = torch.stack([chunk.mean(0) for chunk in torch.split(emb, sizes)])
    return F.normalize(means, dim=-1)


def retrieval_recall(
    img: torch.Tensor, txt: torch.Tensor, ks: tuple[int, ...] = (1, 5, 10)
) -> dict[str, float]:
    """Flickr8k protocol: ``txt`` holds the 5 captions of image ``i`` at rows ``5i..5i+4``.

    Returns ``t2i_R@K`` and ``i2t_R@K`` in percent.
    """
    n = img.shape[0]
    sims = txt @ img.T  # [5N, N]
    owner = torch.arange(n).repeat_interleave(CAPTIONS_PER_IMAGE)
    # Rank of the right image for each caption: how many images score strictly higher.
    right = sims[torch.arange(len(owner)), owner]
    t2i_rank = (sims > right[:, None]).sum(1)
    # For each image, the best rank among its five captions.
    sims_i = sims.T  # [N, 5N]
    best = sims_i.view(n, n, CAPTIONS_PER_IMAGE)[torch.arange(n), torch.arange(n)].max(1).values
    i2t_rank = (sims_i > best[:, None]).sum(1)
    out = {}
    for k in ks:
        out[f"t2i_R@{k}"] = 100.0 * (t2i_rank < k).float().mean().item()
    for k in ks:
        out[f"i2t_R@{k}"] = 100.0 * (i2t_rank < k).float().mean().item()
    return out


def class_precision(
    img: torch.Tensor, labels: np.ndarray, queries: torch.Tensor, k: int = 50
) -> list[float]:
    """Precision@k of query ``c`` over ``img`` where relevant means ``labels == c``."""
    lab = torch.as_tensor(labels)
    top = (queries @ img.T).topk(k, dim=1).indices
    return [(lab[top[c]] == c).float().mean().item() for c in range(queries.shape[0])]


def _seed(seed: int) -> torch.Generator:
    torch.manual_seed(seed)
    np.random.seed(seed)
    return torch.Generator().manual_seed(seed)


def fit_heads(
    heads: LiteHeads,
    train: dict[str, torch.Tensor],
    dev: dict[str, torch.Tensor],
    *,
    member: int = 0,
    seed: int = 0,
    epochs: int = 80,
    batch_size: int = 1024,
    lr: float = 1e-3,
    weight_decay: float = 0.05,
    patience: int = 8,
    label_smoothing: float = 0.0,
    mean_caption: float = 0.0,
) -> dict[str, float]:
    """Train one ensemble member's head pair in place; keep its epoch best on dev mean R@10.

    Symmetric InfoNCE with the member's learned temperature. ``train``/``dev`` hold ``pooled``
    ``[N, 1280]`` and ``text`` ``[5N, 384]`` (the 5 captions of image ``i`` at rows ``5i..5i+4``).
    ``label_smoothing`` goes to both cross-entropies. ``mean_caption`` > 0 adds, with that
    weight, an image-to-text InfoNCE whose positive is the unit mean of the image's 5 caption
    vectors (every caption contributes, not only the sampled one). Returns the member's best dev
    figures.
    """
    gen = _seed(seed)
    n = train["pooled"].shape[0]
    mean_text = None
    if mean_caption > 0:
        dim = train["text"].shape[-1]
        mean_text = F.normalize(train["text"].view(n, CAPTIONS_PER_IMAGE, dim).mean(1), dim=-1)
    modules = [heads.image_heads[member], heads.text_heads[member]]
    # No weight decay on the temperature: decay would pull it towards a flat softmax.
    groups = [
        {"params": [p for m in modules for p in m.parameters()]},
        {"params": [heads.logit_scale], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
    steps = epochs * math.ceil(n / batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    best, best_state, stale = -1.0, None, 0
    best_metrics: dict[str, float] = {}
    for epoch in range(epochs):
        heads.train()
        perm = torch.randperm(n, generator=gen)
        for start in range(0, n, batch_size):
            idx = perm[start : start + batch_size]
            if len(idx) < 2:
                continue
            # One random caption per image, so no positive ever shows up as a negative.
            pick = torch.randint(0, CAPTIONS_PER_IMAGE, (len(idx),), generator=gen)
            hi = heads.head_images(train["pooled"][idx], member, logits=train["logits"][idx])
            ht = heads.head_texts(train["text"][idx * CAPTIONS_PER_IMAGE + pick], member)
            scale = heads.logit_scale[member].clamp(max=math.log(100.0)).exp()
            logits = scale * hi @ ht.T
            target = torch.arange(len(idx))
            ls = label_smoothing
            loss = (
                F.cross_entropy(logits, target, label_smoothing=ls)
                + F.cross_entropy(logits.T, target, label_smoothing=ls)
            ) / 2
            if mean_text is not None:
                hm = heads.head_texts(mean_text[idx], member)
                loss = loss + mean_caption * F.cross_entropy(
                    scale * hi @ hm.T, target, label_smoothing=ls
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        heads.eval()
        with torch.no_grad():
            m = retrieval_recall(
                heads.head_images(dev["pooled"], member, logits=dev["logits"]),
                heads.head_texts(dev["text"], member),
            )
        score = (m["t2i_R@10"] + m["i2t_R@10"]) / 2
        if score > best:
            best, stale, best_metrics = score, 0, {**m, "epoch": epoch + 1}
            best_state = [copy.deepcopy(mod.state_dict()) for mod in modules]
        else:
            stale += 1
            if stale >= patience:
                break
    if best_state is not None:
        for mod, state in zip(modules, best_state, strict=True):
            mod.load_state_dict(state)
    heads.eval()
    return best_metrics


def build_heads(
    train: dict[str, torch.Tensor],
    dev: dict[str, torch.Tensor],
    *,
    config: LiteConfig,
    class_emb: torch.Tensor | None = None,
    seed: int = 0,
    **fit_kwargs: float,
) -> tuple[LiteHeads, dict[str, float]]:
    """New heads with train-split z-score statistics and class embeddings, fitted on features.

    ``train``/``dev`` hold ``pooled`` ``[N, 1280]``, ``logits`` ``[N, 1000]`` and ``text``
    ``[5N, 384]`` tower features.

    Example:
        >>> heads, dev_metrics = build_heads(train, dev, config=LiteConfig())  # doctest: +SKIP
    """
    torch.manual_seed(seed)
    heads = LiteHeads(config)
    heads.img_mean.copy_(train["pooled"].mean(0))
    heads.img_std.copy_(train["pooled"].std(0).clamp(min=1e-4))
    heads.txt_mean.copy_(train["text"].mean(0))
    heads.txt_std.copy_(train["text"].std(0).clamp(min=1e-4))
    if config.image_logits:
        heads.logit_mean.copy_(train["logits"].mean(0))
        heads.logit_std.copy_(train["logits"].std(0).clamp(min=1e-4))
    if class_emb is not None:
        heads.class_emb.copy_(class_emb)
    elif config.alpha < 1.0:
        raise ValueError("the ConSE branch (alpha < 1) needs class embeddings")
    metrics: dict[str, float] = {}
    for member in range(config.members):
        # Each member sees its own seed: different inits and batches are what the ensemble averages.
        m = fit_heads(heads, train, dev, member=member, seed=seed + member, **fit_kwargs)
        metrics.update({f"member{member}_{k}": v for k, v in m.items()})
    with torch.no_grad():
        metrics.update(
            retrieval_recall(
                heads.head_images(dev["pooled"], logits=dev["logits"]),
                heads.head_texts(dev["text"]),
            )
        )
    return heads, metrics


def evaluate(
    heads: LiteHeads,
    split: dict[str, torch.Tensor],
    flowers: dict[str, object] | None = None,
) -> dict[str, float]:
    """Retrieval recall on a Flickr8k split and, when given, per-class flowers-dev P@50."""
    with torch.no_grad():
        out = retrieval_recall(
            heads.image_vectors(split["pooled"], split["logits"]), heads.text_vectors(split["text"])
        )
        if flowers is not None:
            prec = class_precision(
                heads.image_vectors(flowers["pooled"], flowers["logits"]),
                flowers["labels"],
                heads.text_vectors(flowers["queries"]),
            )
            out.update({f"P@50_{s}": p for s, p in zip(flowers["species"], prec, strict=True)})
            out["P@50_mean"] = float(np.mean(prec))
    return out


def load_split_features(
    flickr_dir: Path, split: str, cache_dir: Path | None, image_tower=None, text_tower=None
) -> dict[str, torch.Tensor]:
    """Cached tower features of a Flickr8k split: pooled, logits, and 5 caption rows per image."""
    paths, caps = load_flickr_split(flickr_dir, split)
    img = image_features(paths, cache_dir, tower=image_tower)
    txt = text_features([c for group in caps for c in group], cache_dir, tower=text_tower)
    return {
        "pooled": torch.from_numpy(img["pooled"]),
        "logits": torch.from_numpy(img["logits"]),
        "text": torch.from_numpy(txt),
    }


def load_flowers_features(
    flowers_dir: Path, cache_dir: Path | None, image_tower=None, text_tower=None
) -> dict[str, object]:
    """Cached features of a class-per-folder set and its ``a photo of {class}`` queries."""
    paths, labels, species = load_flowers(flowers_dir)
    img = image_features(paths, cache_dir, tower=image_tower)
    queries = text_features([FLOWER_QUERY.format(s) for s in species], cache_dir, tower=text_tower)
    return {
        "pooled": torch.from_numpy(img["pooled"]),
        "logits": torch.from_numpy(img["logits"]),
        "labels": labels,
        "species": species,
        "queries": torch.from_numpy(queries),
    }


def train_biencoder(
    flickr_dir: Path,
    out_dir: Path,
    *,
    seed: int = 0,
    cache_dir: Path | None = None,
    flowers_dir: Path | None = None,
    config: LiteConfig | None = None,
    class_style: str = "synonyms",
    epochs: int = 80,
    batch_size: int = 1024,
    lr: float = 1e-3,
    weight_decay: float = 0.05,
    report_test: bool = True,
    label_smoothing: float = 0.1,
    mean_caption: float = 0.5,
) -> dict:
    """Train vtsearch-lite's heads on Flickr8k train and write its weights file into ``out_dir``.

    Args:
        flickr_dir: the Flickr8k folder (``images/``, ``captions.tsv``, ``splits/``).
        out_dir: where the weights file goes.
        seed: seeds torch and numpy; the same seed and features give the same weights.
        cache_dir: tower feature cache (default ``<repo>/.cache/features``).
        flowers_dir: optional class-per-folder dev set, only evaluated.
        config: head shape and ConSE settings (defaults: the shipped choice).
        class_style: how ImageNet class names are written for ConSE (see :func:`class_texts`).
        epochs, batch_size, lr, weight_decay: optimiser settings.
        label_smoothing, mean_caption: loss settings (see :func:`fit_heads`).
        report_test: also score the test split (for the model card; never used for choices).

    Returns:
        Metrics: ``dev_heads`` (heads alone), ``dev``, optionally ``test`` and ``flowers``,
        plus ``train_seconds`` and ``weights`` (the written file).

    Example:
        >>> m = train_biencoder(Path("../shared/data/flickr8k"), Path("/tmp/w"))  # doctest: +SKIP
        >>> m["test"]["t2i_R@10"] > 60
        True
    """
    t0 = time.perf_counter()
    config = config or LiteConfig()
    torch.manual_seed(seed)
    image_tower = text_tower = None  # built by the feature cache only on a miss
    train = load_split_features(flickr_dir, "train", cache_dir, image_tower, text_tower)
    dev = load_split_features(flickr_dir, "dev", cache_dir, image_tower, text_tower)

    class_emb = class_embeddings(class_style, cache_dir) if config.alpha < 1.0 else None
    t_fit = time.perf_counter()
    heads, dev_heads = build_heads(
        train, dev, config=config, class_emb=class_emb, seed=seed, epochs=epochs,
        batch_size=batch_size, lr=lr, weight_decay=weight_decay,
        label_smoothing=label_smoothing, mean_caption=mean_caption,
    )  # fmt: skip
    fit_seconds = time.perf_counter() - t_fit

    out_dir = Path(out_dir)
    weights = out_dir / f"{MODEL_ID}.safetensors"
    save_heads(heads, weights)
    # Score what was written: the shipped file is fp16, so reload it rather than trust memory.
    from vtsearch.models.lite import load_heads

    shipped = load_heads(weights)
    flowers = load_flowers_features(flowers_dir, cache_dir) if flowers_dir else None
    metrics: dict = {
        "seed": seed,
        "config": json.loads(config.to_json()),
        "class_style": class_style,
        "label_smoothing": label_smoothing,
        "mean_caption": mean_caption,
        "dev_heads": dev_heads,
        "dev": evaluate(shipped, dev, flowers),
        "fit_seconds": fit_seconds,
    }
    if flowers is not None:
        heads_only = replace(config, alpha=1.0)
        alone = LiteHeads(heads_only)
        alone.load_state_dict(shipped.state_dict())
        metrics["flowers_heads_only"] = evaluate(alone.eval(), dev, flowers)["P@50_mean"]
    if report_test:
        test = load_split_features(flickr_dir, "test", cache_dir, image_tower, text_tower)
        metrics["test"] = evaluate(shipped, test)
    metrics["train_seconds"] = time.perf_counter() - t0
    metrics["weights"] = str(weights)
    return metrics


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--flickr", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--flowers", type=Path)
    ap.add_argument("--cache", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    metrics = train_biencoder(
        args.flickr, args.out, seed=args.seed, cache_dir=args.cache, flowers_dir=args.flowers
    )
    print(json.dumps(metrics, indent=2))  # CLI entry point: the one place this module prints


if __name__ == "__main__":
    main()
