"""Re-ranking plumbing with the default model: token cache on index, scores, fallbacks."""

import shutil

import numpy as np
import pytest
import torch
from conftest import SAMPLES, save_random_scorer

from vtsearch import Engine
from vtsearch.errors import ModelNotFoundError
from vtsearch.models.fusion import FusionConfig, FusionScorer, save_fusion
from vtsearch.models.prior import QueryBankPrior
from vtsearch.storage.catalog import Catalog
from vtsearch.storage.tokens import TokenCache


@pytest.fixture(scope="module")
def scorer_path(tmp_path_factory):
    return save_random_scorer(tmp_path_factory.mktemp("fusion"), rerank_k=10, fit_rows=600)


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "photos"
    shutil.copytree(SAMPLES, folder)
    return folder


def test_index_caches_compact_tokens_and_rerank_mixes_scores(tmp_path, photos, lite, scorer_path):
    eng = Engine(tmp_path / "coll", embedder=lite, reranker=scorer_path)
    eng.index(photos, workers=0)
    cache = TokenCache.open_existing(tmp_path / "coll")
    assert cache is not None and cache.bytes_per_image <= 32 * 1024
    ids = [r.id for r in eng.search(text="a cat", k=19, rerank=False)]
    assert all(t is not None for t in cache.get(np.array(ids)))

    hits = eng.search(text="a cat", k=5)
    assert len(hits) == 5
    for h in hits:
        assert h.rerank_score is not None
        assert h.score == pytest.approx(h.bi_score + 0.05 * h.rerank_score, abs=1e-5)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    plain = eng.search(text="a cat", k=5, rerank=False)
    assert all(h.rerank_score is None and h.score == h.bi_score for h in plain)

    # Without the cache the engine recomputes the top-k tokens: same scores up to int8 rounding.
    for f in ("tokens.bin", "tokens.json"):
        (tmp_path / "coll" / f).unlink()
    fresh = Engine(tmp_path / "coll", embedder=lite, reranker=scorer_path)
    again = fresh.search(text="a cat", k=5)
    assert [h.id for h in again][:3] == [h.id for h in hits][:3]
    for a, b in zip(again, hits, strict=True):
        assert a.rerank_score == pytest.approx(b.rerank_score, abs=0.05)


def test_token_slots_follow_deletes_and_copies(tmp_path, photos, lite, scorer_path):
    eng = Engine(tmp_path / "coll", embedder=lite, reranker=scorer_path)
    eng.index(photos, workers=0)
    cat_id = eng.search(image=photos / "cat_chelsea.png", k=1, rerank=False)[0].id
    (photos / "cat_chelsea.png").unlink()
    shutil.copy(photos / "raccoon.jpg", photos / "raccoon_copy.jpg")
    eng.index(photos, workers=0)
    cache = TokenCache.open_existing(tmp_path / "coll")
    assert cache.get(np.array([cat_id])) == [None]
    by_name = {
        h.path.rsplit("/", 1)[1]: h.id for h in eng.search(text="a raccoon", k=20, rerank=False)
    }
    a, b = cache.get(np.array([by_name["raccoon.jpg"], by_name["raccoon_copy.jpg"]]))
    assert a is not None and np.array_equal(a, b)


def test_image_to_text_rerank(tmp_path, photos, lite, scorer_path):
    eng = Engine(tmp_path / "coll", embedder=lite, reranker=scorer_path)
    eng.index(photos, workers=0)
    captions = [line.split("\t")[1] for line in (SAMPLES / "captions.txt").read_text().splitlines()]
    eng.add_texts(captions, source="captions")
    hits = eng.search_texts(image=photos / "coffee_cup.jpg", k=3)
    assert len(hits) == 3 and all(h.rerank_score is not None for h in hits)
    assert (
        eng.search_texts(image=photos / "coffee_cup.jpg", k=3, rerank=False)[0].rerank_score is None
    )


