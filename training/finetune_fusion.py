"""Fine-tune a trained fusion scorer on a user's own captioned images.

The shipped bi-encoder never saw the user's pictures, so its candidate lists over them are already
the honest kind the scorer meets at query time: no cross-fitting is needed here.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch

from vtsearch.errors import DatasetError
from vtsearch.models.base import Embedder
from vtsearch.search.rerank import DEFAULT_RERANK_K
from vtsearch.training.fusion_data import MAX_TEXT_TOKENS
from vtsearch.training.fusion_scoring import OFF, FusionData, Log, top_lists
from vtsearch.training.train_fusion import save_trained, train_scorer

#: Below this many images every pair trains and the last epoch is kept (no held-out selection).
MIN_IMAGES_FOR_DEV = 30


def _embed_images(embedder: Embedder, reduce, paths: list[str], batch: int = 16):
    from torch.utils.data import DataLoader

    from vtsearch.indexer.decode import ImageFiles

    loader = DataLoader(
        ImageFiles(paths, embedder.transform), batch_size=batch, collate_fn=lambda b: b
    )
    keep, vecs, regions = [], [], []
    for items in loader:
        good = [d for d in items if d.pixels is not None]
        if not good:
            continue
        emb = embedder.encode_images(torch.stack([d.pixels for d in good]).to(embedder.device))
        keep += [d.index for d in good]
        vecs.append(emb.vectors.float().cpu())
        regions.append(reduce(emb.tokens))
    if not keep:
        raise DatasetError("none of the captioned images could be read")
    return keep, torch.cat(vecs), np.concatenate(regions).astype(np.float32)


def _embed_texts(embedder: Embedder, texts: list[str], batch: int = 64):
    vecs, lens = [], []
    states = np.zeros((len(texts), MAX_TEXT_TOKENS, 384), dtype=np.float16)
    with torch.inference_mode():
        for i in range(0, len(texts), batch):
            emb = embedder.encode_texts(texts[i : i + batch])
            t = min(emb.states.shape[1], MAX_TEXT_TOKENS)
            states[i : i + len(emb.vectors), :t] = emb.states[:, :t].float().cpu().numpy()
            lens.append(emb.mask.sum(1).clamp(max=MAX_TEXT_TOKENS).cpu().numpy())
            vecs.append(emb.vectors.float().cpu())
    return torch.cat(vecs), states, np.concatenate(lens)


def finetune_fusion(
    captions: dict[str, list[str]],
    images_dir: Path,
    out_path: Path,
    *,
    embedder: Embedder,
    base: Path,
    epochs: int = 4,
    seed: int = 0,
    lr: float = 1e-3,
    log: Log | None = None,
) -> dict[str, float]:
    """Fine-tune the scorer in ``base`` on ``captions`` (image file name -> its captions) and
    write ``out_path``; returns held-out (or, for small sets, training) recall in the lists."""
    from vtsearch.models.fusion import load_fusion
    from vtsearch.search.rerank import FusionReranker

    t0 = time.time()
    scorer, extra, tensors = load_fusion(base)
    reranker = FusionReranker.from_loaded(scorer, extra, tensors, base)
    names = sorted(captions)
    paths = [str(images_dir / n) for n in names]
    keep, img_vecs, regions = _embed_images(embedder, reranker.reduce, paths)
    names = [names[i] for i in keep]
    texts = [c for n in names for c in captions[n]]
    caption_image = np.array([i for i, n in enumerate(names) for _ in captions[n]])
    txt_vecs, states, lens = _embed_texts(embedder, texts)
    data = FusionData(regions, states, lens, caption_image)
    if log:
        log(f"{len(names)} images, {len(texts)} captions embedded in {time.time() - t0:.0f} s")

    def raw_prior(direction: str, vecs: torch.Tensor) -> np.ndarray:
        p = reranker.priors.get(direction)
        return p.raw(vecs).numpy() if p is not None else np.zeros(len(vecs), np.float32)

    img_prior, txt_prior = raw_prior("t2i", img_vecs), raw_prior("i2t", txt_vecs)
    n = len(names)
    held = np.arange(n) % 10 == 9 if n >= MIN_IMAGES_FOR_DEV else np.zeros(n, bool)
    splits = {"train": np.flatnonzero(~held), "dev": np.flatnonzero(held)}
    if not held.any():
        splits["dev"] = splits["train"]
    lists: dict[str, dict] = {}
    for split, imgs in splits.items():
        caps = np.flatnonzero(np.isin(caption_image, imgs))
        k = min(20, len(imgs))
        train = split == "train"
        lists[split] = {
            "t2i": top_lists(
                "t2i",
                txt_vecs[caps],
                img_vecs[imgs],
                caps,
                imgs,
                img_prior,
                caption_image,
                k,
                ensure_positive=train,
            ),
            "i2t": top_lists(
                "i2t",
                img_vecs[imgs],
                txt_vecs[caps],
                imgs,
                caps,
                txt_prior,
                caption_image,
                k,
                ensure_positive=train,
            ),
        }
    settings = extra.get("t2i", {"mix": extra.get("mix", 1.0), "alpha": 0.0})
    tuned, mixer, metrics = train_scorer(
        data,
        lists["train"],
        lists["dev"],
        scorer=scorer.train(),
        seed=seed,
        epochs=epochs,
        batch_size=min(32, max(2, n // 4)),
        lr=lr,
        init_scale=1.0 / settings["mix"],
        init_alpha=settings.get("alpha", 0.0),
        select_last=not held.any(),
        log=log,
    )
    for d in ("t2i", "i2t"):
        base_d = extra.get(d)
        if base_d is not None and not base_d.get("mix"):
            # The base switched the scorer off for this direction on its dev set; a small
            # captioned folder is no evidence to switch it back on.
            mixer.log_scale[d].data.fill_(-math.log(OFF))
            mixer.alpha[d].data.fill_(float(base_d.get("alpha", 0.0)))
    banks = {k: v for k, v in tensors.items() if k.startswith("bank.")}
    beta = extra.get("t2i", {}).get("beta", 20.0)
    depth = int(extra.get("rerank_k", DEFAULT_RERANK_K))
    save_trained(tuned, mixer, depth, out_path, banks or None, beta)
    return {**metrics, "held_out": bool(held.any()), "seconds": time.time() - t0}
