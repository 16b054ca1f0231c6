"""The fusion scorer: batch independence, masks, training end to end on generated pairs."""

import numpy as np
import torch

from vtsearch.models.fusion import FusionConfig, FusionScorer, load_fusion
from vtsearch.models.train_fusion import (
    Candidates,
    FusionData,
    rerank_recall,
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
    lens = np.full(len(caption_image), 5)
    ids = np.stack([rng.permutation(n_images)[:k] for _ in caption_image])
    for r, img in enumerate(caption_image):  # the true image sits at a random place in the list
        if img not in ids[r]:
            ids[r, rng.integers(k)] = img
    scores = rng.uniform(0.2, 0.3, size=ids.shape).astype(np.float32)
    return FusionData(regions, states, lens, caption_image), Candidates(ids, scores)


def test_training_runs_end_to_end_and_learns_the_planted_matches(tmp_path):
    data, cand = _synthetic(n_images=80)
    rows = np.arange(len(data.caption_image))
    train_rows, dev_rows = rows[rows % 4 != 0], rows[rows % 4 == 0]
    reducer = FusionScorer(TINY).reducer.state_dict()
    reducer["proj"] = torch.eye(24, 16)
    scorer, scale, metrics = train_scorer(
        data,
        cand,
        train_rows,
        cand,
        dev_rows,
        config=TINY,
        reducer_state=reducer,
        epochs=8,
        batch_size=8,
        lr=3e-3,
        init_scale=1.0,
    )
    assert metrics["rerank_r1"] > metrics["bi_r1"] + 30, metrics
    path = tmp_path / "fusion.safetensors"
    save_trained(scorer, scale, 8, path)
    loaded, extra = load_fusion(path)
    assert extra["rerank_k"] == 8 and abs(extra["mix"] - 1 / scale) < 1e-6
    again = rerank_recall(loaded, scale, data, cand, dev_rows)
    assert abs(again["rerank_r1"] - metrics["rerank_r1"]) <= 100 / len(dev_rows)  # fp16 weights
