"""The parts of zero-shot tagging: label lists, prompts, the keep rule and the calibration fit."""

from __future__ import annotations

import numpy as np
import pytest

from vtsearch.errors import ConfigError
from vtsearch.indexer.tagging import choose, prompts, read_labels
from vtsearch.models.calibration import TagCalibration
from vtsearch.training.tag_calibration import fit_platt, named


def test_labels_come_from_a_list_a_file_or_commas(tmp_path):
    f = tmp_path / "labels.txt"
    f.write_text("# animals\ncat\n  Dog  \n\ncat  # again\nsea   lion\n", encoding="utf-8")
    assert read_labels(f) == ["cat", "Dog", "sea lion"]
    assert read_labels("cat, dog,,CAT ,apple pie") == ["cat", "dog", "apple pie"]
    assert read_labels(["a", "b"]) == ["a", "b"]
    with pytest.raises(ConfigError, match="no labels"):
        read_labels(" , ")


def test_prompts_put_the_label_in_every_template_with_its_article():
    assert prompts("owl", ["a photo of a {}.", "the {}"]) == ["a photo of an owl.", "the owl"]
    assert prompts("cat")[0] == "a photo of a cat." and len(prompts("cat")) == 8


def test_labels_above_the_threshold_are_kept_else_the_top_k():
    cal = TagCalibration(slope=10.0, bias=-5.0, threshold=0.5)  # 0.5 at similarity 0.5
    scores = np.array([[0.9, 0.6, 0.1], [0.2, 0.3, 0.4], [0.55, 0.7, 0.8]])
    got = choose(scores, cal, 0.5, top_k=1, limit=2)
    assert [[j for j, _, _ in picks] for picks, _ in got] == [[0, 1], [2], [2, 1]]
    assert [fell for _, fell in got] == [False, True, False]
    assert got[0][0][0][2] == pytest.approx(1 / (1 + np.exp(-4.0)))
    rank_only = choose(scores, None, None, top_k=2, limit=5)
    assert [[j for j, _, c in picks if c is None] for picks, _ in rank_only] == [
        [0, 1],
        [2, 1],
        [2, 1],
    ]


def test_platt_scaling_recovers_a_known_curve():
    rng = np.random.default_rng(0)
    s = rng.uniform(-0.2, 0.8, 200_000)
    truth = rng.random(s.size) < 1 / (1 + np.exp(-(8.0 * s - 3.0)))
    slope, bias = fit_platt(s, truth)
    assert slope == pytest.approx(8.0, rel=0.05) and bias == pytest.approx(-3.0, rel=0.05)


def test_a_caption_names_a_label_in_the_singular_or_plural():
    assert named(["Two dogs run ."], "dog") and named(["Men at work"], "man")
    assert not named(["A doghouse"], "dog")
