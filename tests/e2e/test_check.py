"""`vtsearch check` finds every way the FAISS file and the token cache can disagree with the
catalog, `--repair` fixes what is derivable, and then the check passes."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import make_photo, save_random_scorer

from vtsearch import Engine
from vtsearch.cli import main
from vtsearch.errors import IndexLockedError
from vtsearch.storage.tokens import TokenCache


@pytest.fixture(scope="module")
def scorer_path(tmp_path_factory):
    return save_random_scorer(tmp_path_factory.mktemp("fusion"), rerank_k=5)


@pytest.fixture
def coll(tmp_path, lite, scorer_path):
    photos = tmp_path / "photos"
    for i in range(8):
        make_photo(photos / f"p{i}.png", seed=i)
    eng = Engine(tmp_path / "coll", embedder=lite, reranker=scorer_path)
    eng.index(photos, workers=0)
    return eng, photos


def ids_of(db) -> list[int]:
    with sqlite3.connect(db / "catalog.db") as con:
        return [r[0] for r in con.execute("select id from images where status='indexed'")]


def cli(db, *args):
    return CliRunner().invoke(main, ["--db", str(db), "check", *args])


def test_a_fresh_collection_passes(coll):
    eng, _ = coll
    report = eng.check()
    assert report.ok and report.problems == []
    assert (report.indexed, report.vectors, report.tokens) == (8, 8, 8)
    r = cli(eng.path)
    assert r.exit_code == 0 and r.output.strip().endswith("ok")


@pytest.mark.parametrize("damage", ["delete", "garbage", "ahead", "wrong_vectors"])
def test_faiss_file_damage_is_found_and_rebuilt(coll, damage, scorer_path):
    eng, _ = coll
    faiss_file, meta = eng.path / "vectors.faiss", eng.path / "vectors.json"
    if damage == "delete":
        faiss_file.unlink()
    elif damage == "garbage":
        faiss_file.write_bytes(b"\x00not a faiss index" * 50)
    elif damage == "ahead":
        meta.write_text(json.dumps({**json.loads(meta.read_text()), "seq": 10**6}))
    else:  # an index whose vectors are not the catalog's (saved at the catalog's seq)
        from vtsearch.storage.vectors import VectorIndex

        vi = VectorIndex.load(eng.path, eng._parts.bound(create=False)[1].dim)
        ids = ids_of(eng.path)
        rng = np.random.default_rng(0)
        v = rng.standard_normal((2, vi.dim)).astype(np.float32)
        vi.add(np.array(ids[:2]), v / np.linalg.norm(v, axis=1, keepdims=True))
        vi.add(np.array([99_999]), v[:1])
        vi.save(eng.path)

    # Queries keep working on a damaged file: it is only a cache of the catalog.
    assert Engine(eng.path, reranker="none").search(text="a photo", k=8)

    r = cli(eng.path)
    assert r.exit_code == 1 and "problem: vectors:" in r.output, r.output
    report = eng.check(repair=True)
    assert report.problems and report.ok  # found, and every problem repaired
    again = cli(eng.path)
    assert again.exit_code == 0 and again.output.strip().endswith("ok"), again.output
    hits = Engine(eng.path, reranker="none").search(image=eng.path.parent / "photos" / "p3.png")
    assert hits[0].path.endswith("p3.png") and hits[0].score == pytest.approx(1.0, abs=1e-4)


def test_token_damage_is_found_repaired_and_reextracted(coll, lite, scorer_path):
    eng, photos = coll
    ids = ids_of(eng.path)
    cache = TokenCache.open_existing(eng.path)
    cache.remove(np.array(ids[:2]))  # two rows lose their tokens
    orphan = np.random.default_rng(0).standard_normal((1, cache.n_tokens, cache.dim))
    cache.put(np.array([ids[-1] + 50]), orphan.astype(np.float32))  # a record with no row

    report = eng.check()
    assert not report.ok
    by_what = {p.what.split(" ", 1)[1]: p.ids for p in report.problems if p.part == "tokens"}
    assert by_what == {
        "token records belong to no indexed row": [ids[-1] + 50],
        "indexed rows have no region tokens (re-ranking decodes them again)": ids[:2],
    }

    r = cli(eng.path, "--repair")
    assert r.exit_code == 0 and "repaired" in r.output, r.output
    ok = cli(eng.path, "--json")
    assert ok.exit_code == 0 and json.loads(ok.output)["ok"]
    assert "queued" in " ".join(json.loads(ok.output)["notes"])

    # The next index run re-extracts exactly the two rows that lost their tokens.
    again = Engine(eng.path, embedder=lite, reranker=scorer_path).index(photos, workers=0)
    assert (again.embedded, again.unchanged) == (2, 6)
    final = eng.check()
    assert final.ok and final.problems == [] and final.notes == [] and final.tokens == 8


def test_a_damaged_catalog_vector_is_queued_for_reembedding(coll, lite, scorer_path):
    eng, photos = coll
    victim = ids_of(eng.path)[3]
    with sqlite3.connect(eng.path / "catalog.db") as con:
        con.execute("update images set vector = x'00ff' where id = ?", (victim,))
    report = eng.check(repair=True)
    assert report.problems[0].part == "catalog" and victim in report.problems[0].ids
    assert report.ok
    assert eng.status().counts == {"indexed": 7, "failed": 1, "texts": 0}
    again = Engine(eng.path, embedder=lite, reranker=scorer_path).index(photos, workers=0)
    assert again.embedded == 1
    assert eng.check().ok and eng.status().indexed == 8


def test_check_waits_for_no_indexer(coll):
    eng, _ = coll
    with eng._parts.write_lock():
        with pytest.raises(IndexLockedError, match="another vtsearch process is writing"):
            Engine(eng.path).check()
        r = cli(eng.path)
        assert r.exit_code == 5 and "another vtsearch process is writing" in r.output
