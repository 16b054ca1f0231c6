"""Image -> text search over an IVF-PQ text index: the hits carry exact scores, re-scored on the
catalog's float vectors, in the order of those scores."""

from __future__ import annotations

import numpy as np
import pytest

from vtsearch import Engine
from vtsearch.collection import TEXTS
from vtsearch.search.query import encode_query
from vtsearch.storage.catalog import Catalog
from vtsearch.storage.index_kinds import IVFPQ_MIN
from vtsearch.storage.rebuild import optimize
from vtsearch.storage.vectors import VectorIndex


def test_ivfpq_text_hits_are_rescored_exactly(tmp_path, photos, tiny_clip):
    folder = tmp_path / "coll"
    eng = Engine(folder, model=tiny_clip)
    eng.index(photos, workers=0)
    colours = ("red", "green", "blue", "yellow", "black", "white", "pink", "grey", "brown")
    things = ("dog", "cat", "car", "tree", "house", "boat", "bird", "horse", "chair", "cup")
    texts = [f"{colours[i % 9]} {things[(i // 9) % 10]} number {i}" for i in range(IVFPQ_MIN + 500)]
    eng.add_texts(texts)
    eng.close()

    catalog = Catalog.open(folder)
    (report,) = [
        r for r in optimize(folder, catalog, kind="ivfpq", names=(TEXTS,)) if r.name == TEXTS
    ]
    assert report.rebuilt and report.after.kind == "ivfpq"
    dim = int(catalog.get_meta("dim"))
    assert VectorIndex.load(folder, dim, name=TEXTS).kind == "ivfpq"
    stored = catalog.texts(range(1, len(texts) + 1), vectors=True)
    catalog.close()

    eng = Engine(folder, model=tiny_clip)
    hits = eng.search_texts(image=photos / "img0.png", k=10, rerank=False)
    assert len(hits) == 10
    vectors = np.stack([r.vector for r in stored.values()])
    ids = np.array(list(stored))
    q = encode_query(eng._parts.bound(create=False)[1], None, photos / "img0.png").vector
    exact = vectors @ q
    for h in hits:
        assert h.score == pytest.approx(float(exact[ids == h.id][0]), abs=1e-5)
        assert h.text == stored[h.id].text
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    # Re-scoring 4 x k candidates finds most of the exact top 10.
    best = set(ids[np.argsort(-exact)[:10]].tolist())
    assert len(best & {h.id for h in hits}) >= 7
