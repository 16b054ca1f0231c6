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

import inspect
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vtsearch.models.fusion import FusionConfig, FusionScorer, save_fusion
from vtsearch.models.prior import QueryBankPrior

DIRECTIONS = ("t2i", "i2t")
#: Query-bank size and sharpness, chosen on dev with the shipped bi-encoder (bench notes in the
#: model card): 4,096 training queries, beta 20.
BANK_SIZE = 4096
BETA = 20.0
INIT_ALPHA = 0.75
#: Starting weight of the scorer against the bi-encoder score scaled by ``init_scale`` 30: the
#: untrained scorer (SCAN in the joint space) helped most on dev at 0.3 bi-encoder units.
INIT_GAIN = 9.0
#: Scorer weight of a direction switched off: small enough to change no order in training code.
OFF = 1e-6
Log = Callable[[str], None]


@dataclass
class FusionData:
    """Everything a training or evaluation pass reads, indexed by image and caption row."""

    regions: np.ndarray  # [I, N, region_dim] region tokens, as the cache stores them
    states: np.ndarray  # [C, T, 384] float16 MiniLM token states
    lens: np.ndarray  # [C]
    caption_image: np.ndarray  # [C] image row of each caption
    #: [C, T, region_dim] joint-space word vectors, when they come from another bi-encoder than
    #: the scorer's own (cross-fitting); None: the scorer computes them.
    words: np.ndarray | None = None


@dataclass
class Lists:
    """One ranked candidate list per query: for text->image the queries are caption rows and the
    candidates image rows; for image->text the other way round."""

    queries: np.ndarray  # [Q]
    ids: np.ndarray  # [Q, K]
    bi: np.ndarray  # [Q, K] bi-encoder similarity
    prior: np.ndarray  # [Q, K] raw query-bank prior of each candidate
    positive: np.ndarray  # [Q, K] bool


def make_lists(
    direction: str,
    queries: np.ndarray,
    ids: np.ndarray,
    bi: np.ndarray,
    candidate_prior: np.ndarray,
    caption_image: np.ndarray,
    k: int,
    ensure_positive: bool = False,
) -> Lists:
    """The first ``k`` of longer top lists ``ids``/``bi`` ``[Q, K0]``.

    With ``ensure_positive`` (training), a right candidate found beyond ``k`` takes the last slot
    with its real score, and queries with no right candidate in the long list are dropped: neither
    can be learned from, nor fixed at query time.
    """
    if direction == "t2i":
        pos = ids == caption_image[queries][:, None]
    else:
        pos = caption_image[ids] == queries[:, None]
    ids, bi, pos = ids.copy(), bi.copy(), pos.copy()
    if ensure_positive:
        keep = pos.any(1)
        late = keep & ~pos[:, :k].any(1)
        for r in np.flatnonzero(late):
            j = int(np.flatnonzero(pos[r])[0])
            ids[r, k - 1], bi[r, k - 1], pos[r, k - 1] = ids[r, j], bi[r, j], True
        queries, ids, bi, pos = queries[keep], ids[keep], bi[keep], pos[keep]
    ids, bi, pos = ids[:, :k], bi[:, :k], pos[:, :k]
    return Lists(queries, ids, bi.astype(np.float32), candidate_prior[ids], pos)


def top_lists(
    direction: str,
    query_vecs: torch.Tensor,
    cand_vecs: torch.Tensor,
    queries: np.ndarray,
    cand_rows: np.ndarray,
    candidate_prior: np.ndarray,
    caption_image: np.ndarray,
    k: int,
    ensure_positive: bool = False,
    depth: int = 50,
) -> Lists:
    """Lists from vectors: each query's top ``depth`` candidates by similarity, cut to ``k``."""
    sims = query_vecs.float() @ cand_vecs.float().T
    sc, ix = sims.topk(min(depth, sims.shape[1]), dim=1)
    return make_lists(
        direction,
        queries,
        cand_rows[ix.numpy()],
        sc.numpy(),
        candidate_prior,
        caption_image,
        k,
        ensure_positive,
    )


