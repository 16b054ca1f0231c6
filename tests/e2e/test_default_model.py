"""The shipped default model finds the right sample photo for plain queries, offline."""

import os

import pytest
from conftest import SAMPLES

from vtsearch import Engine


@pytest.fixture(scope="module")
def sample_engine(tmp_path_factory, lite):
    eng = Engine(tmp_path_factory.mktemp("samples") / "coll", embedder=lite)
    report = eng.index(SAMPLES, workers=0)
    assert report.failed == [] and report.embedded == len(list(SAMPLES.glob("*.*"))) - 2
    return eng


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("a cat", "cat_chelsea.png"),
        ("a cup of coffee", "coffee_cup.jpg"),
        ("a rocket on the launch pad", "rocket_launch.jpg"),
        ("a raccoon", "raccoon.jpg"),
        ("a flower", "dahlia_flower.jpg"),
        ("a pagoda", "china_pagoda.jpg"),
        ("a man with a camera", "photographer_tripod.png"),
        ("a woman in uniform", "grace_hopper.jpg"),
    ],
)
def test_plain_queries_find_their_photo(sample_engine, query, expected):
    top = sample_engine.search(text=query, k=3)
    assert os.path.basename(top[0].path) == expected, [os.path.basename(r.path) for r in top]


def test_image_query_finds_itself_first(sample_engine):
    hit = sample_engine.search(image=SAMPLES / "coffee_cup.jpg", k=2)
    assert hit[0].path.endswith("coffee_cup.jpg") and hit[0].score > hit[1].score


def test_shipped_reranker_keeps_captioned_photos_first(sample_engine):
    """Each sample photo's own caption, re-ranked by the shipped fusion scorer and prior: nearly
    as many photos come first as with the bi-encoder alone (15 of 19; the misses are textures, a
    galaxy field and a retina, far from Flickr8k). The re-ranker may lose one of those: the grass
    texture sits close to many captions, so the prior discounts it, and a scorer trained on
    Flickr8k photos has never seen a texture."""
    lines = [ln.split("\t") for ln in (SAMPLES / "captions.txt").read_text().splitlines()]
    firsts = {True: 0, False: 0}
    for name, caption in lines:
        for rerank in (True, False):
            hits = sample_engine.search(text=caption, k=3, rerank=rerank)
            assert (hits[0].rerank_score is not None) == rerank and (
                hits[0].prior is not None
            ) == rerank
            firsts[rerank] += os.path.basename(hits[0].path) == name
    assert firsts[True] >= max(firsts[False] - 1, 14), firsts


def test_shipped_image_to_text_ranks_by_the_prior_alone(sample_engine):
    """The shipped weights switch the scorer off for image->text (its dev gain was not
    significant): texts come ordered by bi-encoder score minus their query-bank prior, read from
    their stored vectors, and the sample photo's own caption comes first."""
    lines = [ln.split("\t") for ln in (SAMPLES / "captions.txt").read_text().splitlines()]
    sample_engine.add_texts([c for _, c in lines], source="captions")
    own = dict(lines)["coffee_cup.jpg"]
    hits = sample_engine.search_texts(image=SAMPLES / "coffee_cup.jpg", k=5)
    assert hits[0].text == own
    assert all(h.rerank_score is None and h.prior is not None for h in hits)
    scores = [h.bi_score - h.prior for h in hits]
    assert scores == sorted(scores, reverse=True)
    assert len({round(h.prior, 6) for h in hits}) > 1  # a real prior, not a constant
