"""The data the bi-encoder learns and is judged on: Flickr8k splits, flowers-dev, ImageNet class
texts for ConSE, their cached tower features, and the recall and precision measures."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vtsearch.errors import DatasetError
from vtsearch.training.features import image_features, text_features

CAPTIONS_PER_IMAGE = 5
FLOWER_QUERY = "a photo of {}"
#: How each ImageNet class is written before MiniLM embeds it; see :func:`class_texts`.
CLASS_TEXT_STYLES = ("first", "synonyms", "photo", "definition", "photo_definition")


def load_flickr_split(flickr_dir: Path, split: str) -> tuple[list[Path], list[list[str]]]:
    """Image paths of a Flickr8k split and the five captions of each, in split-file order.

    Example:
        >>> paths, caps = load_flickr_split(Path("flickr8k"), "dev")  # doctest: +SKIP
        >>> len(paths), len(caps[0])
        (1000, 5)
    """
    flickr_dir = Path(flickr_dir)
    split_file = flickr_dir / "splits" / f"{split}.txt"
    tsv = flickr_dir / "captions.tsv"
    if not split_file.is_file() or not tsv.is_file():
        raise DatasetError(f"{flickr_dir} is not a Flickr8k folder (needs captions.tsv, splits/)")
    names = [ln.strip() for ln in split_file.read_text().splitlines() if ln.strip()]
    captions: dict[str, list[str]] = {}
    with tsv.open(newline="", encoding="utf-8") as f:
        rows = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        next(rows, None)
        for row in rows:
            if len(row) >= 2:
                captions.setdefault(row[0], []).append(row[1])
    short = [n for n in names if len(captions.get(n, [])) < CAPTIONS_PER_IMAGE]
    if short:
        raise DatasetError(f"{len(short)} {split} image(s) lack 5 captions, e.g. {short[0]}")
    paths = [flickr_dir / "images" / n for n in names]
    return paths, [captions[n][:CAPTIONS_PER_IMAGE] for n in names]


def load_flowers(flowers_dir: Path) -> tuple[list[Path], np.ndarray, list[str]]:
    """Photos of a class-per-folder set, their integer labels, and the folder names."""
    flowers_dir = Path(flowers_dir)
    if not flowers_dir.is_dir():
        raise DatasetError(f"{flowers_dir} is not a folder")
    species = sorted(d.name for d in flowers_dir.iterdir() if d.is_dir())
    if not species:
        raise DatasetError(f"{flowers_dir} has no class folders")
    paths, labels = [], []
    for i, name in enumerate(species):
        for p in sorted((flowers_dir / name).iterdir()):
            if p.is_file():
                paths.append(p)
                labels.append(i)
    return paths, np.asarray(labels), species


def class_texts(style: str) -> list[list[str]]:
    """Texts describing each ImageNet class; a class's embedding is the mean over its texts.

    Styles: ``first`` (first WordNet lemma), ``synonyms`` (all lemmas), ``photo`` ("a photo of a"
    + all lemmas), ``definition`` (lemmas + WordNet gloss), ``photo_definition`` (both texts).
    """
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    out = []
    for i in range(info.num_classes()):
        names = info.index_to_description(i)
        detailed = info.index_to_description(i, detailed=True)
        texts = {
            "first": [names.split(",")[0].strip()],
            "synonyms": [names],
            "photo": [f"a photo of a {names}"],
            "definition": [detailed],
            "photo_definition": [f"a photo of a {names}", detailed],
        }.get(style)
        if texts is None:
            raise ValueError(f"unknown class text style {style!r}; use one of {CLASS_TEXT_STYLES}")
        out.append(texts)
    return out


def class_embeddings(style: str, cache_dir: Path | None = None, tower=None) -> torch.Tensor:
    """Unit MiniLM embeddings ``[1000, 384]`` of the ImageNet classes written in ``style``."""
    groups = class_texts(style)
    flat = [t for g in groups for t in g]
    emb = torch.from_numpy(text_features(flat, cache_dir, tower=tower))
    sizes = [len(g) for g in groups]
    means = torch.stack([chunk.mean(0) for chunk in torch.split(emb, sizes)])
    return F.normalize(means, dim=-1)


def retrieval_recall(
    img: torch.Tensor, txt: torch.Tensor, ks: tuple[int, ...] = (1, 5, 10)
) -> dict[str, float]:
    """Flickr8k protocol: ``txt`` holds the 5 captions of image ``i`` at rows ``5i..5i+4``.

    Returns ``t2i_R@K`` and ``i2t_R@K`` in percent.
    """
    n = img.shape[0]
    sims = txt @ img.T  # [5N, N]
    owner = torch.arange(n).repeat_interleave(CAPTIONS_PER_IMAGE)
    # Rank of the right image for each caption: how many images score strictly higher.
    right = sims[torch.arange(len(owner)), owner]
    t2i_rank = (sims > right[:, None]).sum(1)
    # For each image, the best rank among its five captions.
    sims_i = sims.T  # [N, 5N]
    best = sims_i.view(n, n, CAPTIONS_PER_IMAGE)[torch.arange(n), torch.arange(n)].max(1).values
    i2t_rank = (sims_i > best[:, None]).sum(1)
    out = {}
    for k in ks:
        out[f"t2i_R@{k}"] = 100.0 * (t2i_rank < k).float().mean().item()
    for k in ks:
        out[f"i2t_R@{k}"] = 100.0 * (i2t_rank < k).float().mean().item()
    return out


def class_precision(
    img: torch.Tensor, labels: np.ndarray, queries: torch.Tensor, k: int = 50
) -> list[float]:
    """Precision@k of query ``c`` over ``img`` where relevant means ``labels == c``."""
    lab = torch.as_tensor(labels)
    top = (queries @ img.T).topk(k, dim=1).indices
    return [(lab[top[c]] == c).float().mean().item() for c in range(queries.shape[0])]


def load_split_features(
    flickr_dir: Path, split: str, cache_dir: Path | None, image_tower=None, text_tower=None
) -> dict[str, torch.Tensor]:
    """Cached tower features of a Flickr8k split: pooled, logits, and 5 caption rows per image."""
    paths, caps = load_flickr_split(flickr_dir, split)
    img = image_features(paths, cache_dir, tower=image_tower)
    txt = text_features([c for group in caps for c in group], cache_dir, tower=text_tower)
    return {
        "pooled": torch.from_numpy(img["pooled"]),
        "logits": torch.from_numpy(img["logits"]),
        "text": torch.from_numpy(txt),
    }


def load_flowers_features(
    flowers_dir: Path, cache_dir: Path | None, image_tower=None, text_tower=None
) -> dict[str, object]:
    """Cached features of a class-per-folder set and its ``a photo of {class}`` queries."""
    paths, labels, species = load_flowers(flowers_dir)
    img = image_features(paths, cache_dir, tower=image_tower)
    queries = text_features([FLOWER_QUERY.format(s) for s in species], cache_dir, tower=text_tower)
    return {
        "pooled": torch.from_numpy(img["pooled"]),
        "logits": torch.from_numpy(img["logits"]),
        "labels": labels,
        "species": species,
        "queries": torch.from_numpy(queries),
    }
