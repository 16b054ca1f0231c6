"""The fusion scorer: batch independence, masks, training end to end on generated pairs."""

import numpy as np
import torch

from vtsearch.models.fusion import FusionConfig, FusionScorer, load_fusion
from vtsearch.models.train_fusion import (
    FusionData,
    list_recall,
    make_lists,
    save_trained,
    train_scorer,
)

TINY = FusionConfig(region_in=24, region_dim=16, d=32, heads=2, layers=1, dropout=0.0)


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


def _synthetic(seed=0, n_images=60, k=8):
    """Captions whose words are noisy copies of their image's regions; bi-encoder scores noise."""
    rng = np.random.default_rng(seed)
    regions = rng.standard_normal((n_images, 49, 16)).astype(np.float32)
    proj = rng.standard_normal((16, 384)).astype(np.float32)
    caption_image = np.repeat(np.arange(n_images), 2)
    picks = rng.integers(0, 49, size=(len(caption_image), 5))
    states = np.stack([regions[i][p] @ proj for i, p in zip(caption_image, picks, strict=True)])
    states = (states + 0.5 * rng.standard_normal(states.shape)).astype(np.float16)
    data = FusionData(regions, states, np.full(len(caption_image), 5), caption_image)
    captions = np.arange(len(caption_image))
    t2i = np.stack([rng.permutation(n_images)[:k] for _ in captions])
    for r, img in enumerate(caption_image):  # the true image sits at a random place in the list
        if img not in t2i[r]:
            t2i[r, rng.integers(k)] = img
    i2t = np.stack([rng.permutation(len(captions))[:k] for _ in range(n_images)])
    for img in range(n_images):
        if not (caption_image[i2t[img]] == img).any():
            i2t[img, rng.integers(k)] = 2 * img
    noise = lambda shape: rng.uniform(0.2, 0.3, size=shape).astype(np.float32)  # noqa: E731
    return data, {
        "t2i": (captions, t2i, noise(t2i.shape), np.zeros(n_images, np.float32)),
        "i2t": (np.arange(n_images), i2t, noise(i2t.shape), np.zeros(len(captions), np.float32)),
    }


def _split(data, raw, keep):
    out = {}
    for d, (queries, ids, bi, prior) in raw.items():
        rows = keep(queries)
        out[d] = make_lists(d, queries[rows], ids[rows], bi[rows], prior, data.caption_image, 8)
    return out


def test_training_runs_end_to_end_and_learns_the_planted_matches(tmp_path):
    data, raw = _synthetic(n_images=80)
    # Held-out queries (captions, images) whose content the scorer has seen in the other
    # direction or through another caption: this checks the plumbing learns, not generalisation.
    train = _split(data, raw, lambda q: q % 4 != 0)
    dev = _split(data, raw, lambda q: q % 4 == 0)
    reducer = FusionScorer(TINY).reducer.state_dict()
    reducer["proj"] = torch.eye(24, 16)
    scorer, mixer, metrics = train_scorer(
        data,
        train,
        dev,
        config=TINY,
        reducer_state=reducer,
        epochs=8,
        batch_size=8,
        lr=3e-3,
        init_scale=1.0,
    )
    # Chance is 12.5; image->text lists train alongside but are too few here to learn from.
    assert metrics["t2i_rerank_r1"] > metrics["t2i_bi_r1"] + 12, metrics
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
