"""Retrieval evaluation over a captioned image set: recall@K, median rank, re-rank gain, latency.

Both directions, for the bi-encoder alone and re-ranked, from the same queries: each query asks
for its re-rank depth with both scores, so the two orders are compared on identical candidates.
The re-rank gain carries a paired bootstrap 95% interval over images (an image is resampled with
all its captions).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vtsearch.search.rerank import DEFAULT_RERANK_K

KS = (1, 5, 10)
MISS = 10**9  # not found at all (e.g. an image whose file failed)


@dataclass
class DirectionReport:
    bi: dict[str, float]
    rerank: dict[str, float] | None
    #: 95% interval of the re-ranked minus bi-encoder R@1, in points.
    r1_gain_ci: tuple[float, float] | None = None
    ms_per_query_bi: float = 0.0
    ms_per_query_rerank: float | None = None
    #: Ablation: the same candidates ordered by bi-encoder score minus the query-bank prior
    #: alone, and the 95% interval of what the fusion scorer adds on top of that, in R@1 points.
    prior_only: dict[str, float] | None = None
    scorer_gain_ci: tuple[float, float] | None = None
    #: False when the re-ranker's weights switch the fusion scorer off for this direction
    #: (re-ranking is then the prior alone).
    scorer_used: bool = True


@dataclass
class EvalReport:
    images: int
    captions: int
    text_to_image: DirectionReport
    image_to_text: DirectionReport
    notes: list[str] = field(default_factory=list)
    #: Candidates re-ranked per query: the depth asked for, or the one queries use by default.
    rerank_k: int = DEFAULT_RERANK_K


def read_captions(path: Path, names: set[str] | None) -> dict[str, list[str]]:
    """``image<TAB>caption`` lines (a header line is skipped) grouped by image."""
    out: dict[str, list[str]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if "\t" not in line:
            continue
        img, cap = line.split("\t", 1)
        if img == "image" or (names is not None and img not in names):
            continue
        out.setdefault(img, []).append(cap.strip())
    return out


def _metrics(ranks: np.ndarray) -> dict[str, float]:
    out = {f"R@{k}": float((ranks <= k).mean() * 100) for k in KS}
    out["median_rank"] = float(np.median(ranks))
    return out


def paired_bootstrap(
    hit_a: np.ndarray, hit_b: np.ndarray, groups: np.ndarray, n: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """95% interval of mean(hit_b) - mean(hit_a), resampling whole groups (images)."""
    rng = np.random.default_rng(seed)
    uniq, inverse = np.unique(groups, return_inverse=True)
    diff = hit_b.astype(np.float64) - hit_a.astype(np.float64)
    per_group = np.bincount(inverse, weights=diff, minlength=len(uniq))
    size = np.bincount(inverse, minlength=len(uniq)).astype(np.float64)
    picks = rng.integers(0, len(uniq), size=(n, len(uniq)))
    gains = per_group[picks].sum(1) / size[picks].sum(1) * 100
    lo, hi = np.percentile(gains, [2.5, 97.5])
    return float(lo), float(hi)


def _rank_of(
    hits: list, wanted: Callable[[object], bool], key: Callable[[object], float] | None = None
) -> int:
    key = key or (lambda h: h.score)
    for i, h in enumerate(sorted(hits, key=lambda h: -key(h)), 1):
        if wanted(h):
            return i
    return MISS


def _latency_ms(search: Callable[..., list], queries: list, **kwargs: object) -> float:
    times = []
    for q in queries:
        t0 = time.perf_counter()
        search(q, **kwargs)
        times.append((time.perf_counter() - t0) * 1000)
    return float(np.median(times))


def _run_direction(
    search: Callable[..., list],
    queries: list[tuple[object, Callable[[object], bool], str]],
    *,
    full_k: int,
    rerank_k: int,
    latency_queries: int,
    tick: Callable[[], None],
) -> DirectionReport:
    """Rank every query's match fully by the bi-encoder, then within the top ``rerank_k``
    re-ranked (ranks below that depth stay as they were)."""
    ranks_bi, ranks_rr, ranks_pr, reranked, scored = [], [], [], False, False
    for q, wanted, _ in queries:
        bi = _rank_of(search(q, k=full_k, rerank=False), wanted)
        both = search(q, k=rerank_k, rerank_k=rerank_k)
        reranked = bool(both) and both[0].prior is not None
        scored = scored or (reranked and both[0].rerank_score is not None)
        inside = reranked and bi <= rerank_k
        ranks_bi.append(bi)
        ranks_rr.append(_rank_of(both, wanted) if inside else bi)
        ranks_pr.append(_rank_of(both, wanted, lambda h: h.bi_score - h.prior) if inside else bi)
        tick()
    rb, rr, rp = np.array(ranks_bi), np.array(ranks_rr), np.array(ranks_pr)
    sample = [q for q, _, _ in queries[:latency_queries]]
    ms_bi = _latency_ms(search, sample, k=10, rerank=False)
    if not reranked:
        return DirectionReport(_metrics(rb), None, None, ms_bi)
    groups = np.array([g for _, _, g in queries])
    ci = paired_bootstrap(rb <= 1, rr <= 1, groups)
    ms_rr = _latency_ms(search, sample, k=10, rerank_k=rerank_k)
    return DirectionReport(
        _metrics(rb),
        _metrics(rr),
        ci,
        ms_bi,
        ms_rr,
        prior_only=_metrics(rp),
        scorer_gain_ci=paired_bootstrap(rp <= 1, rr <= 1, groups),
        scorer_used=scored,
    )


def evaluate(
    engine: object,
    images: dict[str, Path],
    captions: dict[str, list[str]],
    *,
    rerank_k: int | None = None,
    latency_queries: int = 100,
    progress: Callable[[int, int], None] | None = None,
) -> EvalReport:
    """Evaluate ``engine`` (an ``Engine`` over exactly ``images``, with ``captions`` added as its
    texts) in both directions.

    Ranks come from full bi-encoder rankings; re-ranking reorders the top ``rerank_k`` and leaves
    ranks below it as they were; without ``rerank_k``, the depth the engine's queries use (see
    :func:`query_depth`), so the figures are what users get. Latency is the median over
    ``latency_queries`` warm queries.
    """
    rerank_k = rerank_k or query_depth(engine)
    # The catalog stores paths under the resolved folder, with symlinked files not followed.
    path_to_name = {str(p.parent.resolve() / p.name): n for n, p in images.items()}
    pairs = [(n, c) for n in images for c in captions.get(n, [])]
    total, done = len(pairs) + len(images), 0

    def tick() -> None:
        nonlocal done
        done += 1
        if progress:
            progress(done, total)

    opts = {"rerank_k": rerank_k, "latency_queries": latency_queries, "tick": tick}
    t2i = _run_direction(
        lambda q, **kw: engine.search(text=q, **kw),
        [(c, lambda h, n=n: path_to_name.get(h.path) == n, n) for n, c in pairs],
        full_k=len(images),
        **opts,
    )
    own = {n: set(captions.get(n, [])) for n in images}
    i2t = _run_direction(
        lambda q, **kw: engine.search_texts(image=q, **kw),
        [(p, lambda h, m=own[n]: h.text in m, n) for n, p in images.items()],
        full_k=len(pairs),
        **opts,
    )
    return EvalReport(len(images), len(pairs), t2i, i2t, rerank_k=rerank_k)


def query_depth(engine: object) -> int:
    """The re-rank depth ``engine``'s queries use when not given one: its re-ranker's own
    ``default_k`` (what its weights record), else ``DEFAULT_RERANK_K``."""
    # Engine has no public accessor yet; it loads its re-ranker once and keeps it, so the
    # queries that follow reuse this one.
    reranker = engine.reranker()
    return int(getattr(reranker, "default_k", None) or DEFAULT_RERANK_K)
