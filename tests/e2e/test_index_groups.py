"""Several batches share one commit: each row still gets its own image's vector and region
tokens, with failed files in between, whatever the batch and commit sizes, decoded in threads or
in the indexing thread."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from conftest import SAMPLES, save_random_scorer

from vtsearch import Engine
from vtsearch.images import DECODE_TARGET, load_image
from vtsearch.storage.catalog import Catalog
from vtsearch.storage.tokens import TokenCache


@pytest.fixture(scope="module")
def scorer_path(tmp_path_factory):
    return save_random_scorer(tmp_path_factory.mktemp("fusion"), rerank_k=10, fit_rows=600)


@pytest.mark.parametrize(("commit", "workers"), [("32", 2), ("3", 0), ("1", 1)])
def test_grouped_commits_give_each_row_its_own_vector_and_tokens(
    tmp_path, lite, scorer_path, monkeypatch, commit, workers
):
    monkeypatch.setenv("VTSEARCH_COMMIT_IMAGES", commit)
    photos = tmp_path / "photos"
    shutil.copytree(SAMPLES, photos)
    (photos / "broken_a.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 64)
    (photos / "broken_m.png").write_bytes(b"not an image at all")
    seen: list[tuple[int, int]] = []
    eng = Engine(tmp_path / "coll", embedder=lite, reranker=scorer_path)
    report = eng.index(
        photos, batch_size=2, workers=workers, progress=lambda d, t: seen.append((d, t))
    )
    assert sorted(p.rsplit("/", 1)[-1] for p, _ in report.failed) == [
        "broken_a.jpg",
        "broken_m.png",
    ]
    total = report.embedded + len(report.failed)
    assert seen[0] == (0, total) and seen[-1] == (total, total)
    done = [d for d, _ in seen]
    assert done == sorted(done)
    if commit == "1":  # a commit after every batch of two
        assert len(seen) == 1 + -(-total // 2)

    catalog = Catalog.open(tmp_path / "coll")
    rows = [r for r in catalog.rows(range(1, catalog.max_image_id() + 1)).values()]
    good = sorted((r for r in rows if r.status == "indexed"), key=lambda r: r.path)
    assert len(good) == report.embedded == 19  # the sample photos
    pixels = torch.stack([lite.transform(load_image(r.path, DECODE_TARGET).image) for r in good])
    with torch.inference_mode():
        emb = lite.encode_images(pixels)
    fresh_vectors = emb.vectors.float().numpy()
    stored = np.stack([np.frombuffer(r.vector, dtype=np.float32) for r in good])
    np.testing.assert_allclose(stored, fresh_vectors, atol=1e-4)

    fresh_tokens = eng.reranker().reduce(emb.tokens)
    cached = TokenCache.open_existing(tmp_path / "coll").get(np.array([r.id for r in good]))
    # Stored as int8 with a scale: each row's tokens are nearest to its own image's.
    dist = np.array([[np.abs(c - f).mean() for f in fresh_tokens] for c in cached])
    assert (dist.argmin(axis=1) == np.arange(len(good))).all()
    assert dist.diagonal().max() < 0.01
    catalog.close()
