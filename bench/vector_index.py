"""Vector indexes side by side: FAISS Flat, HNSW32 over float vectors, HNSW32 over 8-bit codes with
float16 re-scoring (the factory's pick for large collections), IVF-PQ (all through vtsearch's
VectorIndex), exact numpy search and hnswlib, on the same seeded synthetic vectors and on the
default model's real embeddings.

For each: build time (all cores), memory per vector, recall@10 against exact search, and query
latency one query at a time on one thread. Synthetic data: unit vectors of dimension 1152 (the
default model's) around 1,024 seeded cluster centres. Real data: vtsearch-lite vectors of the
Flickr8k photos and captions (tower features from ``.cache/features``, computed on a miss).

    python bench/vector_index.py             # 100k vectors (about 6 minutes on 2 cores)
    python bench/vector_index.py --full      # 1M vectors as well (the goal's scale; ~10 GB RAM)
    python bench/vector_index.py --quick     # 20k vectors, a smoke run
    python bench/vector_index.py --n 1000000 --no-real --only flat,hnsw-sq8,ivfpq,hnswlib
"""

from __future__ import annotations

import argparse
import os

# One BLAS thread: the exact numpy baseline is timed on one thread, like every other method.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import gc
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    FLICKR,
    Timer,
    figure,
    machine,
    peak_rss_mb,
    save_figures,
)

DIM = 1152
K = 10
#: What ``--only`` chooses from.
METHODS = ("flat", "hnsw", "hnsw-sq8", "ivfpq", "hnswlib")
#: The goal: recall@10 at least this, at most this many ms per query, on one thread.
GOAL_RECALL, GOAL_MS = 0.95, 0.5


def synthetic(n: int, dim: int, seed: int, clusters: int = 1024, noise: float = 1.0) -> np.ndarray:
    """Seeded unit vectors around ``clusters`` centres; built in chunks to bound memory."""
    centres = np.random.default_rng(42).standard_normal((clusters, dim), dtype=np.float32)
    rng = np.random.default_rng(seed)
    x = np.empty((n, dim), dtype=np.float32)
    for i in range(0, n, 50_000):
        m = min(50_000, n - i)
        part = centres[rng.integers(0, clusters, m)]
        part += noise * rng.standard_normal((m, dim), dtype=np.float32)
        part /= np.linalg.norm(part, axis=1, keepdims=True)
        x[i : i + m] = part
    return x


