"""Re-rank depth: text->image R@1 and query latency against the number of candidates re-ranked.

The default ``--rerank-k`` is read off this curve on the dev split (never test): the smallest
depth within 0.2 R@1 points of the best one.

    python bench/rerank_depth.py [--split dev] [--per-image 2] [--depths 0,10,20,30,50,100]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import FLICKR, figure, machine, need_flickr, save_figures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--split", default="dev")
    ap.add_argument("--per-image", type=int, default=2, help="captions per image used as queries")
    ap.add_argument("--depths", default="0,10,20,30,50,100")
    ap.add_argument("--reranker", default=None, help="fusion weights file (default: shipped)")
    ap.add_argument("--limit", type=int, default=None, help="first N images of the split")
    args = ap.parse_args()
    need_flickr()

    from vtsearch import Engine
    from vtsearch.models.registry import load_embedder

    names = (FLICKR / "splits" / f"{args.split}.txt").read_text().split()[: args.limit]
    caps: dict[str, list[str]] = {}
    for line in (FLICKR / "captions.tsv").read_text().splitlines()[1:]:
        img, cap = line.split("\t", 1)
        caps.setdefault(img, []).append(cap)
    queries = [(c, n) for n in names for c in caps[n][: args.per_image]]
    depths = [int(d) for d in args.depths.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        for n in names:
            (folder / n).symlink_to(FLICKR / "images" / n)
        eng = Engine(
            Path(tmp) / "coll", embedder=load_embedder("vtsearch-lite"), reranker=args.reranker
        )
        eng.index(folder)
        for c, _ in queries[:5]:  # warm-up
            eng.search(text=c, k=10)
        rows = []
        print(f"{args.split}: {len(names)} images, {len(queries)} queries; {machine()}")
        print(f"{'depth':>6}{'R@1':>8}{'R@5':>8}{'median ms':>12}")
        for k in depths:
            hits1 = hits5 = 0
            times = []
            for c, n in queries:
                t0 = time.perf_counter()
                res = eng.search(text=c, k=10, rerank=k > 0, rerank_k=max(k, 10))
                times.append((time.perf_counter() - t0) * 1000)
                names_out = [Path(r.path).name for r in res]
                hits1 += names_out[:1] == [n]
                hits5 += n in names_out[:5]
            r1, r5 = 100 * hits1 / len(queries), 100 * hits5 / len(queries)
            ms = float(np.median(times))
            print(f"{k:>6}{r1:>8.2f}{r5:>8.2f}{ms:>12.1f}")
            rows.append((k, r1, ms))
    best = max(r for _, r, _ in rows[1:]) if len(rows) > 1 else rows[0][1]
    chosen = next(k for k, r, _ in rows if k > 0 and r >= best - 0.2)
    print(f"chosen depth (smallest within 0.2 R@1 of the best): {chosen}")
    save_figures(
        "rerank_depth",
        [figure(f"{args.split} T->I R@1 at depth {k}", r, "%") for k, r, _ in rows]
        + [figure("chosen re-rank depth", chosen)],
    )


if __name__ == "__main__":
    main()
