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

    python -m vtsearch.training.train_biencoder --flickr ../shared/data/flickr8k \\
        --flowers ../shared/data/flowers-dev --out vtsearch/models/weights
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vtsearch.models.lite import MODEL_ID, LiteConfig, LiteHeads, save_heads
from vtsearch.training.datasets import (
    CAPTIONS_PER_IMAGE,
    class_embeddings,
    class_precision,
    load_flowers_features,
    load_split_features,
    retrieval_recall,
)


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