def ground_truth(x: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    """Exact top-k by FAISS's brute force on all cores (checked against numpy below)."""
    import faiss

    faiss.omp_set_num_threads(os.cpu_count() or 1)
    return faiss.knn(q, x, k, metric=faiss.METRIC_INNER_PRODUCT)[1]  # no copy of x


def recall(got: np.ndarray, exact: np.ndarray) -> float:
    k = exact.shape[1]
    return float(np.mean([len(set(a[:k]) & set(b)) / k for a, b in zip(got, exact, strict=True)]))


def latencies_in_turns(searches: list, q: np.ndarray, n: int) -> list[tuple[float, float]]:
    """Median and 95th percentile ms of each of ``searches(one_query)`` over ``n`` queries, timed
    in turns (the machine's speed swings by a fifth within seconds: the drift falls on all of them
    alike). Each turn gives every search a different query, and no query runs twice while there
    are enough, so that no search finds the memory its query reads already cached by another's."""
    for search in searches:
        for i in range(min(5, len(q))):
            search(q[i : i + 1])
    times: list[list[float]] = [[] for _ in searches]
    step = 0
    for _ in range(n):
        for s, search in enumerate(searches):
            i = (step + 5) % len(q)
            step += 1
            t0 = time.perf_counter()
            search(q[i : i + 1])
            times[s].append((time.perf_counter() - t0) * 1000)
    return [(float(np.median(t)), float(np.percentile(t, 95))) for t in times]


def rescored(vi, x: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Top-K ids after re-scoring an index's RESCORE_FACTOR x K candidates on float vectors."""
    from vtsearch.search.retrieve import RESCORE_FACTOR

    ids = vi.search(queries, K * RESCORE_FACTOR)[1]
    out = np.full((len(queries), K), -1, dtype=np.int64)
    for row, (one, cand) in enumerate(zip(queries, ids, strict=True)):
        cand = cand[cand >= 0]
        top = cand[np.argsort(-(x[cand] @ one))[:K]]
        out[row, : len(top)] = top
    return out


def file_bytes(write) -> int:
    fd, tmp = tempfile.mkstemp()
    os.close(fd)
    try:
        write(tmp)
        return os.path.getsize(tmp)
    finally:
        os.unlink(tmp)


class Row:
    def __init__(self, method: str, setting: str, build_s: float, bytes_per_vec: float):
        self.method, self.setting, self.build_s, self.bpv = method, setting, build_s, bytes_per_vec
        self.recall = self.ms = self.p95 = float("nan")

    def line(self) -> str:
        return (
            f"{self.method:<22}{self.setting:<14}{self.build_s:>9.1f}{self.bpv:>11.0f}"
            f"{self.recall:>10.3f}{self.ms:>9.3f}{self.p95:>9.3f}"
        )


HEADER = (
    f"{'method':<22}{'setting':<14}{'build s':>9}{'bytes/vec':>11}{'R@10':>10}"
    f"{'ms/q':>9}{'p95 ms':>9}"
)


def run_all(
    x: np.ndarray,
    q: np.ndarray,
    exact: np.ndarray,
    *,
    lat_queries: int,
    hnsw_efs: list[int],
    nprobes: list[int],
    with_hnswlib: bool,
    with_ivfpq: bool,
    log,
    ef_construction: int = 64,
    only: frozenset[str] = frozenset(METHODS),
) -> list[Row]:
    """Every method on one data set; each index is freed before the next is built."""
    import faiss

    from vtsearch.search.retrieve import RESCORE_FACTOR
    from vtsearch.storage.index_kinds import IVFPQ_MIN, IndexSpec, hnsw_spec, spec_for_kind
    from vtsearch.storage.rebuild import build

    n, dim = x.shape
    ids = np.arange(n, dtype=np.int64)
    cores = os.cpu_count() or 1
    rows: list[Row] = []

    # Exact numpy: one matrix-vector product and a partial sort per query.
    def numpy_search(one: np.ndarray) -> np.ndarray:
        s = x @ one[0]
        top = np.argpartition(-s, K)[:K]
        return top[np.argsort(-s[top])]

    row = Row("numpy exact", "", 0.0, 4 * dim)
    checked = np.array([numpy_search(q[i : i + 1]) for i in range(min(20, len(q)))])
    row.recall = recall(checked, exact[: len(checked)])
    ((row.ms, row.p95),) = latencies_in_turns(
        [numpy_search], q, min(lat_queries, 20 if n > 200_000 else 50)
    )
    rows.append(row)
    log(row.line())

    def measure(
        method: str, setting: str, nbytes: int, build_s: float, search, brute: bool = False
    ) -> Row:
        return measure_settings(method, nbytes, build_s, {setting: search}, brute)[0]

    def measure_settings(
        method: str, nbytes: int, build_s: float, searches: dict, brute: bool = False
    ) -> list[Row]:
        """Recall of each setting, then their latencies timed in turns."""
        faiss.omp_set_num_threads(1)
        # A brute-force scan of 1M vectors takes a good fraction of a second per query on one
        # thread: fewer queries say as much.
        nq = min(len(q), 100) if brute else len(q)
        out = []
        for setting, search in searches.items():
            row = Row(method, setting, build_s, nbytes / n)
            got = np.concatenate([search(q[i : min(i + 256, nq)]) for i in range(0, nq, 256)])
            row.recall = recall(got, exact[:nq])
            out.append(row)
        lat = min(lat_queries, 20) if brute and n > 200_000 else lat_queries
        for row, (ms, p95) in zip(
            out, latencies_in_turns(list(searches.values()), q, lat), strict=True
        ):
            row.ms, row.p95 = ms, p95
            rows.append(row)
            log(row.line())
        return out

    def at(vi, spec, run=lambda vi, one: vi.search(one, K)[1]):
        """``run(vi, query)`` with ``spec`` set just before it (settings timed in turns)."""

        def search(one: np.ndarray) -> np.ndarray:
            vi.spec = spec
            return run(vi, one)

        return search

    efc = {"ef_construction": ef_construction}
    specs = [
        ("flat", "faiss Flat", IndexSpec("flat")),
        ("hnsw", "faiss HNSW32", IndexSpec("hnsw", m=32, **efc)),
        ("hnsw-sq8", "faiss HNSW32-SQ8", replace(hnsw_spec(n), **efc)),
    ]
    if with_ivfpq and n >= IVFPQ_MIN:
        # What the factory picks for this size when the vectors do not fit in memory.
        specs.append(("ivfpq", "faiss IVF-PQ", spec_for_kind("ivfpq", n, dim, memory_bytes=1)))
    specs = [(method, spec) for key, method, spec in specs if key in only]
    for method, spec in specs:
        faiss.omp_set_num_threads(cores)
        with Timer() as t:
            vi = build(spec, dim, ids, x)
        index_bytes = vi.memory_bytes()
        if spec.kind == "flat":
            measure(
                method, "exact", index_bytes, t.s, lambda one, vi=vi: vi.search(one, K)[1], True
            )
        elif spec.kind == "hnsw":
            measure_settings(
                method,
                index_bytes,
                t.s,
                {f"ef={ef}": at(vi, replace(spec, ef_search=ef)) for ef in hnsw_efs},
            )
        else:
            probe = {
                nprobe: IndexSpec(
                    "ivfpq", nlist=spec.nlist, nprobe=nprobe, pq_m=spec.pq_m, built_for=n
                )
                for nprobe in nprobes
            }
            measure_settings(
                method,
                index_bytes,
                t.s,
                {f"{spec.nlist}/{p}/PQ{spec.pq_m}": at(vi, s) for p, s in probe.items()},
            )

            # What queries do with an IVF-PQ index: re-score RESCORE_FACTOR x k candidates on the
            # float vectors (read from the catalog rows there; from memory here).
            def rescore_on_x(vi, one):
                return rescored(vi, x, one)

            measure_settings(
                "faiss IVF-PQ+rescore",
                index_bytes,
                t.s,
                {
                    f"{spec.nlist}/{p}/x{RESCORE_FACTOR}": at(vi, s, rescore_on_x)
                    for p, s in probe.items()
                },
            )
        del vi
        gc.collect()

    if with_hnswlib and "hnswlib" in only:
        try:
            import hnswlib
        except ImportError:
            log("hnswlib not installed: pip install -e '.[bench]'")
            return rows
        index = hnswlib.Index(space="ip", dim=dim)
        index.init_index(max_elements=n, ef_construction=ef_construction, M=32, random_seed=0)
        with Timer() as t:
            for i in range(0, n, 100_000):
                index.add_items(x[i : i + 100_000], ids[i : i + 100_000], num_threads=cores)
        index.set_num_threads(1)
        index_bytes = file_bytes(index.save_index)

        def hnswlib_at(ef: int):
            def search(one: np.ndarray) -> np.ndarray:
                index.set_ef(max(ef, K))
                return index.knn_query(one, K)[0]

            return search

        measure_settings(
            "hnswlib M=32", index_bytes, t.s, {f"ef={ef}": hnswlib_at(ef) for ef in hnsw_efs}
        )
        del index
        gc.collect()
    return rows


def real_embeddings(splits: list[str], queries: int) -> tuple[np.ndarray, np.ndarray] | None:
    """vtsearch-lite vectors: database = every photo + the captions of the non-test splits,
    queries = test captions (text -> image, the search users run). None without Flickr8k."""
    if not (FLICKR / "splits").is_dir():
        return None
    import torch

    from vtsearch.models.lite import load_heads
    from vtsearch.training.datasets import load_split_features

    torch.set_num_threads(os.cpu_count() or 1)
    heads = load_heads()
    imgs, caps, test_caps = [], [], None
    for split in splits:
        f = load_split_features(FLICKR, split, None)
        with torch.inference_mode():
            imgs.append(heads.image_vectors(f["pooled"], f["logits"]).numpy())
            t = heads.text_vectors(f["text"]).numpy()
        if split == "test":
            test_caps = t
        else:
            caps.append(t)
    if test_caps is None:
        return None
    db = np.ascontiguousarray(np.concatenate(imgs + caps), dtype=np.float32)
    pick = np.random.default_rng(0).choice(len(test_caps), min(queries, len(test_caps)), False)
    return db, np.ascontiguousarray(test_caps[pick], dtype=np.float32)


def best(rows: list[Row], method: str) -> Row | None:
    """The fastest setting of ``method`` that reaches the recall goal (else its best recall)."""
    mine = [r for r in rows if r.method == method]
    good = [r for r in mine if r.recall >= GOAL_RECALL]
    if good:
        return min(good, key=lambda r: r.ms)
    return max(mine, key=lambda r: r.recall) if mine else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000, help="synthetic vectors (default 100k)")
    ap.add_argument("--full", action="store_true", help="also run 1M vectors")
    ap.add_argument("--quick", action="store_true", help="20k vectors, fewer queries")
    ap.add_argument("--queries", type=int, default=1000, help="queries for recall")
    ap.add_argument("--latency-queries", type=int, default=300)
    ap.add_argument("--no-hnswlib", action="store_true")
    ap.add_argument("--no-real", action="store_true", help="skip the real-embedding recall")
    ap.add_argument(
        "--ef-construction",
        type=int,
        default=None,
        help="HNSW build beam of every HNSW row (default: that of vtsearch's own large graphs)",
    )
    ap.add_argument(
        "--only",
        default=",".join(METHODS),
        help=f"comma-separated methods to run, of {','.join(METHODS)} (numpy always runs)",
    )
    ap.add_argument("--json", type=Path, default=None, help="figures file for bench/summary.py")
    args = ap.parse_args()
    only = set(args.only.split(","))
    if only - set(METHODS):
        ap.error(f"unknown method(s) {', '.join(sorted(only - set(METHODS)))}")
    if args.ef_construction is None:
        from vtsearch.storage.index_kinds import SQ8_EF_CONSTRUCTION

        args.ef_construction = SQ8_EF_CONSTRUCTION
    if args.quick:
        args.n, args.queries, args.latency_queries = 20_000, 200, 100

    import faiss

    print(f"machine: {machine()}; faiss {faiss.__version__}; queries on 1 thread")
    sizes = [args.n] + ([1_000_000] if args.full and args.n != 1_000_000 else [])
    figures = []
    for n in sizes:
        print(
            f"\n== synthetic: {n:,} unit vectors, dim {DIM}, 1024 clusters, seed 0; "
            f"HNSW efConstruction {args.ef_construction} =="
        )
        with Timer() as t:
            x = synthetic(n, DIM, seed=0)
            q = synthetic(args.queries, DIM, seed=1)
            exact = ground_truth(x, q, K)
        print(f"data + exact ground truth: {t.s:.1f} s")
        print(HEADER)
        rows = run_all(
            x,
            q,
            exact,
            lat_queries=args.latency_queries,
            hnsw_efs=[16, 32, 64, 128] if n < 500_000 else [32, 40, 48, 56, 64, 128, 256],
            nprobes=[16, 32, 64],
            with_hnswlib=not args.no_hnswlib,
            with_ivfpq=True,
            log=print,
            ef_construction=args.ef_construction,
            only=frozenset(only),
        )
        del x
        gc.collect()
        tag = f"{n // 1000}k" if n < 1_000_000 else f"{n // 1_000_000}M"
        methods = (
            "faiss HNSW32-SQ8",
            "faiss HNSW32",
            "hnswlib M=32",
            "faiss IVF-PQ",
            "faiss IVF-PQ+rescore",
            "faiss Flat",
        )
        for method in methods:
            r = best(rows, method)
            if r is None:
                continue
            # The goal is the factory's pick's: a graph over 8-bit codes.
            goal = method == "faiss HNSW32-SQ8"
            ok = r.recall >= GOAL_RECALL and r.ms <= GOAL_MS if goal else None
            figures.append(
                figure(
                    f"{method} {r.setting} @{tag}: R@10 {r.recall:.3f}, {r.bpv:.0f} B/vec",
                    r.ms,
                    "ms/query",
                    f"R@10>={GOAL_RECALL}, <={GOAL_MS} ms @1M" if ok is not None else "",
                    ok if n >= 1_000_000 else None,
                )
            )
        print(f"peak RSS so far: {peak_rss_mb():.0f} MB")

    if not args.no_real:
        splits = ["test"] if args.quick else ["train", "dev", "test"]
        got = real_embeddings(splits, args.queries)
        if got is None:
            print("\nreal embeddings: Flickr8k not found, skipped")
        else:
            db, q = got
            print(
                f"\n== real: vtsearch-lite vectors, {len(db):,} Flickr8k photos + captions, "
                f"{len(q)} test-caption queries =="
            )
            exact = ground_truth(db, q, K)
            print(HEADER)
            rows = run_all(
                db,
                q,
                exact,
                lat_queries=args.latency_queries,
                hnsw_efs=[16, 32, 64, 128, 256],
                nprobes=[8, 32, 128],
                with_hnswlib=not args.no_hnswlib,
                with_ivfpq=args.full,  # IVF-PQ's recall is bounded by its codes: see synthetic
                log=print,
                ef_construction=args.ef_construction,
                only=frozenset(only),
            )
            for method in ("faiss HNSW32-SQ8", "faiss HNSW32", "faiss IVF-PQ+rescore"):
                r = best(rows, method)
                if r is not None:
                    figures.append(
                        figure(
                            f"real {method} {r.setting}: R@10 {r.recall:.3f}",
                            r.ms,
                            "ms/query",
                        )
                    )
    print(f"\npeak RSS: {peak_rss_mb():.0f} MB")
    save_figures("vector_index", figures, args.json)


if __name__ == "__main__":
    main()