def test_evaluate_reports_rerank_gain_with_an_interval(tmp_path, photos, lite, scorer_path):
    from vtsearch.search.evaluate import evaluate

    eng = Engine(tmp_path / "coll", embedder=lite, reranker=scorer_path)
    eng.index(photos, workers=0)
    caps = {}
    for line in (SAMPLES / "captions.txt").read_text().splitlines():
        name, cap = line.split("\t")
        caps[name] = [cap]
    eng.add_texts([c[0] for c in caps.values()])
    rep = evaluate(eng, {n: photos / n for n in caps}, caps, rerank_k=5, latency_queries=3)
    t2i = rep.text_to_image
    assert rep.images == 19 and t2i.rerank is not None
    assert t2i.bi["R@1"] >= 40  # the default model gets most sample captions right
    lo, hi = t2i.r1_gain_ci
    assert lo <= t2i.rerank["R@1"] - t2i.bi["R@1"] <= hi
    assert t2i.ms_per_query_rerank > 0 and rep.image_to_text.rerank is not None
    # This scorer file has no query bank: the "prior only" ablation is the bi-encoder's order.
    assert t2i.prior_only == t2i.bi and t2i.scorer_gain_ci is not None


def test_query_bank_prior_is_subtracted_per_direction(tmp_path, photos, lite):
    torch.manual_seed(1)
    scorer = FusionScorer(FusionConfig())
    scorer.reducer.fit(torch.randn(600, 1280))
    # Banks of real sample vectors, so the priors differ visibly between candidates.
    caps = [ln.split("\t")[1] for ln in (SAMPLES / "captions.txt").read_text().splitlines()]
    text_bank = lite.encode_texts(caps).vectors.float()
    path = tmp_path / "fusion.safetensors"
    settings = {"mix": 0.05, "alpha": 0.8, "beta": 20.0}
    save_fusion(
        scorer,
        path,
        extra={"rerank_k": 10, "t2i": settings, "i2t": settings},
        tensors={"bank.texts": text_bank, "bank.images": text_bank},
    )
    eng = Engine(tmp_path / "coll", embedder=lite, reranker=str(path))
    eng.index(photos, workers=0)
    hits = eng.search(text="a cat", k=10)
    rows = Catalog.open(tmp_path / "coll").rows(h.id for h in hits)
    vecs = np.stack([np.frombuffer(rows[h.id].vector, dtype=np.float32) for h in hits])
    prior = QueryBankPrior(text_bank.half().float(), 20.0, 0.8).prior(vecs)
    assert np.ptp(prior) > 1e-3
    for h, p in zip(hits, prior, strict=True):
        assert h.score == pytest.approx(h.bi_score - float(p) + 0.05 * h.rerank_score, abs=1e-5)


def test_blip_itm_reranker_from_a_local_folder(tmp_path, photos, lite):
    from PIL import Image
    from tiny_models import save_tiny_blip

    from vtsearch.search.blip import BlipReranker

    folder = save_tiny_blip(tmp_path / "blip")
    eng = Engine(tmp_path / "coll", embedder=lite, reranker=str(folder))
    eng.index(photos, workers=0)
    assert TokenCache.open_existing(tmp_path / "coll") is None  # BLIP reads pixels, not tokens
    hits = eng.search(text="a cat", k=4, rerank_k=6)
    direct = BlipReranker(str(folder))
    for h in hits:
        logp = direct.score_images("a cat", [Image.open(h.path).convert("RGB")])[0]
        assert h.rerank_score == pytest.approx(float(logp), abs=1e-4)
        assert h.score == pytest.approx(h.bi_score + h.rerank_score, abs=1e-4)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    eng.add_texts(["a cat", "a cup of coffee", "a rocket"])
    texts = eng.search_texts(image=photos / "coffee_cup.jpg", k=3)
    assert all(t.rerank_score is not None and t.rerank_score <= 0 for t in texts)


def test_blip_hub_name_without_network_fails_with_the_fix(monkeypatch):
    from vtsearch.search.rerank import load_reranker

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match="--reranker DIR"):
        load_reranker("vtsearch-lite", "blip:Salesforce/blip-itm-base-coco")
