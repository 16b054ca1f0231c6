"""IVF-PQ at scale on one machine: built in bounded memory, searched as one index and as shards.

Synthetic unit vectors (seeded clusters; chunk ``c`` is always the same numbers) are generated a
chunk at a time: the quantizer and codebooks are trained on a sample, then the vectors are added
chunk by chunk to ``--shards`` IVF-PQ shards that share the trained parts (chunk ``c`` to shard
``c % shards``), so the float vectors are never all in memory (peak RSS printed). The one-index
baseline is the shards merged (``merge_from``), holding the same codes. Exact top-10 of the
queries comes from a second chunked pass (brute force, a running top-k).

Printed: build time, bytes per vector, peak RSS; recall@10 of the PQ ranking alone and recall of
the exact top-10 within the top 40 (what the product re-scores exactly, as the single-machine
IVF-PQ path does); median latency of one query against the one index and against
``faiss.IndexShards`` over the shards (threads). The shards run in one process here; Ray actors
holding them (issue 17) are the next step.

    python bench/scale.py --n 1000000             # a smaller run
    python bench/scale.py                          # 5,000,000 x 1152
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Timer, figure, machine, peak_rss_mb, save_figures

CHUNK = 50_000
CENTRES = 4096


def chunk(c: int, n: int, dim: int, centres: np.ndarray) -> np.ndarray:
    """Vectors ``c * CHUNK`` to ``c * CHUNK + CHUNK`` (fewer at the end), always the same."""
    m = min(CHUNK, n - c * CHUNK)
    rng = np.random.default_rng(1_000 + c)
    v = centres[rng.integers(0, len(centres), m)]
    v = v + rng.standard_normal((m, dim), dtype=np.float32) * (0.6 / np.sqrt(dim))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5_000_000)
    ap.add_argument("--dim", type=int, default=1152)
    ap.add_argument("--nlist", type=int, default=4096)
    ap.add_argument("--m", type=int, default=48, help="PQ sub-quantizers (8 bits each)")
    ap.add_argument("--nprobe", type=int, default=32)
    ap.add_argument("--train", type=int, default=100_000)
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--queries", type=int, default=100)
    args = ap.parse_args()

    import faiss

    n, dim, chunks = args.n, args.dim, (args.n + CHUNK - 1) // CHUNK
    centres = np.random.default_rng(42).standard_normal((CENTRES, dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    print(f"machine: {machine()}; {n:,} x {dim} vectors, IVF{args.nlist},PQ{args.m}x8")

    with Timer() as t_train:
        sample = np.concatenate([chunk(c, n, dim, centres) for c in range(args.train // CHUNK)])
        base = faiss.index_factory(dim, f"IVF{args.nlist},PQ{args.m}", faiss.METRIC_INNER_PRODUCT)
        base.train(sample[: args.train])
        del sample
    shards = [faiss.clone_index(base) for _ in range(args.shards)]
    with Timer() as t_add:
        for c in range(chunks):
            v = chunk(c, n, dim, centres)
            ids = np.arange(c * CHUNK, c * CHUNK + len(v), dtype=np.int64)
            shards[c % args.shards].add_with_ids(v, ids)
    rss_build = peak_rss_mb()
    one = faiss.clone_index(shards[0])
    for s in shards[1:]:
        one.merge_from(faiss.clone_index(s), 0)
    assert one.ntotal == n
    code_bytes = faiss.extract_index_ivf(one).code_size
    print(
        f"built: train {t_train.s:.0f} s, add {t_add.s:.0f} s ({n / t_add.s:,.0f} vectors/s); "
        f"{code_bytes} B of PQ codes + 8 B id per vector; peak RSS {rss_build:,.0f} MB "
        f"(all floats would be {n * dim * 4 / 2**20:,.0f} MB)"
    )

    rng = np.random.default_rng(7)
    qids = rng.choice(n, args.queries, replace=False)
    # A row copied out, not a view: a view would keep its whole chunk alive.
    q = np.stack([chunk(i // CHUNK, n, dim, centres)[i % CHUNK].copy() for i in qids])
    q += rng.standard_normal(q.shape, dtype=np.float32) * (0.3 / np.sqrt(dim))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    with Timer() as t_exact:
        best_s = np.full((len(q), 10), -np.inf, np.float32)
        best_i = np.zeros((len(q), 10), np.int64)
        for c in range(chunks):
            s = q @ chunk(c, n, dim, centres).T
            top = np.argpartition(-s, 10, axis=1)[:, :10]
            cand_s = np.concatenate([best_s, np.take_along_axis(s, top, 1)], 1)
            cand_i = np.concatenate([best_i, top + c * CHUNK], 1)
            keep = np.argsort(-cand_s, axis=1)[:, :10]
            best_s = np.take_along_axis(cand_s, keep, 1)
            best_i = np.take_along_axis(cand_i, keep, 1)
    print(f"exact top-10 of {len(q)} queries: {t_exact.s:.0f} s (brute force, chunked)")

    sharded = faiss.IndexShards(dim, True, False)  # threaded, ids kept
    for s in shards:
        sharded.add_shard(s)
    rows, results = [], {}
    for name, index in (("one index", one), (f"{args.shards} shards", sharded)):
        faiss.ParameterSpace().set_index_parameter(index, "nprobe", args.nprobe)
        _, got = index.search(q, 40)
        r10 = np.mean([len(set(got[i, :10]) & set(best_i[i])) / 10 for i in range(len(q))])
        r40 = np.mean([len(set(got[i]) & set(best_i[i])) / 10 for i in range(len(q))])
        times = []
        for i in range(len(q)):
            t0 = time.perf_counter()
            index.search(q[i : i + 1], 40)
            times.append((time.perf_counter() - t0) * 1000)
        results[name] = got
        ms = statistics.median(times)
        print(f"{name:>10}: recall@10 {r10:.3f} (PQ ranking), exact top-10 within the top 40 "
              f"{r40:.3f}; one query {ms:.2f} ms (median, nprobe {args.nprobe})")  # fmt: skip
        rows += [
            figure(f"IVF-PQ {n // 10**6}M x {dim}, {name}: recall@10 within top 40", round(r40, 3)),
            figure(f"IVF-PQ {n // 10**6}M x {dim}, {name}: one query", round(ms, 2), "ms"),
        ]
    a, b = results["one index"], results[f"{args.shards} shards"]
    same = np.mean([set(a[i, :10]) == set(b[i, :10]) for i in range(len(q))])
    print(f"the shards' merged top-10 equals the one index's for {same:.0%} of the queries")
    rows.append(figure(f"IVF-PQ {n // 10**6}M build, peak RSS", round(rss_build), "MB"))
    save_figures("scale", rows)


if __name__ == "__main__":
    main()
