"""Train the cross-attention fusion scorer on Flickr8k (train split; choices on dev).

Recipe (see the issue notes for why): the scorer is trained as a residual on top of the bi-encoder,
listwise over the bi-encoder's top ``K`` candidates of each caption: ``logits = s * bi + g(text,
image)`` with ``g`` initialised to zero, cross-entropy to the true image. The candidate lists of
training captions come from bi-encoders that never saw those captions (k-fold cross-fitting), so
the lists and scores the scorer learns from look like the ones it meets at query time.
"""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vtsearch.models.fusion import FusionConfig, FusionScorer, save_fusion


@dataclass
class FusionData:
    """Everything a training or evaluation pass reads, indexed by image and caption position."""

    regions: np.ndarray  # [I, 49, region_dim] float32 (reduced)
    states: np.ndarray  # [C, T, 384] float16 (memory-mapped)
    lens: np.ndarray  # [C]
    caption_image: np.ndarray  # [C] image index of each caption


@dataclass
class Candidates:
    """Per caption: the bi-encoder's top-K image indices and their similarities."""

    ids: np.ndarray  # [C, K]
    scores: np.ndarray  # [C, K]


def top_candidates(
    text_vecs: torch.Tensor, image_vecs: torch.Tensor, image_index: np.ndarray, k: int
) -> Candidates:
    """Top-``k`` images of ``image_vecs`` (positions ``image_index``) for every text vector."""
    sims = text_vecs.float() @ image_vecs.float().T
    scores, idx = sims.topk(min(k, sims.shape[1]), dim=1)
    return Candidates(image_index[idx.numpy()], scores.numpy())


def _batch(
    data: FusionData, cand: Candidates, rows: np.ndarray, force_positive: bool
) -> tuple[torch.Tensor, ...]:
    ids = cand.ids[rows].copy()
    scores = cand.scores[rows].copy()
    target = np.full(len(rows), -1)
    for j, r in enumerate(rows):
        hit = np.flatnonzero(ids[j] == data.caption_image[r])
        if len(hit):
            target[j] = hit[0]
        elif force_positive:
            # The true image must be in the list to learn from it; it takes the last slot with the
            # lowest score in the list, a conservative stand-in for its unseen bi-encoder score.
            ids[j, -1], target[j] = data.caption_image[r], ids.shape[1] - 1
    t = int(data.lens[rows].max())
    states = torch.from_numpy(np.asarray(data.states[rows, :t], dtype=np.float32))
    mask = torch.arange(t)[None, :] < torch.from_numpy(data.lens[rows].astype(np.int64))[:, None]
    regions = torch.from_numpy(data.regions[ids])  # [B, K, N, C]
    return states, mask, regions, torch.from_numpy(scores), torch.from_numpy(target)


def _pair_logits(
    scorer: FusionScorer, states: torch.Tensor, mask: torch.Tensor, regions: torch.Tensor
) -> torch.Tensor:
    b, k = regions.shape[:2]
    st = states[:, None].expand(b, k, *states.shape[1:]).reshape(b * k, *states.shape[1:])
    mk = mask[:, None].expand(b, k, mask.shape[1]).reshape(b * k, -1)
    return scorer(st, mk, regions.reshape(b * k, *regions.shape[2:])).view(b, k)


@torch.no_grad()
def rerank_recall(
    scorer: FusionScorer,
    scale: float,
    data: FusionData,
    cand: Candidates,
    rows: np.ndarray,
    batch: int = 64,
) -> dict[str, float]:
    """Text->image R@1/5/10 among the candidates, bi-encoder alone and re-ranked.

    A caption whose image is not among its candidates counts as a miss for both.
    """
    scorer.eval()
    ranks_bi, ranks_rr = [], []
    for i in range(0, len(rows), batch):
        r = rows[i : i + batch]
        states, mask, regions, bi, target = _batch(data, cand, r, force_positive=False)
        g = _pair_logits(scorer, states, mask, regions)
        final = scale * bi + g
        for j in range(len(r)):
            if target[j] < 0:
                ranks_bi.append(10**6)
                ranks_rr.append(10**6)
                continue
            ranks_bi.append(int((bi[j] > bi[j, target[j]]).sum()) + 1)
            ranks_rr.append(int((final[j] > final[j, target[j]]).sum()) + 1)
    out = {}
    for name, ranks in (("bi", np.array(ranks_bi)), ("rerank", np.array(ranks_rr))):
        for k in (1, 5, 10):
            out[f"{name}_r{k}"] = float((ranks <= k).mean() * 100)
    return out


