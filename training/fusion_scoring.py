"""What fusion training scores: candidate lists from the bi-encoder, the mixer that combines the
bi-encoder score, the query-bank prior and the scorer's logit per direction, and the list recall
and calibration that choices on dev are made by."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from vtsearch.models.fusion import FusionScorer

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


def pair_logits(
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
