"""Train the cross-attention fusion scorer (Flickr8k train split, choices on dev; or fine-tune on a
user's own captioned images).

Recipe (see the issue notes for why): the scorer is a residual on top of the bi-encoder, trained
listwise over the bi-encoder's top ``K`` candidates in both directions:

    logits = s * (bi - a * prior(candidate)) + g(text, image)

``g`` starts at exactly zero, ``prior`` is the query-bank prior (:mod:`vtsearch.models.prior`),
``s`` and ``a`` are learned per direction, and the loss is cross-entropy to the right
candidate(s). The lists and priors of training items come from bi-encoders that never saw them
(k-fold cross-fitting), so they look like the ones the scorer meets at query time.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from vtsearch.models.fusion import FusionConfig, FusionScorer, save_fusion
from vtsearch.models.prior import QueryBankPrior
from vtsearch.training.cross_fit import (
    caption_rows_of,
    cross_fit,
    fold_assignment,
    joint_features,
    shipped_banks,
)
from vtsearch.training.fusion_scoring import (
    BETA,
    DIRECTIONS,
    INIT_ALPHA,
    INIT_GAIN,
    FusionData,
    Lists,
    Log,
    Mixer,
    calibrate,
    list_recall,
    make_lists,
    pair_logits,
    top_lists,
)


def _epoch_rows(rng: np.random.Generator, queries: np.ndarray, key: np.ndarray) -> np.ndarray:
    """Positions of one random query per distinct ``key[queries]`` value, in random order: for
    text->image an epoch sees every image once, with its captions rotating over epochs."""
    order = rng.permutation(len(queries))
    _, first = np.unique(key[queries][order], return_index=True)
    return rng.permutation(order[first])


def train_scorer(
    data: FusionData,
    train: dict[str, Lists],
    dev: dict[str, Lists],
    *,
    scorer: FusionScorer,
    seed: int = 0,
    epochs: int = 4,
    batch_size: int = 32,
    lr: float = 3e-3,
    init_scale: float = 30.0,
    init_alpha: float = INIT_ALPHA,
    init_gain: float | None = None,
    select_last: bool = False,
    log: Log | None = None,
    checkpoint: Callable[[FusionScorer, Mixer, dict], None] | None = None,
) -> tuple[FusionScorer, Mixer, dict[str, float]]:
    """Listwise residual training of ``scorer`` (its word and region maps stay frozen) over both
    directions' lists; keeps the epoch with the best dev re-ranked R@1 (text->image plus
    image->text), or the last with ``select_last``. ``init_gain`` sets the scorer's starting
    weight (a fresh scorer's unit gain is far too small next to the scaled bi-encoder score)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    if init_gain is not None:
        with torch.no_grad():
            scorer.log_gain.fill_(math.log(init_gain))
    mixer = Mixer(init_scale, init_alpha)
    opt = torch.optim.AdamW(
        [{"params": scorer.trainable()}, {"params": mixer.parameters(), "weight_decay": 0.0}],
        lr=lr,
        weight_decay=0.01,
    )
    keys = {"t2i": data.caption_image, "i2t": np.arange(len(data.regions))}
    per_epoch = sum(
        len(np.unique(keys[d][train[d].queries])) // batch_size for d in train if d in DIRECTIONS
    )
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=lr, total_steps=max(epochs * per_epoch, 1)
    )

    def select(metrics: dict[str, dict[str, float]]) -> float:
        return sum(m["rerank_r1"] for m in metrics.values())

    best: tuple[float, dict, dict, dict] | None = None
    for epoch in range(epochs):
        scorer.train()
        t0, total, steps = time.time(), 0.0, 0
        batches = [
            (d, rows[i : i + batch_size])
            for d in train
            for rows in [_epoch_rows(rng, train[d].queries, keys[d])]
            for i in range(0, len(rows) - batch_size + 1, batch_size)
        ]
        for j in rng.permutation(len(batches)):
            direction, rows = batches[j]
            logits, _, _, pos = pair_logits(scorer, mixer, data, train[direction], rows, direction)
            # Several right candidates (the five captions of an image) share the probability.
            loss = (
                torch.logsumexp(logits, 1) - torch.logsumexp(logits.masked_fill(~pos, -1e9), 1)
            ).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total, steps = total + float(loss.detach()), steps + 1
            if steps >= epochs * per_epoch:
                break
        metrics = {d: list_recall(scorer, mixer, data, dev[d], d) for d in dev}
        if log:
            log(
                f"epoch {epoch}: loss {total / max(steps, 1):.4f} {mixer.settings()} "
                f"dev {_brief(metrics)} ({time.time() - t0:.0f} s)"
            )
        if best is None or select_last or select(metrics) > best[0]:
            best = (
                select(metrics),
                {k: v.detach().clone() for k, v in scorer.state_dict().items()},
                {k: v.detach().clone() for k, v in mixer.state_dict().items()},
                metrics,
            )
            if checkpoint is not None:
                # A long run that is stopped still leaves its best epoch behind.
                checkpoint(scorer, mixer, metrics)
    assert best is not None
    scorer.load_state_dict(best[1])
    mixer.load_state_dict(best[2])
    flat = {f"{d}_{k}": v for d, m in best[3].items() for k, v in m.items()}
    return scorer.eval(), mixer, flat


