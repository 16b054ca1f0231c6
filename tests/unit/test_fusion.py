"""The fusion scorer: batch independence, masks, folded heads, training end to end on generated
pairs."""

import math

import numpy as np
import pytest
import torch

from vtsearch.errors import ModelNotFoundError
from vtsearch.models.fusion import (
    FusionConfig,
    FusionScorer,
    attach_heads,
    content_words,
    load_fusion,
    save_fusion,
)
from vtsearch.models.lite import LiteConfig, LiteHeads
from vtsearch.training.fusion_scoring import FusionData, Mixer, list_recall, make_lists
from vtsearch.training.train_fusion import save_trained, train_scorer

TINY = FusionConfig(region_in=24, pca_dim=12, hidden=20, region_dim=16)


def test_a_pairs_score_does_not_depend_on_the_other_candidates():
    torch.manual_seed(0)
    scorer = FusionScorer(TINY).eval()
    text, mask = torch.randn(1, 6, 384), torch.ones(1, 6, dtype=torch.bool)
    regions = torch.randn(8, 49, 16)
    together = scorer.score(text, mask, regions)
    alone = torch.stack([scorer.score(text, mask, regions[i : i + 1])[0] for i in range(8)])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)
    shuffled = scorer.score(text, mask, regions.flip(0))
    torch.testing.assert_close(shuffled.flip(0), together, atol=1e-5, rtol=1e-5)


def test_padding_tokens_are_ignored():
    torch.manual_seed(0)
    scorer = FusionScorer(TINY).eval()
    text, regions = torch.randn(1, 4, 384), torch.randn(1, 49, 16)
    short = scorer.score(text, torch.ones(1, 4, dtype=torch.bool), regions)
    padded_text = torch.cat([text, torch.randn(1, 3, 384) * 100], dim=1)
    padded_mask = torch.tensor([[True] * 4 + [False] * 3])
    torch.testing.assert_close(scorer.score(padded_text, padded_mask, regions), short)


def test_explain_adds_up_to_the_score_forward_gives():
    """``explain`` writes out what ``forward`` computes: per token, a softmax over the regions
    (rows sum to 1), pooling weights over the content words (sum to 1, none on [CLS], [SEP] or
    padding), and gain * sum(weight * match) is the very logit ``score`` returns. Trained
    parameters (sharpness, position bias, word weights, gain) are set away from their starting
    values so a term left out of either would show."""
    torch.manual_seed(0)
    scorer = FusionScorer(TINY).eval()
    with torch.no_grad():
        scorer.row.copy_(torch.randn(7))
        scorer.col.copy_(torch.randn(7))
        scorer.word_weight.weight.normal_()
        scorer.log_gain.fill_(0.7)
        scorer.log_sharpness.fill_(1.3)
    text, mask = torch.randn(1, 7, 384), torch.ones(1, 7, dtype=torch.bool)
    mask[0, 5:] = False  # "[CLS] w w w [SEP] [PAD] [PAD]"
    for _ in range(3):
        regions = torch.randn(1, 49, 16)
        ex = scorer.explain(text, mask, regions)
        assert ex.attention.shape == (7, 49)
        torch.testing.assert_close(ex.attention.sum(-1), torch.ones(7))
        assert ex.weights.sum().item() == pytest.approx(1.0, abs=1e-5)
        assert ex.weights[0] == 0 and (ex.weights[4:] == 0).all() and (ex.weights[1:4] > 0).all()
        want = scorer.score(text, mask, regions).item()
        assert ex.score == pytest.approx(want, abs=1e-4)
        assert ex.gain * float((ex.weights * ex.match).sum()) == pytest.approx(want, abs=1e-4)
        assert ex.gain == pytest.approx(math.exp(0.7), rel=1e-5)


def test_content_words_drop_cls_and_sep_but_never_everything():
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    assert content_words(mask).int().tolist() == [[0, 1, 1, 0, 0], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0]]


def test_attached_heads_equal_the_bi_encoders_own_on_reconstructed_regions():
    """The folded maps give exactly what vtsearch-lite's head member computes on the regions the
    PCA reconstructs, and on the (normalised) word states."""
    torch.manual_seed(0)
    heads = LiteHeads(LiteConfig(members=2, out_dim=16, hidden=20, alpha=1.0)).eval()
    for name in ("img_mean", "img_std", "txt_mean", "txt_std"):
        getattr(heads, name).uniform_(0.5, 1.5)
    scorer = FusionScorer(FusionConfig(region_in=1280, pca_dim=12, hidden=20, region_dim=16))
    scorer.reducer.fit(torch.randn(100, 1280))
    attach_heads(scorer, heads, member=1)
    raw = torch.randn(3, 1280)
    w, b = scorer.reducer.pca.inverse()
    rebuilt = scorer.reducer.pca(raw) @ w + b
    expect = heads.head_images(rebuilt, member=1)
    torch.testing.assert_close(scorer.reducer(raw), expect, atol=1e-4, rtol=1e-4)
    states = torch.randn(2, 5, 384)
    expect = heads.head_texts(torch.nn.functional.normalize(states, dim=-1), member=1)
    torch.testing.assert_close(scorer.text_words(states), expect, atol=1e-4, rtol=1e-4)


def test_weights_of_an_older_scorer_are_refused_with_a_hint(tmp_path):
    path = tmp_path / "old.safetensors"
    save_fusion(FusionScorer(TINY), path)
    from safetensors.torch import load_file, save_file

    old = '{"text_dim": 384, "region_in": 1280, "region_dim": 256, "d": 128, "heads": 4}'
    save_file(load_file(path), str(path), metadata={"config": old, "extra": "{}"})
    with pytest.raises(ModelNotFoundError, match=r"older vtsearch.*vtsearch train fusion"):
        load_fusion(path)


