"""Indexing throughput of the default model against the image tower's ceiling.

Prints images/s of (a) the full pipeline (`Engine.index`: scan, hash, decode workers, embed, SQLite
commits, FAISS save) and (c) the model alone on pre-decoded tensors, on the same images in one run.

    python bench/throughput.py [--images DIR] [--limit 1000] [--workers N] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
FLICKR = REPO.parent / "shared" / "data" / "flickr8k"


def flickr_test_images(limit: int) -> list[Path]:
    names = (FLICKR / "splits" / "test.txt").read_text().split()
    return [FLICKR / "images" / n for n in names[:limit]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=Path, help="folder of images (default: Flickr8k test split)")
    ap.add_argument("--limit", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--model", default="vtsearch-lite")
    args = ap.parse_args()

    from vtsearch import Engine
    from vtsearch.indexer.decode import load_image
    from vtsearch.models.registry import load_embedder

    if args.images:
        files = sorted(p for p in args.images.rglob("*") if p.is_file())[: args.limit]
    else:
        files = flickr_test_images(args.limit)
    print(f"{len(files)} images, model {args.model}, torch threads {torch.get_num_threads()}, "
          f"{os.cpu_count()} cores")

    emb = load_embedder(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        for f in files:
            (folder / f.name).symlink_to(f.resolve())

        # (c) ceiling: the model alone on tensors decoded beforehand.
        pixels = torch.stack([emb.transform(load_image(str(f)).image) for f in files])
        with torch.inference_mode():
            emb.encode_images(pixels[: args.batch_size])  # warm-up
            t0 = time.perf_counter()
            for i in range(0, len(pixels), args.batch_size):
                emb.encode_images(pixels[i : i + args.batch_size])
            ceiling = len(pixels) / (time.perf_counter() - t0)
        del pixels

        # (a) the whole pipeline into a fresh collection.
        # The same loaded weights: this measures indexing, not model loading.
        eng = Engine(Path(tmp) / "coll", embedder=emb)
        t0 = time.perf_counter()
        report = eng.index(folder, batch_size=args.batch_size, workers=args.workers)
        pipeline = report.embedded / (time.perf_counter() - t0)

    print(f"{'what':<40}{'images/s':>10}")
    print(f"{'(a) pipeline (Engine.index)':<40}{pipeline:>10.1f}")
    print(f"{'(c) model alone, pre-decoded tensors':<40}{ceiling:>10.1f}")
    print(f"pipeline / ceiling = {pipeline / ceiling:.0%}")


if __name__ == "__main__":
    main()