class Mixer(torch.nn.Module):
    """Learned per direction: scale ``s`` of the bi-encoder score, weight ``a`` of the prior."""

    def __init__(self, init_scale: float = 30.0, init_alpha: float = INIT_ALPHA) -> None:
        super().__init__()
        self.log_scale = torch.nn.ParameterDict(
            {d: torch.nn.Parameter(torch.tensor(math.log(init_scale))) for d in DIRECTIONS}
        )
        self.alpha = torch.nn.ParameterDict(
            {d: torch.nn.Parameter(torch.tensor(float(init_alpha))) for d in DIRECTIONS}
        )

    def base(self, direction: str, bi: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        return self.log_scale[direction].exp() * (bi - self.alpha[direction] * prior)

    def settings(self) -> dict[str, dict[str, float]]:
        """What inference needs: final score = bi - alpha * prior + mix * g (bi-encoder units);
        mix 0 (the scorer is not run) for a direction calibrated off."""
        return {
            d: {
                "mix": _mix(float(torch.exp(-self.log_scale[d].detach()))),
                "alpha": float(self.alpha[d].detach()),
            }
            for d in DIRECTIONS
        }


def _mix(value: float) -> float:
    return 0.0 if value <= OFF * 1.001 else value


def _pairs(
    data: FusionData, lists: Lists, rows: np.ndarray, direction: str
) -> tuple[torch.Tensor, ...]:
    ids, q = lists.ids[rows], lists.queries[rows]
    k = ids.shape[1]
    if direction == "t2i":
        text_rows, image_rows = np.repeat(q, k), ids.reshape(-1)
    else:
        text_rows, image_rows = ids.reshape(-1), np.repeat(q, k)
    lens = data.lens[text_rows].astype(np.int64)
    t = int(lens.max())
    states = torch.from_numpy(np.asarray(data.states[text_rows, :t], dtype=np.float32))
    mask = torch.arange(t)[None, :] < torch.from_numpy(lens)[:, None]
    regions = torch.from_numpy(np.asarray(data.regions[image_rows], dtype=np.float32))
    words = None
    if data.words is not None:
        words = torch.from_numpy(np.asarray(data.words[text_rows, :t], dtype=np.float32))
    return (
        states,
        mask,
        regions,
        words,
        torch.from_numpy(lists.bi[rows]),
        torch.from_numpy(lists.prior[rows]),
        torch.from_numpy(lists.positive[rows]),
    )


def _logits(
    scorer: FusionScorer, mixer: Mixer, data: FusionData, lists: Lists, rows, direction: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    states, mask, regions, words, bi, prior, pos = _pairs(data, lists, rows, direction)
    g = scorer(states, mask, regions, words).view(bi.shape)
    return mixer.base(direction, bi, prior) + g, bi, prior, pos


def _first_hit_rank(scores: torch.Tensor, pos: torch.Tensor) -> np.ndarray:
    """1-based rank of the best-placed right candidate per list; a huge number when none."""
    order = scores.argsort(dim=1, descending=True)
    hit = pos.gather(1, order)
    first = hit.float().argmax(1) + 1
    return np.where(hit.any(1).numpy(), first.numpy(), 10**6)


@torch.no_grad()
def list_recall(
    scorer: FusionScorer,
    mixer: Mixer,
    data: FusionData,
    lists: Lists,
    direction: str,
    batch: int = 64,
) -> dict[str, float]:
    """R@1/5/10 within the lists for the bi-encoder alone (``bi``), with the prior (``prior``) and
    re-ranked (``rerank``). A query whose right answer is not in its list is a miss for all."""
    g, bi, prior, pos = _list_scores(scorer, data, lists, direction, batch)
    base = mixer.base(direction, bi, prior)
    ranks = {"bi": bi, "prior": base, "rerank": base + g}
    out = {}
    for name, scores in ranks.items():
        r = _first_hit_rank(scores, pos)
        for k in (1, 5, 10):
            out[f"{name}_r{k}"] = float((r <= k).mean() * 100)
    return out


@torch.no_grad()
def _list_scores(
    scorer: FusionScorer, data: FusionData, lists: Lists, direction: str, batch: int = 64
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The scorer's logits ``g``, bi-encoder scores, priors and right-answer flags ``[Q, K]`` of
    every list, scored in batches."""
    scorer.eval()
    parts = []
    for i in range(0, len(lists.queries), batch):
        rows = np.arange(i, min(i + batch, len(lists.queries)))
        states, mask, regions, words, bi, prior, pos = _pairs(data, lists, rows, direction)
        parts.append((scorer(states, mask, regions, words).view(bi.shape), bi, prior, pos))
    g, bi, prior, pos = (torch.cat(x) for x in zip(*parts, strict=True))
    return g, bi, prior, pos


@torch.no_grad()
def calibrate(
    scorer: FusionScorer,
    mixer: Mixer,
    data: FusionData,
    dev: dict[str, Lists],
    alphas: tuple[float, ...] = tuple(np.arange(0.5, 1.201, 0.05)),
    factors: tuple[float, ...] = tuple(np.arange(0.0, 3.001, 0.125)),
    batch: int = 64,
    log: Log | None = None,
) -> Mixer:
    """Set, per direction, the prior weight and the scorer's weight that give the best dev R@1
    (the scorer's weight as a factor of the trained one); ties go to the trained values. The
    mixing learned on cross-fitted training lists drifts with the epochs (the prior's weight grew
    past 1 while dev wanted about 0.9), and two numbers per direction are what dev is for.

    A direction keeps the scorer only when its own gain over the prior alone (at the chosen
    prior weight) has a paired bootstrap 95% interval over dev images above zero; otherwise its
    weight is 0 (prior only) and the prior weight is chosen again without it."""
    for d, lists in dev.items():
        g, bi, prior, pos = _list_scores(scorer, data, lists, d, batch)
        mix0, alpha0 = mixer.settings()[d]["mix"], float(mixer.alpha[d])

        def r1(alpha: float, mix: float, g=g, bi=bi, prior=prior, pos=pos) -> float:
            return float((_first_hit_rank(bi - alpha * prior + mix * g, pos) == 1).mean())

        mixes = [float(f) * mix0 for f in factors]
        r, alpha, mix = _grid(r1, alpha0, mix0, alphas, mixes)
        groups = data.caption_image[lists.queries] if d == "t2i" else lists.queries
        with_g = _first_hit_rank(bi - alpha * prior + mix * g, pos) == 1
        without = _first_hit_rank(bi - alpha * prior, pos) == 1
        lo = _bootstrap_low(with_g.astype(float) - without, groups, seed=0)
        if mix > 0 and lo <= 0:
            r, alpha, mix = _grid(r1, alpha0, 0.0, alphas, [0.0])
        mixer.alpha[d].data.fill_(alpha)
        mixer.log_scale[d].data.fill_(-math.log(max(mix, OFF)))
        if log:
            log(
                f"{d}: dev R@1 {100 * r:.2f} at alpha {alpha:.2f}, mix {mix:.4f} "
                f"(scorer's own gain, 95% low end {100 * lo:+.2f})"
            )
    return mixer


def _grid(
    r1: Callable[[float, float], float],
    alpha0: float,
    mix0: float,
    alphas: tuple[float, ...],
    mixes: list[float],
) -> tuple[float, float, float]:
    """``(R@1, alpha, mix)`` of the best grid point; ties keep ``(alpha0, mix0)``."""
    best = (r1(alpha0, mix0), alpha0, mix0)
    for a in alphas:
        for m in mixes:
            r = r1(float(a), m)
            if r > best[0] + 1e-9:
                best = (r, float(a), m)
    return best


def _bootstrap_low(diff: np.ndarray, groups: np.ndarray, seed: int, n: int = 2000) -> float:
    """Lower end of the paired bootstrap 95% interval of ``mean(diff)``, resampling groups
    (the captions of one image move together)."""
    _, inverse = np.unique(groups, return_inverse=True)
    sums = np.bincount(inverse, weights=diff)
    counts = np.bincount(inverse).astype(float)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(sums), size=(n, len(sums)))
    means = sums[picks].sum(1) / counts[picks].sum(1)
    return float(np.quantile(means, 0.025))


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
            logits, _, _, pos = _logits(scorer, mixer, data, train[direction], rows, direction)
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


def _caption_rows(cache: Path, names: list[str]) -> np.ndarray:
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
    from vtsearch.models.train_biencoder import build_heads, train_biencoder

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


def _joint_features(
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
    from vtsearch.models.features import DEFAULT_CACHE_DIR
    from vtsearch.models.fusion import attach_heads
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
    caption_rows = _caption_rows(cache, names)
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
        regions[imgs], words[caps] = _joint_features(
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
