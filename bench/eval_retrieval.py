"""Score the shipped vtsearch-lite on Flickr8k retrieval and flowers-dev.

Loads the model through ``load_lite()``. Tower outputs come from the feature cache (computed on a
miss with the embedder's own towers) and are mapped to final vectors by ``model.heads``, the very
method ``LiteEmbedder.encode_images/encode_texts`` use, so the figures are those of the embedder.
``--check N`` re-encodes N images and captions end to end and asserts the vectors match.

    python bench/eval_retrieval.py --split test
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vtsearch.models.lite import load_lite  # noqa: E402
from vtsearch.training.datasets import (  # noqa: E402
    class_precision,
    load_flickr_split,
    load_flowers_features,
    load_split_features,
    retrieval_recall,
)


def check_same_vectors(model, paths: list[Path], captions: list[str], feats: dict, n: int) -> float:
    """Largest gap between cached-path vectors and ``encode_pil``/``encode_texts`` vectors."""
    from PIL import Image

    with torch.inference_mode():
        cached_img = model.heads.image_vectors(feats["pooled"][:n], feats["logits"][:n])
        cached_txt = model.heads.text_vectors(feats["text"][:n])
    direct_img = model.encode_pil([Image.open(p) for p in paths[:n]]).vectors
    direct_txt = model.encode_texts(captions[:n]).vectors
    return max(
        (cached_img - direct_img).abs().max().item(), (cached_txt - direct_txt).abs().max().item()
    )


def main() -> None:
    ap = argparse.ArgumentParser(description="vtsearch-lite retrieval benchmark")
    ap.add_argument("--flickr", type=Path, default=ROOT.parent / "shared" / "data" / "flickr8k")
    ap.add_argument("--flowers", type=Path, default=ROOT.parent / "shared" / "data" / "flowers-dev")
    ap.add_argument("--split", choices=["test", "dev"], default="test")
    ap.add_argument("--cache", type=Path, default=None, help="tower feature cache folder")
    ap.add_argument("--check", type=int, default=8, help="images/captions re-encoded end to end")
    args = ap.parse_args()

    t0 = time.perf_counter()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    model = load_lite()
    towers = {"image_tower": model.image_tower, "text_tower": model.text_tower}
    feats = load_split_features(args.flickr, args.split, args.cache, **towers)
    with torch.inference_mode():
        img = model.heads.image_vectors(feats["pooled"], feats["logits"])
        txt = model.heads.text_vectors(feats["text"])
    rec = retrieval_recall(img, txt)
    n_img, n_txt = img.shape[0], txt.shape[0]
    print(f"model {model.model_id} (dim {model.dim}), Flickr8k {args.split}: ", end="")
    print(f"{n_txt} captions vs {n_img} images")
    for name, key in (("text->image", "t2i"), ("image->text", "i2t")):
        figures = "  ".join(f"R@{k} {rec[f'{key}_R@{k}']:5.1f}" for k in (1, 5, 10))
        print(f"  {name}  {figures}")

    if args.check > 0:
        paths, caps = load_flickr_split(args.flickr, args.split)
        flat = [c for group in caps for c in group]
        gap = check_same_vectors(model, paths, flat, feats, args.check)
        print(f"  cached vs end-to-end vectors: max abs difference {gap:.2e}")
        if gap > 1e-4:
            raise SystemExit("cached features do not reproduce LiteEmbedder's vectors")

    if args.flowers and args.flowers.is_dir():
        fl = load_flowers_features(args.flowers, args.cache, **towers)
        with torch.inference_mode():
            prec = class_precision(
                model.heads.image_vectors(fl["pooled"], fl["logits"]),
                fl["labels"],
                model.heads.text_vectors(fl["queries"]),
            )
        per = "  ".join(f"{s} {p:.2f}" for s, p in zip(fl["species"], prec, strict=True))
        print(f"flowers-dev P@50 mean {sum(prec) / len(prec):.3f}  ({per})")
    print(f"wall time {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
