"""Filtered query latency at 100k images (HNSW over 8-bit codes, as the factory builds it):
unfiltered against a selective filter (1%: one folder) and a broad one (50%: a year of dates),
with recall against exact search restricted to the same ids; and the two costs the filtered
HNSW search chooses between (``vtsearch.storage.vectors_filtered.SCAN_PER_EF``): scanning an id
set's stored vectors exactly, and a graph walk with a widened beam.

A synthetic collection of --n rows (real vtsearch-lite vectors of the Flickr8k photos, each
perturbed, as ``bench/query_latency.py`` makes them; seeded clusters without Flickr8k) in 100
folders of 1%, with EXIF dates spread over 2023-2024 and two thirds landscape; cached under
.cache/bench between runs.

    python bench/filters.py              # 100k images
    python bench/filters.py --quick      # 10k images, a smoke run
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import CACHE, REPO, Timer, figure, machine, save_figures
from query_latency import base_vectors, collection_vectors, queries


def collection(n: int, emb) -> Path:
    """``n`` rows in 100 folders (``/synthetic/0042``: 1%), dates over two years, indexed by the
    factory's choice."""
    import numpy as np

    from vtsearch.storage.catalog import Catalog, NewImage
    from vtsearch.storage.rebuild import optimize

    folder = CACHE / f"filters-{n}-{emb.model_id}-{emb.revision or 'r0'}"
    if (folder / "complete").exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    print(f"writing a synthetic {n:,}-image collection to {folder} (once) ...", flush=True)
    rng = np.random.default_rng(0)
    start_day = datetime(2023, 1, 1)
    with Timer() as t:
        cat = Catalog.open(folder)
        cat.bind_model(emb.model_id, emb.dim, emb.revision)
        base = base_vectors(emb)
        for start in range(0, n, 2000):
            m = min(2000, n - start)
            v = collection_vectors(emb, start, m, base)
            days = rng.integers(0, 731, m)
            wide = rng.random(m) < 2 / 3
            cat.write_batch(
                [
                    NewImage(
                        f"/synthetic/{(start + i) * 100 // n:04d}/img_{start + i:07d}.jpg",
                        size=2_000_000 + i,
                        mtime_ns=1_700_000_000_000_000_000 + start + i,
                        sha256=f"{start + i:064x}",
                        vector=v[i],
                        width=4000 if wide[i] else 3000,
                        height=3000 if wide[i] else 4000,
                        format="JPEG",
                        taken_at=start_day + timedelta(days=int(days[i]), hours=12),
                    )
                    for i in range(m)
                ]
            )
    print(f"  rows written in {t.s:.0f} s", flush=True)
    with Timer() as t:
        reports = optimize(folder, cat, force=True)
    cat.close()
    print(f"  {reports[0].after.kind} index built in {t.s:.0f} s", flush=True)
    (folder / "complete").write_text("ok")
    return folder


