"""Storage under crashes, property-based: batches that die before their commit, FAISS files saved
at any point, readers that open whatever is on disk. After every step the catalog, the FAISS
index a reader rebuilds, and the token cache (once reconciled) must agree with a plain model."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from vtsearch.indexer.pipeline import TokenSink, catch_up, reconcile_tokens
from vtsearch.storage.catalog import Catalog, NewImage
from vtsearch.storage.check import check_collection
from vtsearch.storage.tokens import TokenCache
from vtsearch.storage.vectors import VectorIndex, index_ids

DIM, N_TOK, C_TOK = 8, 2, 4


class Killed(Exception):
    """Stands for a SIGKILL between the token write and the catalog commit."""


def vec(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def toks(seed: int) -> np.ndarray:
    return np.random.default_rng(seed + 7).standard_normal((N_TOK, C_TOK)).astype(np.float32) + 3


op = st.one_of(
    # write a file's row: (kind, path number, content seed, ok?, killed before commit?)
    st.tuples(
        st.just("write"), st.integers(0, 6), st.integers(0, 50), st.booleans(), st.booleans()
    ),
    st.tuples(st.just("delete"), st.integers(0, 6), st.just(0), st.just(True), st.booleans()),
    st.tuples(st.just("save"), st.just(0), st.just(0), st.just(True), st.just(False)),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(op, max_size=25))
def test_catalog_index_and_tokens_agree_after_any_sequence_of_crashes(ops):
    folder = Path(tempfile.mkdtemp())
    try:
        _run(folder, ops)
    finally:
        shutil.rmtree(folder)


def _run(folder: Path, ops) -> None:
    catalog = Catalog.open(folder)
    catalog.bind_model("m", DIM)
    cache = TokenCache(folder, N_TOK, C_TOK)
    writer = VectorIndex(DIM)  # the indexer's in-memory index, saved from time to time
    model: dict[str, int] = {}  # path -> content seed of committed, indexed files
    for kind, p, seed, ok, killed in ops:
        path = f"/p/{p}.jpg"
        known = catalog.records()
        if kind == "write":
            rec = known.get(path)
            item = NewImage(path, 1, seed, str(seed), replace_id=rec.id if rec else None)
            if ok:
                item.vector = vec(seed)
            else:
                item.error = "broken"
            region = toks(seed)[None] if ok else None
            hook = TokenSink(lambda t: t, cache).writer(region)

            def before_commit(rows, hook=hook, killed=killed):
                hook(rows)
                if killed:
                    raise Killed

            try:
                catalog.write_batch([item], before_commit)
            except Killed:
                # The process is gone: whatever runs next starts from the disk.
                writer = VectorIndex.load(folder, DIM)
                cache = TokenCache(folder, N_TOK, C_TOK)
                continue
            if ok:
                model[path] = seed
            else:
                model.pop(path, None)
        elif kind == "delete":
            if path not in known:
                continue
            catalog.remove([known[path].id])
            if killed:  # killed before the token records of the removed row were dropped
                writer = VectorIndex.load(folder, DIM)
                cache = TokenCache(folder, N_TOK, C_TOK)
                model.pop(path, None)
                continue
            cache.remove(np.array([known[path].id]))
            model.pop(path, None)
        else:
            catch_up(catalog, writer)
            writer.save(folder)
        catch_up(catalog, writer)
        _assert_agree(folder, catalog, model)
    # A new run reconciles the token cache: then everything agrees, with nothing to repair.
    reconcile_tokens(catalog, TokenCache(folder, N_TOK, C_TOK))
    report = check_collection(folder, catalog)
    assert [str(p) for p in report.problems if p.part != "vectors"] == []
    _assert_agree(folder, catalog, model, tokens_exact=True)
    catalog.close()


def _assert_agree(folder: Path, catalog: Catalog, model: dict[str, int], tokens_exact=False):
    rows = {p: r for p, r in catalog.records().items() if r.status == "indexed"}
    assert {p: int(r.sha256) for p, r in rows.items()} == model
    # A reader opening the collection now sees exactly the committed vectors, once each.
    reader = VectorIndex.load(folder, DIM)
    reader.sync(catalog)
    ids = index_ids(reader)
    assert sorted(ids.tolist()) == sorted(r.id for r in rows.values())
    for p, r in rows.items():
        assert np.allclose(reader.reconstruct(r.id), vec(model[p]), atol=1e-6)
    # Every committed row has its own tokens; orphans may exist until the next reconcile.
    cache = TokenCache.open_existing(folder)
    got = cache.get(np.array([r.id for r in rows.values()], dtype=np.int64))
    for (p, _), t in zip(rows.items(), got, strict=True):
        assert t is not None and np.allclose(t, toks(model[p]), atol=0.05)
    if tokens_exact:
        assert set(cache.filled().tolist()) == {r.id for r in rows.values()}
