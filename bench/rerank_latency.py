"""Added latency of fusion re-ranking: median over warm in-process text queries.

Indexes Flickr8k test images (or --images) into a throw-away collection with the token cache,
then times, per query, the whole search without re-ranking and with re-ranking of the top
--rerank-k (token cache read + fusion scoring included; by default the scorer's own depth, the
one queries use). Uses the shipped fusion scorer, or a
randomly initialised one of the same shape when none ships (latency does not depend on weights).

    python bench/rerank_latency.py [--queries 100] [--rerank-k K] [--limit 1000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import FLICKR, figure, need_flickr, save_figures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument(
        "--rerank-k", type=int, default=None, help="default: the scorer's own, as queries use"
    )
    ap.add_argument("--limit", type=int, default=1000)
    ap.add_argument("--reranker", default=None, help="fusion weights file (default: shipped)")
    ap.add_argument("--json", type=Path, default=None, help="figures file for bench/summary.py")
    args = ap.parse_args()
    need_flickr()

    from vtsearch import Engine
    from vtsearch.models.fusion import FusionScorer, save_fusion
    from vtsearch.models.registry import load_embedder
    from vtsearch.search.evaluate import query_depth
    from vtsearch.search.rerank import default_weights

    names = (FLICKR / "splits" / "test.txt").read_text().split()[: args.limit]
    captions = {}
    for line in (FLICKR / "captions.tsv").read_text().splitlines()[1:]:
        img, cap = line.split("\t", 1)
        captions.setdefault(img, cap)
    queries = [captions[n] for n in names][: args.queries]

    with tempfile.TemporaryDirectory() as tmp:
        reranker = args.reranker or str(default_weights("vtsearch-lite"))
        if not Path(reranker).is_file():
            torch.manual_seed(0)
            scorer = FusionScorer()
            scorer.reducer.fit(torch.randn(2000, scorer.config.region_in))
            reranker = str(Path(tmp) / "random-fusion.safetensors")
            save_fusion(scorer, reranker)
            print("no shipped fusion scorer: timing a randomly initialised one of the same shape")
        folder = Path(tmp) / "images"
        folder.mkdir()
        for n in names:
            (folder / n).symlink_to(FLICKR / "images" / n)
        eng = Engine(Path(tmp) / "coll", embedder=load_embedder("vtsearch-lite"), reranker=reranker)
        eng.index(folder)
        depth = args.rerank_k or query_depth(eng)
        for q in queries[:5]:  # warm-up
            eng.search(text=q, k=10, rerank_k=depth)

        def timed(**kw: object) -> list[float]:
            out = []
            for q in queries:
                t0 = time.perf_counter()
                eng.search(text=q, k=10, **kw)
                out.append((time.perf_counter() - t0) * 1000)
            return out

        plain = timed(rerank=False)
        reranked = timed(rerank_k=depth)
    added = np.array(reranked) - np.array(plain)
    print(
        f"{len(names)} images, {len(queries)} queries, re-rank depth {depth}, "
        f"torch threads {torch.get_num_threads()}"
    )
    print(f"{'search without re-rank, median ms':<44}{np.median(plain):>8.1f}")
    print(f"{'search with re-rank, median ms':<44}{np.median(reranked):>8.1f}")
    print(f"{'added by re-ranking, median ms':<44}{np.median(added):>8.1f}")
    save_figures(
        "rerank_latency",
        [
            figure(f"search @{len(names)} images, no re-rank", float(np.median(plain)), "ms"),
            figure(f"added by re-ranking top {depth}", float(np.median(added)), "ms"),
        ],
        args.json,
    )


if __name__ == "__main__":
    main()