def median_ms(fn, items) -> float:
    times = []
    for it in items:
        t0 = time.perf_counter()
        fn(it)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000, help="images in the collection")
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--quick", action="store_true", help="10k images, 30 queries")
    ap.add_argument("--json", type=Path, default=None, help="figures file for bench/summary.py")
    args = ap.parse_args()
    if args.quick:
        args.n, args.queries = 10_000, 30
    os.chdir(REPO)

    import numpy as np

    from vtsearch import Engine
    from vtsearch.models.registry import load_embedder
    from vtsearch.search.query import encode_query
    from vtsearch.storage import vectors, vectors_filtered
    from vtsearch.storage.catalog import Catalog
    from vtsearch.storage.filters import Filters
    from vtsearch.storage.vectors import VectorIndex
    from vtsearch.storage.vectors_filtered import filtered_ef

    emb = load_embedder("vtsearch-lite")
    folder = collection(args.n, emb)
    texts = queries(args.queries)
    print(f"machine: {machine()}")

    filters = {
        "none": None,
        "selective: 1 folder (1%)": Filters(folders=["/synthetic/0042"]),
        "10 folders (10%)": Filters(folders=[f"/synthetic/{i:04d}" for i in range(40, 50)]),
        "broad: taken in 2024 (50%)": Filters(after="2024-01-01"),
        "portrait, 2024 (17%)": Filters(after="2024", orientation="portrait"),
    }
    eng = Engine(folder, embedder=emb)
    for q in texts[:10]:
        eng.search(text=q, k=10, rerank=False)  # warm-up: index load, caches
    cat = Catalog.open(folder)
    vi = VectorIndex.load(folder, emb.dim)
    vi.sync(cat)
    n = len(vi)
    vecs = np.stack([encode_query(emb, q, None).vector for q in texts])
    # Exact reference: every row's float vector (from the catalog), scored with numpy.
    ids, rows = [], []
    for i, blob in cat.live_vectors():
        ids.append(i)
        rows.append(np.frombuffer(blob, dtype=np.float32))
    ids, x = np.array(ids), np.stack(rows)

    print(f"\n== filtered text query, {n:,} images, {vi.kind} ({vi.spec.codec}) index, k=10 ==")
    print(
        "e2e: Engine.search median; new: the same with the filter's ids looked up afresh each "
        "time\n(a query repeating a filter reuses them); catalog, vectors: the two lookups alone"
    )
    head = f"{'filter':<28}{'ids':>8}{'path':>7}{'e2e ms':>8}{'new':>7}{'catalog':>9}{'vectors':>9}"
    print(head + f"{'recall':>8}")
    memo = eng._parts.searcher()._matching_memo

    def fresh(q, f):
        memo.clear()
        return eng.search(text=q, k=10, rerank=False, filters=f)

    out = {}
    for name, f in filters.items():
        among = cat.matching_ids(f) if f is not None else None
        m = len(among) if among is not None else n
        ef = filtered_ef(vi.spec, 10, m, n) if among is not None else vi.spec.ef_search
        path = ("graph" if ef else "scan") if vi.kind == "hnsw" else vi.kind
        e2e = median_ms(lambda q, f=f: eng.search(text=q, k=10, rerank=False, filters=f), texts)
        new = median_ms(lambda q, f=f: fresh(q, f), texts[:30])
        ids_ms = median_ms(lambda _, f=f: cat.matching_ids(f), texts[:20]) if f else 0.0
        search_ms = median_ms(lambda v, a=among: vi.search(v[None, :], 10, ids=a), vecs)
        member_rows = np.searchsorted(ids, among) if among is not None else np.arange(n)
        exact = ids[member_rows][np.argsort(-(vecs @ x[member_rows].T), axis=1)[:, :10]]
        got = np.stack([vi.search(v[None, :], 10, ids=among)[1][0] for v in vecs])
        rec = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, exact, strict=True)]))
        print(
            f"{name:<28}{m:>8,}{path if among is not None else '-':>7}{e2e:>8.1f}{new:>7.1f}"
            f"{ids_ms:>9.1f}{search_ms:>9.2f}{rec:>8.3f}"
        )
        out[name] = (e2e, rec, new)

    # The two costs the rule compares, at this size.
    faiss = vectors.load_faiss()
    rng = np.random.default_rng(1)
    print("\n== a filtered HNSW search's two ways (1 thread, k=10) ==")
    faiss.omp_set_num_threads(1)
    for m in (n // 100, n // 20, n // 5):
        members = np.sort(rng.choice(ids, m, replace=False))
        mask = np.zeros(int(members[-1]) + 1, dtype=bool)
        mask[members] = True
        sel = faiss.IDSelectorBitmap(np.packbits(mask, bitorder="little"))
        scan = median_ms(lambda v, s=sel: vi._scan(v[None, :], 10, s), vecs)
        print(f"scan of {m:>6,} members: {scan:6.2f} ms ({scan / m * 1000:.2f} us a member)")
    members = np.sort(rng.choice(ids, n // 10, replace=False))
    for ef in (256, 1024, 2048):
        vectors_ef = lambda *a, e=ef: e  # noqa: E731
        real, vectors_filtered.filtered_ef = vectors_filtered.filtered_ef, vectors_ef
        try:
            walk = median_ms(lambda v: vi.search(v[None, :], 10, ids=members), vecs)
        finally:
            vectors_filtered.filtered_ef = real
        print(f"graph walk, beam {ef:>5}: {walk:6.2f} ms ({walk / ef * 1000:.2f} us a unit)")
    eng.close()
    cat.close()

    save_figures(
        "filters",
        [
            figure(f"filtered query @{n // 1000}k, unfiltered, median", out["none"][0], "ms"),
            figure(
                "  selective filter (1%)",
                out["selective: 1 folder (1%)"][0],
                "ms",
                "<= 20",
                out["selective: 1 folder (1%)"][0] <= 20,
            ),
            figure(
                "  broad filter (50%)",
                out["broad: taken in 2024 (50%)"][0],
                "ms",
                "<= 20",
                out["broad: taken in 2024 (50%)"][0] <= 20,
            ),
        ],
        args.json,
    )


if __name__ == "__main__":
    main()