def _epoch_rows(
    rng: np.random.Generator, rows: np.ndarray, caption_image: np.ndarray
) -> np.ndarray:
    """One random caption of each image, in random order: an epoch sees every image once, and
    the captions of an image rotate over epochs."""
    images = caption_image[rows]
    order = rng.permutation(len(rows))
    _, first = np.unique(images[order], return_index=True)
    return rng.permutation(rows[order[first]])


def train_scorer(
    data: FusionData,
    train_cand: Candidates,
    train_rows: np.ndarray,
    dev_cand: Candidates,
    dev_rows: np.ndarray,
    *,
    config: FusionConfig,
    reducer_state: dict[str, torch.Tensor],
    seed: int = 0,
    epochs: int = 6,
    batch_size: int = 32,
    lr: float = 3e-4,
    init_scale: float = 30.0,
    log: callable | None = None,
    checkpoint: callable | None = None,
) -> tuple[FusionScorer, float, dict[str, float]]:
    """Listwise residual training; keeps the epoch with the best dev re-ranked R@1.

    Returns the scorer, the bi-encoder scale ``s`` (inference mixes ``bi + g / s``) and dev metrics.
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    scorer = FusionScorer(config)
    scorer.reducer.load_state_dict(reducer_state)
    # g starts at exactly zero: training begins from the bi-encoder's own ranking.
    torch.nn.init.zeros_(scorer.head[-1].weight)
    torch.nn.init.zeros_(scorer.head[-1].bias)
    log_scale = torch.nn.Parameter(torch.tensor(float(np.log(init_scale))))
    params = [p for n, p in scorer.named_parameters() if not n.startswith("reducer.")]
    opt = torch.optim.AdamW([*params, log_scale], lr=lr, weight_decay=0.01)
    steps = epochs * (len(np.unique(data.caption_image[train_rows])) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(steps, 1))
    best: tuple[float, dict, float, dict] | None = None
    for epoch in range(epochs):
        scorer.train()
        order = _epoch_rows(rng, train_rows, data.caption_image)
        t0, total = time.time(), 0.0
        for i in range(0, len(order) - batch_size + 1, batch_size):
            states, mask, regions, bi, target = _batch(
                data, train_cand, order[i : i + batch_size], force_positive=True
            )
            logits = log_scale.exp() * bi + _pair_logits(scorer, states, mask, regions)
            loss = F.cross_entropy(logits, target)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach())
        scale = float(log_scale.detach().exp())
        metrics = rerank_recall(scorer, scale, data, dev_cand, dev_rows)
        if log:
            log(
                f"epoch {epoch}: loss {total / max(len(order) // batch_size, 1):.4f} "
                f"scale {scale:.1f} dev {metrics} ({time.time() - t0:.0f} s)"
            )
        if best is None or metrics["rerank_r1"] > best[0]:
            state = {k: v.detach().clone() for k, v in scorer.state_dict().items()}
            best = (metrics["rerank_r1"], state, scale, metrics)
            if checkpoint is not None:
                # A long run that is stopped still leaves its best epoch behind.
                checkpoint(scorer, scale, metrics)
    assert best is not None
    scorer.load_state_dict(best[1])
    return scorer.eval(), best[2], best[3]


def save_trained(scorer: FusionScorer, scale: float, rerank_k: int, path: Path) -> None:
    save_fusion(scorer, path, extra={"mix": 1.0 / scale, "rerank_k": rerank_k})


def _caption_rows(cache: Path, names: list[str]) -> np.ndarray:
    """Row of each image's first five captions in the extracted caption states, split order."""
    rows: dict[str, list[int]] = {}
    for i, line in enumerate((cache / "captions.tsv").read_text().splitlines()):
        rows.setdefault(line.split("\t", 1)[0], []).append(i)
    return np.array([r for n in names for r in rows[n][:5]], dtype=np.int64)


