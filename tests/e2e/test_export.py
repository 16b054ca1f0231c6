"""`vtsearch export`: a collection's rows, metadata and vectors, read back by pyarrow and numpy."""

import json
import os
import sqlite3
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from conftest import SAMPLES, make_photo

from vtsearch import Engine
from vtsearch.cli import main
from vtsearch.storage import export as export_module


@pytest.fixture(scope="module")
def samples_db(tmp_path_factory, tiny_clip) -> Path:
    """The sample photos indexed with the tiny CLIP model (shared: the tests only read it)."""
    db = tmp_path_factory.mktemp("export") / "coll"
    with Engine(db, model=tiny_clip) as eng:
        assert eng.index(SAMPLES, workers=0).failed == []
    return db


def _catalog(db: Path, status: str = "indexed") -> list[dict]:
    """The catalog's rows in id order, as stored."""
    with sqlite3.connect(db / "catalog.db") as con:
        con.row_factory = sqlite3.Row
        rows = con.execute("select * from images where status = ? order by id", (status,))
        return [dict(r) for r in rows]


def test_parquet_round_trips_ids_paths_metadata_and_vectors(samples_db, tmp_path, tiny_clip):
    out = tmp_path / "all.parquet"
    rep = Engine(samples_db).export(out)
    want = _catalog(samples_db)
    assert rep.rows == len(want) > 10 and rep.format == "parquet"
    assert not list(tmp_path.glob(".*partial"))  # the temporary file became the export

    table = pq.read_table(out)
    dim = len(want[0]["vector"]) // 4
    assert str(table.schema.field("vector").type) == f"fixed_size_list<element: float>[{dim}]"
    info = json.loads(table.schema.metadata[b"vtsearch"])
    assert info["model_id"] == tiny_clip and info["dim"] == dim and info["layout"] == 1
    got = table.to_pylist()
    assert [r["id"] for r in got] == [r["id"] for r in want]
    assert [r["path"] for r in got] == [r["path"] for r in want]
    assert all(r["path_bytes"] is None for r in got)  # every sample name is UTF-8
    vectors = np.array([r["vector"] for r in got], dtype=np.float32)
    stored = np.stack([np.frombuffer(r["vector"], dtype=np.float32) for r in want])
    assert np.allclose(vectors, stored)
    for g, w in zip(got, want, strict=True):
        assert g["root"] == str(SAMPLES.resolve())
        assert (g["size"], g["width"], g["height"]) == (w["size"], w["width"], w["height"])
        assert (g["format"], g["sha256"], g["status"]) == (w["format"], w["sha256"], "indexed")
        assert g["mtime"] == datetime.fromtimestamp(w["mtime_ns"] // 1000 / 1e6, timezone.utc)
        assert g["tags"] == [] and g["error"] is None
    assert {r["format"] for r in got} >= {"JPEG", "PNG"}


def test_npy_layout_round_trips(samples_db, tmp_path):
    out = tmp_path / "npy"
    rep = Engine(samples_db).export(out, "npy")
    assert sorted(p.name for p in out.iterdir()) == ["ids.npy", "meta.parquet", "vectors.npy"]
    want = _catalog(samples_db)
    ids, vectors = np.load(out / "ids.npy"), np.load(out / "vectors.npy", mmap_mode="r")
    assert rep.rows == len(ids) == len(want) and ids.dtype == np.int64
    assert vectors.dtype == np.float32 and vectors.shape == (len(want), len(want[0]["vector"]) // 4)
    assert ids.tolist() == [r["id"] for r in want]
    stored = np.stack([np.frombuffer(r["vector"], dtype=np.float32) for r in want])
    assert np.allclose(vectors, stored)
    meta = pq.read_table(out / "meta.parquet")
    assert "vector" not in meta.column_names
    assert meta.column("id").to_pylist() == ids.tolist()
    assert meta.column("sha256").to_pylist() == [r["sha256"] for r in want]

    # An existing folder with something in it is never overwritten; an empty one is filled.
    with pytest.raises(Exception, match="exists"):
        Engine(samples_db).export(out, "npy")
    (tmp_path / "empty").mkdir()
    assert Engine(samples_db).export(tmp_path / "empty", "npy").rows == len(want)


def test_a_name_that_is_not_utf8_survives_in_path_bytes(tmp_path, photos, tiny_clip):
    odd = os.fsencode(str(photos)) + b"/caf\xe9.png"
    make_photo(Path(os.fsdecode(odd)), seed=7)
    db = tmp_path / "coll"
    eng = Engine(db, model=tiny_clip)
    assert eng.index(photos, workers=0).embedded == 8
    rows = pq.read_table(eng.export(tmp_path / "x.parquet").path).to_pylist()
    named = [r for r in rows if r["path_bytes"] is not None]
    assert len(named) == 1 and named[0]["path_bytes"] == odd
    assert named[0]["path"].endswith("caf\\xe9.png")  # readable text, odd byte escaped
    assert os.path.exists(named[0]["path_bytes"])


def test_failed_files_only_when_asked_and_a_snapshot_while_the_catalog_changes(
    tmp_path, photos, tiny_clip, monkeypatch
):
    (photos / "broken.jpg").write_bytes(b"not a jpeg at all")
    db = tmp_path / "coll"
    eng = Engine(db, model=tiny_clip)
    eng.index(photos, workers=0)
    indexed = [r["id"] for r in _catalog(db)]
    assert len(indexed) == 7

    rows = pq.read_table(eng.export(tmp_path / "a.parquet").path).to_pylist()
    assert [r["id"] for r in rows] == indexed
    every = pq.read_table(eng.export(tmp_path / "b.parquet", include_failed=True).path)
    failed = [r for r in every.to_pylist() if r["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["path"].endswith("broken.jpg")
    assert failed[0]["vector"] is None and failed[0]["error"]
    eng.export(tmp_path / "c", "npy", include_failed=True)
    vectors, ids = np.load(tmp_path / "c" / "vectors.npy"), np.load(tmp_path / "c" / "ids.npy")
    assert np.isnan(vectors[ids.tolist().index(failed[0]["id"])]).all()

    # Chunks of two rows, and an indexer that removes the last row after the first chunk: the
    # export still shows the collection as it was when it started.
    monkeypatch.setattr(export_module, "MIN_CHUNK_ROWS", 2)
    monkeypatch.setattr(export_module, "CHUNK_BYTES", 1)
    chunks = export_module._chunks

    def meanwhile(con, dim, include_failed):
        for n, chunk in enumerate(chunks(con, dim, include_failed)):
            if n == 0:
                with sqlite3.connect(db / "catalog.db") as other:
                    other.execute("delete from images where id = ?", (indexed[-1],))
            yield chunk

    monkeypatch.setattr(export_module, "_chunks", meanwhile)
    out = Path(eng.export(tmp_path / "d.parquet").path)
    assert pq.ParquetFile(out).num_row_groups == 4
    assert pq.read_table(out).column("id").to_pylist() == indexed
    assert len(_catalog(db)) == 6  # the row did go


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_cli_exports_and_errors_cleanly(samples_db, tmp_path):
    r = run("--db", samples_db, "export", tmp_path / "all.parquet")
    n = len(_catalog(samples_db))
    assert r.exit_code == 0 and r.output.startswith(f"exported {n} images to "), r.output
    r = run("--db", samples_db, "export", tmp_path / "npy", "--format", "npy")
    assert r.exit_code == 0 and (tmp_path / "npy" / "vectors.npy").exists(), r.output

    r = run("--db", samples_db, "export", tmp_path / "x", "--format", "csv")
    assert r.exit_code == 2 and "'csv' is not one of 'parquet', 'npy'" in r.output
    (tmp_path / "a-file").write_text("")
    r = run("--db", samples_db, "export", tmp_path / "a-file" / "out.parquet")
    assert r.exit_code == 6 and r.output.startswith("Error: cannot write"), r.output
    assert len(r.output.strip().splitlines()) == 1
    r = run("--db", samples_db, "export", tmp_path / "npy", "--format", "npy")
    assert r.exit_code == 2 and "exists" in r.output and "Traceback" not in r.output
    r = run("--db", tmp_path / "nothing", "export", tmp_path / "y.parquet")
    assert r.exit_code == 4 and "no collection" in r.output
    if os.geteuid() != 0:  # root may write anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        r = run("--db", samples_db, "export", locked / "out.parquet")
        assert r.exit_code == 6 and "permission denied" in r.output, r.output
