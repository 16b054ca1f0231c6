"""Cross-fitting for fusion training: the candidate lists, priors and joint-space features of
every training item come from a bi-encoder trained without that item's fold, so they look like
what the scorer meets at query time; and the query banks shipped with the scorer."""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from vtsearch.models.fusion import FusionScorer
from vtsearch.models.prior import QueryBankPrior
from vtsearch.training.fusion_scoring import BANK_SIZE, Log


def caption_rows_of(cache: Path, names: list[str]) -> np.ndarray:
    """Row of each image's first five captions in the extracted caption states, split order."""
    rows: dict[str, list[int]] = {}
    for i, line in enumerate((cache / "captions.tsv").read_text().splitlines()):
        rows.setdefault(line.split("\t", 1)[0], []).append(i)
    return np.array([r for n in names for r in rows[n][:5]], dtype=np.int64)


def _bank_rows(n: int, seed: int) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).choice(n, min(BANK_SIZE, n), replace=False))


def fold_assignment(n: int, folds: int, seed: int) -> np.ndarray:
    """The cross-fitting fold of each of ``n`` training images."""
    return np.random.default_rng(seed).permutation(n) % folds


def cross_fit(
    train: dict[str, torch.Tensor],
    dev: dict[str, torch.Tensor],
    *,
    folds: int,
    seed: int,
    depth: int = 50,
    betas: tuple[float, ...] = (10.0, 20.0, 40.0),
    heads_path: Callable[[int], Path] | None = None,
    log: Log | None = None,
) -> dict[str, np.ndarray]:
    """Top-``depth`` lists (both directions) and query-bank priors of every train item, each from
    a bi-encoder trained without that item's fold, searched among the fold's own items (a pool of
    about the size of a test collection); the banks come from the other folds. Each fold's heads
    are saved to ``heads_path(fold)`` when given (the scorer's features come from them too)."""
    from vtsearch.models.lite import load_heads, save_heads
    from vtsearch.training.train_biencoder import build_heads, train_biencoder

    shipped = load_heads()
    # The fold bi-encoders follow the shipped recipe, so their lists look like the shipped model's.
    defaults = inspect.signature(train_biencoder).parameters
    recipe = {k: defaults[k].default for k in ("label_smoothing", "mean_caption") if k in defaults}
    n = train["pooled"].shape[0]
    fold_of = fold_assignment(n, folds, seed)
    rng = np.random.default_rng(seed + 1)
    out = {
        "t2i_ids": np.zeros((5 * n, depth), np.int64),
        "t2i_sc": np.zeros((5 * n, depth), np.float32),
        "i2t_ids": np.zeros((n, depth), np.int64),
        "i2t_sc": np.zeros((n, depth), np.float32),
        "img_prior": np.zeros((len(betas), n), np.float32),
        "txt_prior": np.zeros((len(betas), 5 * n), np.float32),
        "betas": np.array(betas),
    }
    for f in range(folds):
        held, kept = np.flatnonzero(fold_of == f), np.flatnonzero(fold_of != f)
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
        if heads_path is not None:
            save_heads(heads, heads_path(f))
        with torch.no_grad():
            img = heads.image_vectors(train["pooled"][held], train["logits"][held]).float()
            txt = heads.text_vectors(train["text"][held_caps]).float()
            bank_caps = np.sort(rng.choice(kept_caps, BANK_SIZE, replace=False))
            text_bank = heads.text_vectors(train["text"][bank_caps]).float()
            bank_imgs = np.sort(rng.choice(kept, BANK_SIZE, replace=False))
            image_bank = heads.image_vectors(
                train["pooled"][bank_imgs], train["logits"][bank_imgs]
            ).float()
        sims = txt @ img.T
        sc, ix = sims.topk(depth, dim=1)
        out["t2i_ids"][held_caps], out["t2i_sc"][held_caps] = held[ix.numpy()], sc.numpy()
        sc, ix = sims.T.topk(depth, dim=1)
        out["i2t_ids"][held], out["i2t_sc"][held] = held_caps[ix.numpy()], sc.numpy()
        for b, beta in enumerate(betas):
            out["img_prior"][b, held] = QueryBankPrior(text_bank, beta, 1.0).raw(img).numpy()
            out["txt_prior"][b, held_caps] = QueryBankPrior(image_bank, beta, 1.0).raw(txt).numpy()
        if log:
            log(f"fold {f}: bi-encoder on {len(kept)} images in {time.time() - t0:.0f} s")
    return out


def shipped_banks(train: dict[str, torch.Tensor], seed: int = 0) -> dict[str, torch.Tensor]:
    """The query banks the re-ranker ships: train captions and train images, embedded by the
    shipped bi-encoder."""
    from vtsearch.models.lite import load_heads

    heads = load_heads()
    caps = _bank_rows(train["text"].shape[0], seed)
    imgs = _bank_rows(train["pooled"].shape[0], seed + 1)
    with torch.no_grad():
        return {
            "bank.texts": heads.text_vectors(train["text"][caps]).float(),
            "bank.images": heads.image_vectors(
                train["pooled"][imgs], train["logits"][imgs]
            ).float(),
        }


def joint_features(
    scorer: FusionScorer,
    raw_regions: np.ndarray,
    image_rows: np.ndarray,
    states: np.ndarray,
    caption_rows: np.ndarray,
    chunk: int = 500,
) -> tuple[np.ndarray, np.ndarray]:
    """Region tokens of ``image_rows`` and joint word vectors of ``caption_rows`` (fp16), through
    the scorer's current heads."""
    d = scorer.config.region_dim
    regions = np.empty((len(image_rows), raw_regions.shape[1], d), dtype=np.float16)
    words = np.empty((len(caption_rows), states.shape[1], d), dtype=np.float16)
    with torch.no_grad():
        for i in range(0, len(image_rows), chunk):
            part = np.asarray(raw_regions[image_rows[i : i + chunk]], dtype=np.float32)
            regions[i : i + chunk] = scorer.reducer(torch.from_numpy(part)).half().numpy()
        for i in range(0, len(caption_rows), chunk):
            part = np.asarray(states[caption_rows[i : i + chunk]], dtype=np.float32)
            words[i : i + chunk] = scorer.text_words(torch.from_numpy(part)).half().numpy()
    return regions, words