def cross_fit_candidates(
    train: dict[str, torch.Tensor],
    dev: dict[str, torch.Tensor],
    *,
    folds: int,
    k: int,
    seed: int,
    log: callable | None = None,
) -> Candidates:
    """Candidates of every train caption from a bi-encoder trained without that caption's fold,
    searched among the fold's own images (a pool of about the size of a test collection)."""
    from vtsearch.models.lite import load_heads
    from vtsearch.models.train_biencoder import build_heads, train_biencoder

    shipped = load_heads()
    # The fold bi-encoders follow the shipped recipe, so their lists look like the shipped model's.
    defaults = inspect.signature(train_biencoder).parameters
    recipe = {k: defaults[k].default for k in ("label_smoothing", "mean_caption") if k in defaults}
    n = train["pooled"].shape[0]
    fold_of = np.random.default_rng(seed).permutation(n) % folds
    ids = np.zeros((5 * n, k), dtype=np.int64)
    scores = np.zeros((5 * n, k), dtype=np.float32)
    for f in range(folds):
        held = np.flatnonzero(fold_of == f)
        kept = np.flatnonzero(fold_of != f)
        kept_caps = (kept[:, None] * 5 + np.arange(5)).reshape(-1)
        held_caps = (held[:, None] * 5 + np.arange(5)).reshape(-1)
        part = {
            "pooled": train["pooled"][kept],
            "logits": train["logits"][kept],
            "text": train["text"][kept_caps],
        }
        t0 = time.time()
        heads, _ = build_heads(
            part,
            dev,
            config=shipped.config,
            class_emb=shipped.class_emb,
            seed=seed + 100 * f,
            **recipe,
        )
        with torch.no_grad():
            img = heads.image_vectors(train["pooled"][held], train["logits"][held])
            txt = heads.text_vectors(train["text"][held_caps])
        c = top_candidates(txt, img, held, k)
        ids[held_caps], scores[held_caps] = c.ids, c.scores
        if log:
            log(f"fold {f}: bi-encoder on {len(kept)} images in {time.time() - t0:.0f} s")
    return Candidates(ids, scores)


def train_fusion(
    flickr_dir: Path,
    out_path: Path,
    *,
    cache_dir: Path | None = None,
    seed: int = 0,
    folds: int = 5,
    k: int = 20,
    epochs: int = 6,
    config: FusionConfig | None = None,
    log: callable | None = None,
) -> dict[str, float]:
    """Train the fusion scorer for vtsearch-lite and write ``out_path`` (safetensors)."""
    from vtsearch.models.features import DEFAULT_CACHE_DIR
    from vtsearch.models.fusion_data import extract_regions, extract_text_states
    from vtsearch.models.lite import load_heads
    from vtsearch.models.train_biencoder import load_split_features

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

    t0 = time.time()
    sample = np.random.default_rng(seed).choice(n_train, size=min(1500, n_train), replace=False)
    raw = torch.from_numpy(np.asarray(regions7[np.sort(sample)], dtype=np.float32))
    scorer0 = FusionScorer(config)
    scorer0.reducer.fit(raw.reshape(-1, raw.shape[-1]))
    reduced = np.empty((len(names), 49, config.region_dim), dtype=np.float32)
    for i in range(0, len(names), 500):
        chunk = torch.from_numpy(np.asarray(regions7[i : i + 500], dtype=np.float32))
        reduced[i : i + 500] = scorer0.reducer(chunk).numpy()
    caption_rows = _caption_rows(cache, names)
    data = FusionData(
        reduced,
        states[caption_rows] if isinstance(states, np.ndarray) else states,
        lens[caption_rows],
        np.repeat(np.arange(len(names)), 5),
    )
    if log:
        log(f"reducer fitted and regions reduced in {time.time() - t0:.0f} s")

    train = load_split_features(flickr_dir, "train", None)
    dev = load_split_features(flickr_dir, "dev", None)
    cand_file = cache / f"candidates-f{folds}-k{k}-s{seed}.npz"
    if cand_file.exists():
        with np.load(cand_file) as z:
            train_cand = Candidates(z["ids"], z["scores"])
    else:
        train_cand = cross_fit_candidates(train, dev, folds=folds, k=k, seed=seed, log=log)
        np.savez(cand_file, ids=train_cand.ids, scores=train_cand.scores)
    heads = load_heads()
    with torch.no_grad():
        dev_img = heads.image_vectors(dev["pooled"], dev["logits"])
        dev_txt = heads.text_vectors(dev["text"])
    dev_index = np.arange(n_train, len(names))
    dev_cand_local = top_candidates(dev_txt, dev_img, dev_index, k)
    # Candidates are indexed by caption row; dev captions follow the train ones.
    cand = Candidates(
        np.concatenate([train_cand.ids, dev_cand_local.ids]),
        np.concatenate([train_cand.scores, dev_cand_local.scores]),
    )
    train_rows = np.arange(5 * n_train)
    dev_rows = np.arange(5 * n_train, 5 * len(names))
    scorer, scale, metrics = train_scorer(
        data,
        cand,
        train_rows,
        cand,
        dev_rows,
        config=config,
        reducer_state=scorer0.reducer.state_dict(),
        seed=seed,
        epochs=epochs,
        log=log,
        checkpoint=lambda sc, scale, _m: save_trained(sc, scale, k, out_path),
    )
    save_trained(scorer, scale, k, out_path)
    return {**metrics, "scale": scale, "seconds": time.time() - t0}
