"""The token cache is keyed by what made the tokens (the scorer's image-side reducer), not by the
whole weights file: a scorer fine-tuned with the reducer frozen keeps reading its base's cache."""

from __future__ import annotations

import json

import numpy as np
import torch
from conftest import save_random_scorer

from vtsearch import Engine
from vtsearch.models.fusion import load_fusion, save_fusion
from vtsearch.search.rerank import FusionReranker
from vtsearch.storage.tokens import TOKENS_META, TokenCache


def _tuned(base: str, folder, touch: str) -> str:
    """``base`` with one parameter changed, as fine-tuning (``touch``: its name prefix) would."""
    scorer, extra, tensors = load_fusion(base)
    with torch.no_grad():
        for name, p in scorer.named_parameters():
            if name.startswith(touch):
                p.add_(0.5)
    out = folder / f"tuned-{touch.strip('.')}.safetensors"
    save_fusion(scorer, out, extra=extra, tensors=tensors)
    return str(out)


def test_fine_tuned_scorer_keeps_the_token_cache(tmp_path, photos, lite):
    base = save_random_scorer(tmp_path, rerank_k=5)
    tuned = _tuned(base, tmp_path, "log_gain")  # not a frozen part
    db = tmp_path / "coll"
    Engine(db, embedder=lite, reranker=base).index(photos, workers=0)
    before = TokenCache.open_existing(db)
    ids = before.filled()
    assert len(ids) == 7

    # A re-index with the tuned scorer (a new photo comes in) keeps every cached record.
    (photos / "img0.png").rename(photos / "img0-renamed.png")
    eng = Engine(db, embedder=lite, reranker=tuned)
    eng.index(photos, workers=0)
    after = TokenCache.open_existing(db)
    assert set(ids) <= set(after.filled().tolist())

    # Queries read the cache, not the files: with the photos gone the tokens are still there.
    for p in photos.rglob("*.*"):
        p.unlink()
    got = eng._parts.searcher().region_tokens(eng.reranker(), ids.tolist())
    cached = np.stack(before.get(ids))
    assert np.allclose(got, cached) and np.abs(got).sum() > 0


def test_a_retrained_reducer_does_not_read_old_tokens(tmp_path):
    base = save_random_scorer(tmp_path, rerank_k=5)
    same = FusionReranker.load(tmp_path / _tuned(base, tmp_path, "word_weight."))
    other = FusionReranker.load(tmp_path / _tuned(base, tmp_path, "reducer."))
    first = FusionReranker.load(base)
    assert same.token_revision == first.token_revision
    assert other.token_revision != first.token_revision
    assert not other.reads_tokens_of(first.token_revision)
    # A cache written by an older version, keyed by the weights file, is still its file's.
    assert first.reads_tokens_of(first.revision) and not same.reads_tokens_of(first.revision)


def test_a_cache_keyed_by_the_weights_file_is_kept(tmp_path, photos, lite):
    base = save_random_scorer(tmp_path, rerank_k=5)
    db = tmp_path / "coll"
    Engine(db, embedder=lite, reranker=base).index(photos, workers=0)
    meta_path = db / TOKENS_META
    meta = json.loads(meta_path.read_text())
    meta["revision"] = FusionReranker.load(base).revision  # as an older version wrote it
    meta_path.write_text(json.dumps(meta))
    Engine(db, embedder=lite, reranker=base).index(photos, workers=0)
    assert len(TokenCache.open_existing(db).filled()) == 7
