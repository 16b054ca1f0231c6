"""Give vtsearch-lite its concept branch: image vectors gain a ConSE vector in all-mpnet-base-v2's
space, which label-like queries read (``vtsearch.models.lite``, ``query_kind``).

Nothing is trained: the branch is the ImageNet class texts embedded by the stronger sentence
encoder (the ``concept_style`` texts: a photo prompt and the WordNet gloss of each class), and
the settings (style, ``label_alpha``) were chosen on the dev sets by ``docs/zeroshot.md``'s rule.
Captions score exactly as before; the re-ranker's query banks are carried into the new layout
(captions padded, images re-embedded) so its priors stay the same for them.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

from vtsearch.models.fusion import load_fusion, save_fusion
from vtsearch.models.lite import WEIGHTS_PATH, LiteHeads, load_heads, save_heads
from vtsearch.models.mpnet import mpnet_path
from vtsearch.models.towers import quiet_text_tower
from vtsearch.training.datasets import class_texts, load_flickr_split, load_split_features

CONCEPT_DIM = 768
#: In how many of Flickr8k's 6,000 training images' captions a word must be for the caption heads
#: to keep a label made of such words (chosen on the dev sets, see docs/zeroshot.md).
KNOWN_IN = 300


def caption_words(flickr_dir: Path, at_least: int = KNOWN_IN) -> tuple[str, ...]:
    """Words in the captions of at least ``at_least`` Flickr8k train images."""
    import re
    from collections import Counter

    _, captions = load_flickr_split(flickr_dir, "train")
    counts = Counter(
        w
        for group in captions
        for w in {x for c in group for x in re.findall(r"[a-z]+", c.lower())}
    )
    return tuple(sorted(w for w, n in counts.items() if n >= at_least))


def concept_embeddings(style: str, batch: int = 64) -> torch.Tensor:
    """Unit all-mpnet-base-v2 embeddings ``[1000, 768]`` of the ImageNet classes (mean over each
    class's texts in ``style``)."""
    tower = quiet_text_tower(traced=True, path=mpnet_path()).eval()
    groups = class_texts(style)
    flat = [t for g in groups for t in g]
    with torch.inference_mode():
        vecs = torch.cat([tower(flat[i : i + batch])[0] for i in range(0, len(flat), batch)])
    sizes = [len(g) for g in groups]
    return F.normalize(torch.stack([c.mean(0) for c in torch.split(vecs, sizes)]), dim=-1)


def add_concept_branch(
    flickr_dir: Path,
    weights: Path = WEIGHTS_PATH,
    fusion: Path | None = None,
    cache_dir: Path | None = None,
    label_alpha: float = 0.1,
    style: str = "photo_definition",
) -> dict:
    """Rewrite ``weights`` (and the fusion file's query banks) with the concept branch."""
    old = load_heads(weights)
    if old.config.concept_dim:
        raise ValueError(f"{weights} already has a concept branch")
    cfg = replace(
        old.config,
        concept_dim=CONCEPT_DIM,
        label_alpha=label_alpha,
        concept_style=style,
        caption_words=caption_words(flickr_dir),
    )
    heads = LiteHeads(cfg)
    missing, _ = heads.load_state_dict(old.state_dict(), strict=False)
    assert missing == ["concept_emb"], missing
    heads.concept_emb.copy_(concept_embeddings(style))
    heads.eval()

    fusion = fusion or weights.with_name(weights.stem + "-fusion.safetensors")
    scorer, extra, tensors = load_fusion(fusion)
    train = load_split_features(flickr_dir, "train", cache_dir)
    with torch.no_grad():
        # Captions: the same rows in the new layout (their dot products with images unchanged).
        texts = tensors["bank.texts"]
        pad = texts.new_zeros(len(texts), CONCEPT_DIM)
        tensors["bank.texts"] = torch.cat([texts, pad], -1) * heads._spread
        # Images: each bank row is a train image; find it by its old vector, re-embed it.
        before = old.image_vectors(train["pooled"], train["logits"])
        rows = (tensors["bank.images"] @ before.T).argmax(1)
        match = (tensors["bank.images"] * before[rows]).sum(1)
        assert float(match.min()) > 0.999, "a bank image is not a Flickr8k train image"
        tensors["bank.images"] = heads.image_vectors(train["pooled"][rows], train["logits"][rows])
    save_heads(heads, weights)
    save_fusion(scorer, fusion, extra=extra, tensors=tensors)
    return {"weights": str(weights), "dim": cfg.dim, "bank_match": float(match.min())}