def _synthetic(seed=0, n_images=60, k=8):
    """Captions of three content words (noisy copies of regions of their image) and two filler
    words (random directions, with MiniLM states that share one direction): the untrained
    scorer's equal word weights let the fillers drown the match; bi-encoder scores are noise."""
    rng = np.random.default_rng(seed)
    unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)  # noqa: E731
    regions = unit(rng.standard_normal((n_images, 49, 16))).astype(np.float32)
    caption_image = np.repeat(np.arange(n_images), 2)
    n = len(caption_image)
    picks = rng.integers(0, 49, size=(n, 3))
    content = np.stack([regions[i][p] for i, p in zip(caption_image, picks, strict=True)])
    content = unit(content + 0.3 * rng.standard_normal(content.shape))
    filler = unit(rng.standard_normal((n, 2, 16)))
    # Token 0 and 6 stand for [CLS] and [SEP]; the scorer leaves them out.
    words = np.concatenate([filler[:, :1], filler, content, filler[:, :1]], axis=1)
    states = rng.standard_normal((n, 7, 384))
    states[:, 1:3] += 3.0 * rng.standard_normal(384)  # what filler words have in common
    data = FusionData(
        regions, states.astype(np.float16), np.full(n, 7), caption_image, words.astype(np.float16)
    )
    captions = np.arange(n)
    t2i = np.stack([rng.permutation(n_images)[:k] for _ in captions])
    for r, img in enumerate(caption_image):  # the true image sits at a random place in the list
        if img not in t2i[r]:
            t2i[r, rng.integers(k)] = img
    i2t = np.stack([rng.permutation(n)[:k] for _ in range(n_images)])
    for img in range(n_images):
        if not (caption_image[i2t[img]] == img).any():
            i2t[img, rng.integers(k)] = 2 * img
    noise = lambda shape: rng.uniform(0.2, 0.3, size=shape).astype(np.float32)  # noqa: E731
    return data, {
        "t2i": (captions, t2i, noise(t2i.shape), np.zeros(n_images, np.float32)),
        "i2t": (np.arange(n_images), i2t, noise(i2t.shape), np.zeros(n, np.float32)),
    }


def _split(data, raw, keep):
    out = {}
    for d, (queries, ids, bi, prior) in raw.items():
        rows = keep(queries)
        out[d] = make_lists(d, queries[rows], ids[rows], bi[rows], prior, data.caption_image, 8)
    return out


def test_training_runs_end_to_end_and_learns_the_planted_matches(tmp_path):
    data, raw = _synthetic(n_images=80)
    train = _split(data, raw, lambda q: q % 4 != 0)
    dev = _split(data, raw, lambda q: q % 4 == 0)
    scorer = FusionScorer(TINY)
    with torch.no_grad():
        scorer.log_gain.fill_(math.log(0.05))
    before = {d: list_recall(scorer, Mixer(1.0, 0.0), data, dev[d], d) for d in dev}
    scorer, mixer, metrics = train_scorer(
        data,
        train,
        dev,
        scorer=scorer,
        epochs=8,
        batch_size=8,
        lr=3e-2,
        init_scale=1.0,
        init_gain=0.05,
        select_last=True,
    )
    # Chance is 12.5. Learned: a gain that lets the scorer outweigh the noise, and word weights
    # that silence the fillers.
    assert metrics["t2i_rerank_r1"] > metrics["t2i_bi_r1"] + 12, metrics
    assert metrics["t2i_rerank_r1"] > before["t2i"]["rerank_r1"] + 12, (before, metrics)
    assert scorer.log_gain.exp() > 0.05
    w = scorer.word_weight(torch.from_numpy(data.states[:4].astype(np.float32))).squeeze(-1)
    assert (w[:, 1:3].mean(1) < w[:, 3:6].mean(1)).all()
    assert {"i2t_bi_r1", "i2t_rerank_r1"} <= set(metrics)
    path = tmp_path / "fusion.safetensors"
    bank = torch.nn.functional.normalize(torch.randn(32, 8), dim=1)
    save_trained(scorer, mixer, 8, path, {"bank.texts": bank, "bank.images": bank})
    loaded, extra, tensors = load_fusion(path)
    assert extra["rerank_k"] == 8 and set(tensors) == {"bank.texts", "bank.images"}
    assert abs(extra["t2i"]["mix"] - mixer.settings()["t2i"]["mix"]) < 1e-6
    again = list_recall(loaded, mixer, data, dev["t2i"], "t2i")
    n_dev = len(dev["t2i"].queries)
    assert abs(again["rerank_r1"] - metrics["t2i_rerank_r1"]) <= 100 / n_dev  # fp16 weights


def test_lists_keep_a_late_right_answer_for_training_and_drop_hopeless_queries():
    caption_image = np.array([0, 0, 1, 1, 2, 2])
    ids = np.array([[1, 2, 0], [1, 2, 2]])  # caption 0's image is third; caption 1's is absent
    bi = np.array([[0.9, 0.8, 0.7], [0.9, 0.8, 0.7]], dtype=np.float32)
    prior = np.array([0.1, 0.2, 0.3], dtype=np.float32)
    lists = make_lists("t2i", np.array([0, 1]), ids, bi, prior, caption_image, 2, True)
    assert lists.queries.tolist() == [0]
    assert lists.ids.tolist() == [[1, 0]] and lists.bi[0, 1] == np.float32(0.7)
    assert lists.positive.tolist() == [[False, True]]
    assert lists.prior.tolist() == [[np.float32(0.2), np.float32(0.1)]]