def _brief(metrics: dict[str, dict[str, float]]) -> str:
    return " ".join(
        f"{d} bi {m['bi_r1']:.2f} prior {m['prior_r1']:.2f} rerank {m['rerank_r1']:.2f}"
        for d, m in metrics.items()
    )


def save_trained(
    scorer: FusionScorer,
    mixer: Mixer,
    rerank_k: int,
    path: Path,
    banks: dict[str, torch.Tensor] | None = None,
    beta: float = BETA,
) -> None:
    """Weights, per-direction mixing and prior settings, and the query banks, in one file."""
    settings = mixer.settings()
    for d in settings:
        settings[d]["beta"] = beta
    save_fusion(scorer, path, extra={"rerank_k": rerank_k, **settings}, tensors=banks)


# --- Flickr8k: cached features, cross-fitted lists ---


def train_fusion(
    flickr_dir: Path,
    out_path: Path,
    *,
    cache_dir: Path | None = None,
    seed: int = 0,
    folds: int = 5,
    k: int = 20,
    k_i2t: int = 10,
    epochs: int = 3,
    config: FusionConfig | None = None,
    log: Log | None = None,
) -> dict[str, float]:
    """Train the fusion scorer for vtsearch-lite and write ``out_path`` (safetensors).

    ``k``/``k_i2t``: list lengths for text->image and image->text (an image has five right
    captions, so a shorter list holds as much signal)."""
    from vtsearch.models.fusion import attach_heads
    from vtsearch.models.lite import load_heads
    from vtsearch.training.datasets import load_split_features
    from vtsearch.training.features import DEFAULT_CACHE_DIR
    from vtsearch.training.fusion_data import extract_regions, extract_text_states

    config = config or FusionConfig()
    cache = Path(cache_dir or DEFAULT_CACHE_DIR.parent / "fusion")
    splits = {
        s: (flickr_dir / "splits" / f"{s}.txt").read_text().split()
        for s in ("train", "dev", "test")
    }
    # Regions of all three splits are extracted in this order (test ones serve `vtsearch eval`);
    # only train and dev are read here.
    all_names = splits["train"] + splits["dev"] + splits["test"]
    names = splits["train"] + splits["dev"]
    cache.mkdir(parents=True, exist_ok=True)
    if not (cache / "captions.tsv").exists():
        lines = (flickr_dir / "captions.tsv").read_text(encoding="utf-8").splitlines()[1:]
        (cache / "captions.tsv").write_text("\n".join(lines))
    texts = [ln.split("\t", 1)[1] for ln in (cache / "captions.tsv").read_text().splitlines()]
    states, lens = extract_text_states(texts, cache)
    listed = cache / "images.txt"
    if listed.exists() and listed.read_text().split() != all_names:
        raise RuntimeError(f"{cache} holds regions of other images; delete it and run again")
    listed.write_text("\n".join(all_names))
    regions7, _ = extract_regions([str(flickr_dir / "images" / n) for n in all_names], cache)
    n_train = len(splits["train"])

    train = load_split_features(flickr_dir, "train", None)
    dev = load_split_features(flickr_dir, "dev", None)
    fit_file = cache / f"crossfit-f{folds}-k50-s{seed}.npz"

    def heads_path(f: int) -> Path:
        return cache / f"foldheads-f{folds}-s{seed}-{f}.safetensors"

    if fit_file.exists() and all(heads_path(f).exists() for f in range(folds)):
        with np.load(fit_file) as z:
            fit = dict(z)
    else:
        fit = cross_fit(train, dev, folds=folds, seed=seed, heads_path=heads_path, log=log)
        np.savez(fit_file, **fit)

    t0 = time.time()
    sample = np.sort(np.random.default_rng(seed).choice(n_train, min(1500, n_train), replace=False))
    raw = torch.from_numpy(np.asarray(regions7[sample], dtype=np.float32))
    scorer = FusionScorer(config)
    scorer.reducer.fit(raw.reshape(-1, raw.shape[-1]))
    caption_rows = caption_rows_of(cache, names)
    # Every train image and caption is seen through the joint space of the fold bi-encoder that
    # never saw it; dev ones through the shipped bi-encoder, as at query time.
    regions = np.empty((len(names), raw.shape[1], config.region_dim), dtype=np.float16)
    words = np.empty((len(caption_rows), states.shape[1], config.region_dim), dtype=np.float16)
    fold_of = fold_assignment(n_train, folds, seed)
    shipped = load_heads()
    for f in range(-1, folds):
        if f < 0:
            attach_heads(scorer, shipped)
            imgs = np.arange(n_train, len(names))
        else:
            attach_heads(scorer, load_heads(heads_path(f)))
            imgs = np.flatnonzero(fold_of == f)
        caps = (imgs[:, None] * 5 + np.arange(5)).reshape(-1)
        regions[imgs], words[caps] = joint_features(
            scorer, regions7, imgs, states, caption_rows[caps]
        )
    attach_heads(scorer, shipped)
    data = FusionData(
        regions,
        np.asarray(states[caption_rows]),
        lens[caption_rows],
        np.repeat(np.arange(len(names)), 5),
        words,
    )
    if log:
        log(f"joint-space regions and words of {len(names)} images in {time.time() - t0:.0f} s")

    b = int(np.flatnonzero(np.isclose(fit["betas"], BETA))[0])
    img_prior = np.zeros(len(names), np.float32)
    txt_prior = np.zeros(5 * len(names), np.float32)
    img_prior[:n_train], txt_prior[: 5 * n_train] = fit["img_prior"][b], fit["txt_prior"][b]

    banks = shipped_banks(train, seed)
    with torch.no_grad():
        dev_img = shipped.image_vectors(dev["pooled"], dev["logits"]).float()
        dev_txt = shipped.text_vectors(dev["text"]).float()
    img_prior[n_train:] = QueryBankPrior(banks["bank.texts"], BETA, 1.0).raw(dev_img).numpy()
    txt_prior[5 * n_train :] = QueryBankPrior(banks["bank.images"], BETA, 1.0).raw(dev_txt).numpy()
    train_caps, dev_caps = np.arange(5 * n_train), np.arange(5 * n_train, 5 * len(names))
    train_imgs, dev_imgs = np.arange(n_train), np.arange(n_train, len(names))
    ci = data.caption_image
    train_lists = {
        "t2i": make_lists("t2i", train_caps, fit["t2i_ids"], fit["t2i_sc"], img_prior, ci, k, True),
        "i2t": make_lists("i2t", train_imgs, fit["i2t_ids"], fit["i2t_sc"], txt_prior, ci, k, True),
    }
    dev_lists = {
        "t2i": top_lists("t2i", dev_txt, dev_img, dev_caps, dev_imgs, img_prior, ci, k),
        "i2t": top_lists("i2t", dev_img, dev_txt, dev_imgs, dev_caps, txt_prior, ci, k_i2t),
    }
    scorer, mixer, metrics = train_scorer(
        data,
        train_lists,
        dev_lists,
        scorer=scorer,
        seed=seed,
        epochs=epochs,
        init_gain=INIT_GAIN,
        log=log,
        checkpoint=lambda sc, mx, _m: save_trained(sc, mx, 50, out_path, banks),
    )
    mixer = calibrate(scorer, mixer, data, dev_lists, log=log)
    calibrated = {
        f"{d}_{key}": v
        for d in dev_lists
        for key, v in list_recall(scorer, mixer, data, dev_lists[d], d).items()
    }
    save_trained(scorer, mixer, 50, out_path, banks)
    return {
        **metrics,
        **{f"calibrated_{k}": v for k, v in calibrated.items()},
        "seconds": time.time() - t0,
    }
