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


@dataclass
class EvalReport:
    images: int
    captions: int
    text_to_image: DirectionReport
    image_to_text: DirectionReport
    notes: list[str] = field(default_factory=list)


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


def _rank_of(hits: list, wanted: Callable[[object], bool], key: str) -> int:
    order = sorted(hits, key=lambda h: -getattr(h, key))
    for i, h in enumerate(order, 1):
        if wanted(h):
            return i
    return MISS


def _latency_ms(fn: Callable[[], object], repeats: list) -> float:
    times = []
    for args in repeats:
        t0 = time.perf_counter()
        fn(*args)
        times.append((time.perf_counter() - t0) * 1000)
    return float(np.median(times))


def evaluate(
    engine: object,
    images: dict[str, Path],
    captions: dict[str, list[str]],
    *,
    rerank_k: int = 50,
    latency_queries: int = 100,
    progress: Callable[[int, int], None] | None = None,
) -> EvalReport:
    """Evaluate ``engine`` (an ``Engine`` over exactly ``images``, with ``captions`` added as its
    texts) in both directions.

    Ranks come from full bi-encoder rankings; re-ranking reorders the top ``rerank_k`` and leaves
    ranks below it as they were. Latency is the median over ``latency_queries`` warm queries.
    """
    # The catalog stores paths under the resolved folder, with symlinked files not followed.
    path_to_name = {str(p.parent.resolve() / p.name): n for n, p in images.items()}
    pairs = [(n, c) for n in images for c in captions.get(n, [])]
    n_img, n_txt = len(images), len(pairs)
    total, done = len(pairs) + len(images), 0

    def tick() -> None:
        nonlocal done
        done += 1
        if progress:
            progress(done, total)

    ranks_bi, ranks_rr = [], []
    for name, cap in pairs:
        is_it = lambda h, name=name: path_to_name.get(h.path) == name  # noqa: E731
        bi = _rank_of(engine.search(text=cap, k=n_img, rerank=False), is_it, "score")
        both = engine.search(text=cap, k=rerank_k, rerank_k=rerank_k)
        ranks_bi.append(bi)
        reranked = bool(both) and both[0].rerank_score is not None
        ranks_rr.append(_rank_of(both, is_it, "score") if reranked and bi <= rerank_k else bi)
        tick()
    sample = [(c,) for _, c in pairs[:latency_queries]]
    t2i = _direction(
        ranks_bi,
        ranks_rr,
        [n for n, _ in pairs],
        reranked,
        _latency_ms(lambda c: engine.search(text=c, k=10, rerank=False), sample),
        _latency_ms(lambda c: engine.search(text=c, k=10, rerank_k=rerank_k), sample),
    )

    ranks_bi, ranks_rr = [], []
    for name, path in images.items():
        mine = set(captions.get(name, []))
        is_mine = lambda h, mine=mine: h.text in mine  # noqa: E731
        bi = _rank_of(engine.search_texts(image=path, k=n_txt, rerank=False), is_mine, "score")
        both = engine.search_texts(image=path, k=rerank_k, rerank_k=rerank_k)
        ranks_bi.append(bi)
        reranked = bool(both) and both[0].rerank_score is not None
        ranks_rr.append(_rank_of(both, is_mine, "score") if reranked and bi <= rerank_k else bi)
        tick()
    sample = [(p,) for p in list(images.values())[:latency_queries]]
    i2t = _direction(
        ranks_bi,
        ranks_rr,
        list(images),
        reranked,
        _latency_ms(lambda p: engine.search_texts(image=p, k=10, rerank=False), sample),
        _latency_ms(lambda p: engine.search_texts(image=p, k=10, rerank_k=rerank_k), sample),
    )
    return EvalReport(n_img, n_txt, t2i, i2t)


def _direction(
    ranks_bi: list[int],
    ranks_rr: list[int],
    groups: list[str],
    reranked: bool,
    ms_bi: float,
    ms_rr: float,
) -> DirectionReport:
    rb, rr = np.array(ranks_bi), np.array(ranks_rr)
    if not reranked:
        return DirectionReport(_metrics(rb), None, None, ms_bi)
    ci = paired_bootstrap(rb <= 1, rr <= 1, np.array(groups))
    return DirectionReport(_metrics(rb), _metrics(rr), ci, ms_bi, ms_rr)
