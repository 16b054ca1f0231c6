"""IVF-PQ at scale on one machine: built in bounded memory, searched as one index, as shards in
one process and as shards held by Ray actors (``vtsearch.storage.shards``).

The vectors are synthetic but shaped like embeddings: a mixture of ``TOPICS`` topics in a
``LATENT``-dimensional subspace whose variance falls off as a power law (1/j, as the PCA spectrum
of image embeddings roughly does), turned into ``dim`` dimensions by a fixed random orthonormal
map, plus a little isotropic noise, then scaled to unit length. A query is a fresh draw from the
same distribution (held out), so its neighbours are near but never itself. An earlier version
used 4,096 tight gaussian clusters of random centres: every vector of a cluster was about as near
a query as any other, so the top-10 was a coin toss (recall@10 0.14) and said nothing.

Chunk ``c`` (``CHUNK`` vectors) is always the same numbers, generated when needed: the quantizer
and codebooks are trained on a sample (at least 39 points per list, as FAISS wants), then the
chunks stream into ``--shards`` clones of the trained, empty index (vector ``id`` into shard
``id % shards``, the rule of ``storage.shards``), so the float vectors are never all in memory
(peak RSS printed). The one-index baseline is the shards merged (``merge_from``), holding the
same codes. A second chunked pass gives the exact top-10 (a running brute-force top-k) and the
exact scores of every candidate the searches returned, so the recall after the exact re-scoring
of the top ``4 k`` (what the product does with IVF-PQ hits, ``search.retrieve``) is measured too.

A query's neighbours mostly share its topic, so they sit in the few lists nearest it: recall
stops rising after a few probes, and what bounds it is the precision of the codes, which the exact
re-scoring makes up for in part. The ``--nprobe`` sweep shows where it levels off, and what each
probe costs. ``--m`` is 96 bytes a vector by default, what the factory picks at dimension 1152:
at 1M, 48 bytes (24 dimensions a byte) gave recall@10 0.76 after re-scoring the top 40, 96 bytes
0.90 (0.97 and 0.99 re-scoring the top 160), for twice the codes.

``--nlist`` is 2,048 by default, not the ``4 sqrt(n)`` the factory would pick: on 2 cores the
coarse assignment of every vector dominates the build (linear in the lists), and 2,048 lists
train on 100,000 points with 39 per list.

Printed: build time, bytes per vector, peak RSS of the build; per ``nprobe``: recall@10 of the PQ
ranking and after re-scoring, and the median (p95) latency of one query against the one index, the
shards through ``faiss.IndexShards`` (threads) and the shards in 2 Ray actors (``ShardedIndex``).

    python bench/scale.py --n 1000000             # a smaller run
    python bench/scale.py                          # 5,000,000 x 1152
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import CACHE, Timer, figure, machine, peak_rss_mb, save_figures

CHUNK = 50_000
LATENT = 384
TOPICS = 2_000
#: Within-topic spread (relative to the spread of the topic centres) and isotropic noise.
SPREAD, NOISE = 0.7, 0.3
K, RESCORE = 10, 4


class Data:
    """The seeded synthetic collection: ``chunk(c)`` and held-out ``queries`` (see the module)."""

    def __init__(self, n: int, dim: int) -> None:
        self.n, self.dim = n, dim
        rng = np.random.default_rng(42)
        self.basis = np.linalg.qr(rng.standard_normal((dim, LATENT), dtype=np.float32))[0].T
        scale = (np.arange(LATENT, dtype=np.float32) + 1) ** -0.5  # variance ~ 1/j
        self.scale = scale / np.linalg.norm(scale)
        self.centres = rng.standard_normal((TOPICS, LATENT), dtype=np.float32) * self.scale

    @property
    def chunks(self) -> int:
        return (self.n + CHUNK - 1) // CHUNK

    def _draw(self, rng: np.random.Generator, m: int) -> np.ndarray:
        z = rng.standard_normal((m, LATENT), dtype=np.float32) * (SPREAD * self.scale)
        z += self.centres[rng.integers(0, TOPICS, m)]
        v = z @ self.basis
        v += rng.standard_normal((m, self.dim), dtype=np.float32) * (NOISE / np.sqrt(self.dim))
        v /= np.sqrt(np.einsum("ij,ij->i", v, v))[:, None]
        return v

    def chunk(self, c: int) -> np.ndarray:
        """Vectors ``c * CHUNK`` to ``c * CHUNK + CHUNK`` (fewer at the end), always the same."""
        return self._draw(np.random.default_rng(1_000 + c), min(CHUNK, self.n - c * CHUNK))

    def queries(self, m: int) -> np.ndarray:
        return self._draw(np.random.default_rng(7), m)


def build(data: Data, spec, shards: int, train: int):
    """Shard indexes (``VectorIndex`` files' FAISS indexes) sharing one trained quantizer."""
    import faiss

    from vtsearch.storage.index_kinds import make_index

    with Timer() as t_train:
        sample = np.concatenate([data.chunk(c) for c in range(-(-train // CHUNK))])[:train]
        template = make_index(spec, data.dim)
        template.train(sample)
        del sample
    parts = [faiss.clone_index(template) for _ in range(shards)]
    with Timer() as t_add:
        for c in range(data.chunks):
            v = data.chunk(c)
            ids = np.arange(c * CHUNK, c * CHUNK + len(v), dtype=np.int64)
            route = ids % shards
            for s, part in enumerate(parts):
                part.add_with_ids(np.ascontiguousarray(v[route == s]), ids[route == s])
    return parts, t_train.s, t_add.s


def merged(parts):
    """One IVF-PQ index holding the shards' codes, addressed by the same ids.

    ``IndexIDMap2.merge_from`` cannot do it: it keeps each IVF's inner slot numbers, so the
    second shard's vectors would answer with the first one's ids. Each shard's inverted lists
    get their catalog ids instead (slot -> id through its id map), then the IVFs are merged.
    """
    import faiss

    out = []
    for p in parts:
        ivf = faiss.clone_index(faiss.downcast_index(p.index))
        ivf.set_direct_map_type(faiss.DirectMap.NoMap)
        id_map = faiss.vector_to_array(p.id_map)
        lists = faiss.extract_index_ivf(ivf).invlists
        for li in range(lists.nlist):
            size = lists.list_size(li)
            if size:
                view = faiss.rev_swig_ptr(lists.get_ids(li), size)
                view[:] = id_map[view]
        out.append(ivf)
    for p in out[1:]:
        out[0].merge_from(p, 0)
    return out[0]


def exact_pass(data: Data, q: np.ndarray, cand: np.ndarray):
    """Exact top-``K`` ids of each query, and exact scores of ``cand`` (query row, id) pairs."""
    best_s = np.full((len(q), K), -np.inf, np.float32)
    best_i = np.zeros((len(q), K), np.int64)
    cand_scores = np.zeros(len(cand), np.float32)
    which = cand[:, 1] // CHUNK
    for c in range(data.chunks):
        x = data.chunk(c)
        s = q @ x.T
        top = np.argpartition(-s, K, axis=1)[:, :K]
        all_s = np.concatenate([best_s, np.take_along_axis(s, top, 1)], 1)
        all_i = np.concatenate([best_i, top + c * CHUNK], 1)
        keep = np.argsort(-all_s, axis=1)[:, :K]
        best_s = np.take_along_axis(all_s, keep, 1)
        best_i = np.take_along_axis(all_i, keep, 1)
        here = np.flatnonzero(which == c)
        cand_scores[here] = s[cand[here, 0], cand[here, 1] - c * CHUNK]
    return best_i, dict(zip(map(tuple, cand.tolist()), cand_scores.tolist(), strict=True))


def latencies(search, q: np.ndarray) -> tuple[float, float]:
    """Median and p95 milliseconds of one query at a time (after one warm-up query)."""
    search(q[:1])
    times = []
    for i in range(len(q)):
        t0 = time.perf_counter()
        search(q[i : i + 1])
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), float(np.percentile(times, 95))


def ray_shards(parts, spec, dim: int, n: int):
    """The shards saved as ``VectorIndex`` files and held by Ray actors behind a ShardedIndex."""
    import ray

    from vtsearch.storage.shards import ShardedIndex, ShardLayout, shard_actor_class, shard_name
    from vtsearch.storage.vectors import VectorIndex

    folder = CACHE / "scale-shards"
    shutil.rmtree(folder, ignore_errors=True)
    names = tuple(shard_name(i, len(parts)) for i in range(len(parts)))
    for part, name in zip(parts, names, strict=True):
        VectorIndex(dim, spec, part).save(folder, name)
    ray.init(num_cpus=len(parts), include_dashboard=False, log_to_driver=False)
    actor = shard_actor_class()
    actors = [actor.remote(str(folder), name, dim) for name in names]
    layout = ShardLayout(len(parts), dim, spec, names, built_for=n)
    return ShardedIndex(layout, actors, folder, owned=True), folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5_000_000)
    ap.add_argument("--dim", type=int, default=1152)
    ap.add_argument("--nlist", type=int, default=2048)
    ap.add_argument("--m", type=int, default=96, help="PQ sub-quantizers (8 bits each)")
    ap.add_argument("--nprobe", type=int, nargs="+", default=[4, 8, 16, 32, 64, 128])
    ap.add_argument("--train", type=int, default=100_000, help="at least 39 x nlist")
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--deep", type=int, default=16, help="also re-score the top deep x k")
    ap.add_argument("--no-ray", action="store_true", help="skip the Ray actors")
    args = ap.parse_args()

    import faiss

    from vtsearch.storage.index_kinds import IndexSpec

    n, dim = args.n, args.dim
    train = max(args.train, 39 * args.nlist)
    data = Data(n, dim)
    spec = IndexSpec("ivfpq", nlist=args.nlist, nprobe=args.nprobe[0], pq_m=args.m, built_for=n)
    tag = f"IVF-PQ {n / 1e6:g}M x {dim}"
    print(f"machine: {machine()}; {n:,} x {dim} vectors, IVF{args.nlist},PQ{args.m}x8, "
          f"{args.shards} shards, trained on {train:,}")  # fmt: skip

    parts, t_train, t_add = build(data, spec, args.shards, train)
    rss_build = peak_rss_mb()
    one = merged(parts)
    assert one.ntotal == n
    code_bytes = one.code_size
    print(
        f"built: train {t_train:.0f} s, add {t_add:.0f} s ({n / t_add:,.0f} vectors/s); "
        f"{code_bytes} B of PQ codes + ids per vector; peak RSS of the build {rss_build:,.0f} MB "
        f"(all floats would be {n * dim * 4 / 2**20:,.0f} MB); with the merged one-index "
        f"baseline {peak_rss_mb():,.0f} MB"
    )

    q = data.queries(args.queries)
    in_process = faiss.IndexShards(dim, True, False)  # threaded, ids kept
    for p in parts:
        in_process.add_shard(p)
    ray_index = folder = None
    if not args.no_ray:
        ray_index, folder = ray_shards(parts, spec, dim, n)
    depth = K * RESCORE  # what the product asks an IVF-PQ index for (timed)
    deep = K * max(RESCORE, args.deep)  # how deep re-scoring would have to go (recall only)
    modes = {"one index": one, f"{args.shards} shards": in_process}
    if ray_index is not None:
        modes[f"{args.shards} Ray actors"] = ray_index
    found, timing = {}, {}
    # One OpenMP thread per index or shard: a single query gains nothing from more (see
    # VectorIndex.search), and the shards then run side by side on the 2 cores.
    faiss.omp_set_num_threads(1)
    for nprobe in args.nprobe:
        one.nprobe = nprobe
        faiss.ParameterSpace().set_index_parameter(in_process, "nprobe", nprobe)
        if ray_index is not None:
            ray_index.nprobe = nprobe
        for name, index in modes.items():
            found[name, nprobe] = index.search(q, deep)[1]
            timing[name, nprobe] = latencies(lambda v, index=index: index.search(v, depth), q)

    cand = np.unique(
        np.concatenate(
            [
                np.stack([np.repeat(np.arange(len(q)), got.shape[1]), got.ravel()], 1)
                for got in found.values()
            ]
        ),
        axis=0,
    )
    cand = cand[cand[:, 1] >= 0]
    with Timer() as t_exact:
        truth, exact = exact_pass(data, q, cand)
    print(f"exact top-10 of {len(q)} queries and scores of {len(cand):,} candidates: "
          f"{t_exact.s:.0f} s (chunked brute force)")  # fmt: skip

    def recalls(got: np.ndarray, top: int) -> tuple[float, float]:
        """Recall@10 of the PQ ranking, and of the best ``top`` re-scored exactly."""
        pq = np.mean([len(set(got[i, :K]) & set(truth[i])) / K for i in range(len(q))])
        rescored = []
        for i in range(len(q)):
            hits = [h for h in got[i, :top] if h >= 0]
            best = sorted(hits, key=lambda h: -exact[i, h])[:K]
            rescored.append(len(set(best) & set(truth[i])) / K)
        return float(pq), float(np.mean(rescored))

    rows = []
    for nprobe in args.nprobe:
        for name in modes:
            pq, rescored = recalls(found[name, nprobe], depth)
            _, deeper = recalls(found[name, nprobe], deep)
            med, p95 = timing[name, nprobe]
            print(f"nprobe {nprobe:>3} {name:>14}: recall@10 {pq:.3f} (PQ ranking), "
                  f"{rescored:.3f} (top {depth} re-scored exactly), {deeper:.3f} (top {deep}); "
                  f"one query {med:.2f} ms median, {p95:.2f} ms p95")  # fmt: skip
            rows.append(figure(f"{tag}, {name}, nprobe {nprobe}: one query", round(med, 2), "ms"))
            if name == "one index":
                rows += [
                    figure(f"{tag}, nprobe {nprobe}: recall@10 (PQ ranking)", round(pq, 3)),
                    figure(f"{tag}, nprobe {nprobe}: recall@10 re-scored", round(rescored, 3)),
                    figure(
                        f"{tag}, nprobe {nprobe}: recall@10, top {deep} re-scored", round(deeper, 3)
                    ),
                ]
        same = [
            np.mean(
                [set(found[a, nprobe][i]) == set(found[name, nprobe][i]) for i in range(len(q))]
            )
            for a in ["one index"]
            for name in modes
        ]
        print(f"nprobe {nprobe:>3}: the shards' merged top-{deep} equals the one index's for "
              f"{min(same):.0%} of the queries")  # fmt: skip
    rows.append(figure(f"{tag} build (train + add), peak RSS", round(rss_build), "MB"))
    rows.append(figure(f"{tag} build (train + add)", round(t_train + t_add), "s"))
    if ray_index is not None:
        import ray

        ray_index.close()
        ray.shutdown()
        shutil.rmtree(folder, ignore_errors=True)
    save_figures("scale", rows)


if __name__ == "__main__":
    main()
