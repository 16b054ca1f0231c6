"""Duplicates (``Engine.duplicates``, `vtsearch dupes`, ``GET /api/dupes``) over the sample photos
indexed with the default model, with planted copies: a byte copy, a resized and re-encoded copy,
a slightly cropped copy."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from click.testing import CliRunner
from conftest import SAMPLES
from fastapi.testclient import TestClient
from PIL import Image

from vtsearch import Engine
from vtsearch.cli import main
from vtsearch.search.dupes import DEFAULT_THRESHOLD, REGIONS
from vtsearch.server.app import create_app

N_SAMPLES = 19
#: Planted copy -> the sample it was made from.
COPIES = {
    "copies/raccoon copy.jpg": "raccoon.jpg",
    "copies/coffee_small.jpg": "coffee_cup.jpg",
    "copies/pagoda_crop.jpg": "china_pagoda.jpg",
}


def plant(photos) -> None:
    (photos / "copies").mkdir()
    shutil.copyfile(photos / "raccoon.jpg", photos / "copies" / "raccoon copy.jpg")
    with Image.open(photos / "coffee_cup.jpg") as im:
        half = im.convert("RGB").resize((im.width // 2, im.height // 2), Image.Resampling.LANCZOS)
        half.save(photos / "copies" / "coffee_small.jpg", "JPEG", quality=60)
    with Image.open(photos / "china_pagoda.jpg") as im:
        dx, dy = im.width // 20, im.height // 20
        crop = im.convert("RGB").crop((dx, dy, im.width - dx, im.height - dy))
        crop.save(photos / "copies" / "pagoda_crop.jpg", "JPEG", quality=90)
    # The byte copy is the newer file: the original is kept (same resolution and size: oldest).
    st = os.stat(photos / "raccoon.jpg")
    os.utime(photos / "copies" / "raccoon copy.jpg", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))


@pytest.fixture(scope="module")
def coll(tmp_path_factory, lite):
    base = tmp_path_factory.mktemp("dupes")
    photos = base / "photos"
    shutil.copytree(SAMPLES, photos)
    plant(photos)
    eng = Engine(base / "coll", embedder=lite)
    report = eng.index(photos, workers=0)
    assert report.embedded + report.copied == N_SAMPLES + len(COPIES) and not report.failed
    eng.close()
    return base / "coll", photos.resolve()


def names(group) -> list[str]:
    return [os.path.relpath(f.path, f.root) for f in group.files]


def test_exact_resized_and_cropped_copies_are_grouped_and_nothing_else(coll):
    db, photos = coll
    got = Engine(db).duplicates()
    assert (got.measure, got.threshold) == (REGIONS, DEFAULT_THRESHOLD[REGIONS])
    # One group per planted copy, its original kept first; distinct photos are never grouped.
    assert sorted(names(g) for g in got) == sorted([orig, copy] for copy, orig in COPIES.items())
    by_keep = {names(g)[0]: g for g in got}
    exact = by_keep["raccoon.jpg"]
    assert exact.kind == "exact" and all(f.exact and f.similarity == 1.0 for f in exact.files)
    assert exact.spare_bytes == (photos / "raccoon.jpg").stat().st_size
    for orig in ("coffee_cup.jpg", "china_pagoda.jpg"):
        g = by_keep[orig]
        keep, copy = g.files
        assert g.kind == "near" and keep.keep and not copy.keep and not copy.exact
        assert keep.pixels > copy.pixels and keep.similarity == 1.0
        assert DEFAULT_THRESHOLD[REGIONS] <= copy.similarity < 1.0
        with Image.open(photos / orig) as im:
            assert (keep.width, keep.height, keep.format) == (*im.size, "JPEG")
        assert keep.bytes == (photos / orig).stat().st_size


def test_the_threshold_is_respected(coll):
    db, _ = coll
    eng = Engine(db)
    near = {names(g)[1]: g.files[1].similarity for g in eng.duplicates() if g.kind == "near"}
    for copy, sim in near.items():
        above = eng.duplicates(threshold=min(1.0, sim + 0.005))
        below = eng.duplicates(threshold=sim - 0.005)
        assert copy not in [n for g in above for n in names(g)]
        assert copy in [n for g in below for n in names(g)]
    # At 1.0 only byte copies are left; exact_only reads no vectors at all.
    assert [g.kind for g in eng.duplicates(threshold=1.0)] == ["exact"]
    only = eng.duplicates(exact_only=True)
    assert [names(g) for g in only] == [["raccoon.jpg", "copies/raccoon copy.jpg"]]
    assert only.measure == "exact"


def test_a_collection_without_region_tokens_uses_its_vectors(coll, tmp_path):
    db, _ = coll
    plain = tmp_path / "plain"
    shutil.copytree(db, plain)
    for name in ("tokens.bin", "tokens.json"):
        (plain / name).unlink()
    got = Engine(plain).duplicates()
    assert (got.measure, got.threshold) == ("vectors", DEFAULT_THRESHOLD["vectors"])
    assert ["raccoon.jpg", "copies/raccoon copy.jpg"] in [names(g) for g in got]


def test_cli_prints_groups_with_size_and_resolution_and_json_lines(coll):
    db, photos = coll
    run = CliRunner().invoke
    r = run(main, ["--db", str(db), "dupes"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    out = r.output
    assert "3 groups" in out and f"regions >= {DEFAULT_THRESHOLD[REGIONS]}" in out
    with Image.open(photos / "coffee_cup.jpg") as im:
        w, h = im.size
    lines = out.splitlines()
    keep = next(ln for ln in lines if ln.endswith(str(photos / "coffee_cup.jpg")))
    copy = next(ln for ln in lines if ln.endswith(str(photos / "copies" / "coffee_small.jpg")))
    assert keep.split()[:2] == ["keep", f"{w}x{h}"] and f"{w // 2}x{h // 2}" in copy
    assert "kB" in keep and "similar 0." in copy
    assert "exact copy" in out and str(photos / "copies" / "raccoon copy.jpg") in out

    r = run(main, ["--db", str(db), "dupes", "--json"], catch_exceptions=False)
    rows = [json.loads(line) for line in r.output.splitlines()]
    assert len(rows) == 3 and {row["kind"] for row in rows} == {"exact", "near"}
    files = rows[0]["files"]
    assert files[0]["keep"] is True and not any(f["keep"] for f in files[1:])
    assert {"id", "path", "bytes", "width", "height", "format", "taken_at", "similarity"} <= set(
        files[0]
    )

    r = run(main, ["--db", str(db), "dupes", "--exact-only", "--json"])
    assert [json.loads(line)["kind"] for line in r.output.splitlines()] == ["exact"]
    r = run(main, ["--db", str(db), "dupes", "--threshold", "1.5"])
    assert r.exit_code == 2 and r.output.startswith("Error: the duplicate threshold")
    r = run(main, ["--db", str(db.parent / "nothing"), "dupes"])
    assert r.exit_code == 4 and "no collection" in r.output


def test_api_route(coll, tmp_path):
    db, _ = coll
    client = TestClient(create_app(Engine(db)))
    r = client.get("/api/dupes")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["threshold"] == DEFAULT_THRESHOLD[REGIONS] and body["measure"] == REGIONS
    groups = body["groups"]
    assert len(groups) == 3
    first = groups[0]["files"][0]
    assert set(first) >= {"id", "path", "bytes", "width", "height", "format", "keep", "thumb"}
    assert first["keep"] is True and first["thumb"] == f"/api/images/{first['id']}/thumb"
    assert client.get(first["thumb"]).status_code == 200
    paths = sorted(sorted(f["path"] for f in g["files"]) for g in groups)
    assert paths == sorted(sorted([orig, copy]) for copy, orig in COPIES.items())

    strict = client.get("/api/dupes", params={"threshold": 1.0}).json()
    assert [g["kind"] for g in strict["groups"]] == ["exact"] and strict["threshold"] == 1.0
    assert len(client.get("/api/dupes", params={"exact_only": "true"}).json()["groups"]) == 1
    for bad in ("1.5", "0", "abc"):
        r = client.get("/api/dupes", params={"threshold": bad})
        assert r.status_code == 400 and set(r.json()) == {"error"}, r.text
    missing = TestClient(create_app(Engine(tmp_path / "none"))).get("/api/dupes")
    assert missing.status_code == 404 and "no collection" in missing.json()["error"]
