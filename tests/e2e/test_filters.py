"""Search filters end to end: generated photos with chosen EXIF dates, file times, shapes and
formats (tiny CLIP model), and the sample photos (default model, with its re-ranker), through
``Engine.search``, `vtsearch query` and the HTTP API."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import SAMPLES, make_photo
from fastapi.testclient import TestClient
from PIL import ExifTags, Image

from vtsearch import Engine
from vtsearch.cli import main
from vtsearch.search.searcher import Searcher
from vtsearch.server.app import create_app
from vtsearch.storage.filters import Filters

ODD = b"caf\xe9.png"  # a file name that is not UTF-8


def dated_photo(
    path: Path, seed: int, size=(64, 48), taken: str | None = None, mtime: str | None = None
) -> Path:
    """A generated photo with an EXIF DateTimeOriginal (JPEG) and a file modification time."""
    make_photo(path, seed, size)
    if taken is not None:
        exif = Image.Exif()
        exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.DateTimeOriginal] = taken
        with Image.open(path) as img:
            img.load()
        img.save(path, exif=exif)
    if mtime is not None:
        t = datetime.fromisoformat(mtime).timestamp()
        os.utime(path, (t, t))
    return path


# name -> (size, EXIF time, mtime); the summer of 2024 is [2024-06-01, 2024-09-01).
PHOTOS = {
    "2024/summer0.jpg": ((64, 48), "2024:07:01 10:00:00", "2020-01-01"),
    "2024/summer1.jpg": ((64, 48), "2024:07:14 10:00:00", "2020-01-01"),
    "2024/summer2.jpg": ((64, 48), "2024:08:02 18:30:00", "2020-01-01"),
    "2024/summer3.jpg": ((60, 40), "2024:08:31 23:59:00", "2020-01-01"),
    "2024/late.jpg": ((48, 64), "2024:10:01 09:00:00", "2024-07-01"),  # EXIF wins over mtime
    "2023/old0.png": ((50, 50), None, "2023-05-01"),
    "2023/old1.png": ((64, 48), None, "2023-05-02"),
    "2023/old2.png": ((40, 60), None, "2023-05-03"),
    "nodate/recent.png": ((64, 48), None, "2024-08-15 12:00"),  # no EXIF: the file's time
    "nodate/spring.png": ((56, 48), None, "2024-04-01"),
}
SUMMER = {"summer0.jpg", "summer1.jpg", "summer2.jpg", "summer3.jpg", "recent.png"}


@pytest.fixture(scope="module")
def dated(tmp_path_factory, tiny_clip):
    """The generated photos indexed with the tiny model; yields (engine, photo folder)."""
    base = tmp_path_factory.mktemp("filters")
    folder = base / "photos"
    for seed, (name, (size, taken, mtime)) in enumerate(PHOTOS.items()):
        dated_photo(folder / name, seed, size, taken, mtime)
    odd = os.path.join(os.fsencode(folder), b"odd", ODD)
    os.makedirs(os.path.dirname(odd))
    shutil.copy(os.fsencode(dated_photo(base / "x.png", 50, (64, 48))), odd)
    os.utime(odd, (datetime(2022, 1, 1).timestamp(),) * 2)
    eng = Engine(base / "coll", model=tiny_clip)
    report = eng.index(folder, workers=0)
    assert report.embedded == len(PHOTOS) + 1 and not report.failed
    yield eng, folder.resolve()
    eng.close()


def names(results) -> list[str]:
    return [os.path.basename(r.path) for r in results]


def test_a_date_range_gives_k_results_when_k_match_and_fewer_only_when_fewer_do(dated):
    eng, _ = dated
    summer = Filters(after="2024-06-01", before="2024-09-01")
    assert len(eng.search("a photo", k=10)) == 10  # unfiltered, 11 photos
    three = eng.search("a photo", k=3, filters=summer)
    assert len(three) == 3 and set(names(three)) <= SUMMER
    # Every image of the range and nothing else, in the order of the unfiltered ranking.
    got = eng.search("a photo", k=10, filters=summer)
    assert set(names(got)) == SUMMER and len(got) == 5
    everything = [n for n in names(eng.search("a photo", k=11)) if n in SUMMER]
    assert names(got) == everything
    # A page past the first, the same list.
    assert names(eng.search("a photo", k=2, offset=2, filters=summer)) == everything[2:4]
    # EXIF times are reported as taken; an image without EXIF passed by its file time.
    by_name = {os.path.basename(r.path): r for r in got}
    assert by_name["summer2.jpg"].taken_at == datetime(2024, 8, 2, 18, 30)
    assert by_name["recent.png"].taken_at is None
    assert names(eng.search("a photo", k=10, filters=Filters(after="2024-09"))) == ["late.jpg"]
    assert eng.search("a photo", filters=Filters(before="2000")) == []


def test_folders_shape_size_format_and_image_queries(dated):
    eng, folder = dated
    by_folder = eng.search("a photo", k=10, filters=Filters(folders=[folder / "2023"]))
    assert set(names(by_folder)) == {"old0.png", "old1.png", "old2.png"}
    # Relative: inside the indexed folder; a glob on file names.
    assert set(names(eng.search("x", filters=Filters(folders="2024")))) == {
        "summer0.jpg",
        "summer1.jpg",
        "summer2.jpg",
        "summer3.jpg",
        "late.jpg",
    }
    assert set(names(eng.search("x", filters=Filters(glob="old?.png")))) == {
        "old0.png",
        "old1.png",
        "old2.png",
    }
    assert set(names(eng.search("x", filters=Filters(orientation="portrait")))) == {
        "late.jpg",
        "old2.png",
    }
    assert names(eng.search("x", filters=Filters(orientation="square"))) == ["old0.png"]
    assert set(names(eng.search("x", filters=Filters(min_width=60, min_height=48)))) == {
        "summer0.jpg",
        "summer1.jpg",
        "summer2.jpg",
        "old1.png",
        "recent.png",
        os.fsdecode(ODD),
    }
    jpegs = eng.search("x", k=20, filters=Filters(formats=["jpg"]))
    assert len(jpegs) == 5 and all(n.endswith(".jpg") for n in names(jpegs))
    # By example, with a filter: the query photo itself passes the filter and comes first.
    query = folder / "2023" / "old1.png"
    hits = eng.search(image=query, k=3, filters=Filters(folders=[folder / "2023"]))
    assert names(hits)[0] == "old1.png" and len(hits) == 3


def test_similar_and_min_score(dated):
    eng, folder = dated
    first = eng.search(image=folder / "2024" / "summer0.jpg", k=1)[0]
    summer = Filters(after="2024-06-01", before="2024-09-01")
    like = eng.similar(first.id, k=10, filters=summer)
    assert set(names(like)) == SUMMER - {"summer0.jpg"}
    # min_score cuts the tail of the final ranking, never the order.
    ranked = eng.search("a photo", k=11)
    cut = (ranked[3].score + ranked[4].score) / 2
    assert ranked[3].score > ranked[4].score
    kept = eng.search("a photo", k=11, filters=Filters(min_score=cut))
    assert [r.id for r in kept] == [r.id for r in ranked[:4]]
    assert len(eng.search("a photo", k=2, filters=Filters(min_score=cut))) == 2
    both = Filters(min_score=cut, orientation="landscape")
    assert all(r.score >= cut for r in eng.search("a photo", k=11, filters=both))


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_cli_filters_and_formats(dated):
    eng, folder = dated
    db = eng.path
    summer = ["--after", "2024-06-01", "--before", "2024-09-01"]
    r = cli("--db", db, "query", "a photo", *summer, "--format", "csv")
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(io.StringIO(r.output)))
    assert r.output.splitlines()[0] == "id,path,score,bi_score,rerank_score,width,height,taken_at"
    assert {os.path.basename(row["path"]) for row in rows} == SUMMER
    row = next(row for row in rows if row["path"].endswith("summer2.jpg"))
    assert (row["width"], row["height"], row["taken_at"]) == ("64", "48", "2024-08-02T18:30:00")
    assert float(row["score"]) == float(row["bi_score"]) and row["rerank_score"] == ""

    # paths: exactly the paths, one a line, in ranking order (what xargs -d '\n' wants).
    r = cli("--db", db, "query", "a photo", *summer, "--format", "paths")
    assert r.exit_code == 0, r.output
    assert r.output.splitlines() == [row["path"] for row in rows]
    r = cli(
        "--db", db, "query", "a photo", "--in", folder / "2023", "--portrait", "--format", "paths"
    )
    assert r.output == f"{folder / '2023' / 'old2.png'}\n"

    # --json is --format json.
    as_json = cli("--db", db, "query", "a photo", *summer, "--json").output
    assert as_json == cli("--db", db, "query", "a photo", *summer, "--format", "json").output
    assert [json.loads(line)["path"] for line in as_json.splitlines()] == [
        row["path"] for row in rows
    ]
    r = cli("--db", db, "query", "x", "--file-type", "png", "--square", "--min-width", 50)
    assert r.exit_code == 0 and r.output.split("\t")[1].strip().endswith("old0.png")
    r = cli("--db", db, "query", "x", "--glob", "summer[01].jpg", "-n", 5, "--format", "paths")
    assert sorted(os.path.basename(p) for p in r.output.splitlines()) == [
        "summer0.jpg",
        "summer1.jpg",
    ]

    # A name that is not UTF-8: its own bytes in paths and csv.
    exact = os.path.join(os.fsencode(folder), b"odd", ODD)
    r = cli("--db", db, "query", "x", "--in", folder / "odd", "--format", "paths")
    assert r.stdout_bytes == exact + b"\n"
    r = cli("--db", db, "query", "x", "--glob", "caf*", "--format", "csv")
    assert r.stdout_bytes.splitlines()[1].split(b",")[1] == exact


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--after", "2024-13-01"], "Invalid value for '--after'"),
        (["--before", "soon"], "Invalid value for '--before'"),
        (["--after", "2024-09", "--before", "2024-06"], "must be earlier"),
        (["--file-type", "raw"], "unknown file format 'raw'"),
        (["--min-width", 0], "Invalid value for '--min-width'"),
        (["--json", "--format", "csv"], "disagree"),
        (["--texts", "--landscape"], "apply to images"),
    ],
)
def test_cli_refuses_bad_filters_before_opening_anything(tmp_path, args, message):
    r = cli("--db", tmp_path / "coll", "query", "a cat", *args)
    assert r.exit_code == 2 and message in r.output, r.output
    assert not (tmp_path / "coll").exists()


def test_api_filters_and_their_errors(dated):
    eng, folder = dated
    client = TestClient(create_app(eng))
    summer = {"after": "2024-06-01", "before": "2024-09-01"}
    r = client.get("/api/search", params={"q": "a photo", "k": 3, **summer})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["results"]) == 3 and body["has_more"] is True
    got = client.get("/api/search", params={"q": "a photo", "k": 10, **summer}).json()
    assert {os.path.basename(h["path"]) for h in got["results"]} == SUMMER
    assert got["has_more"] is False
    # Folders (absolute, relative, several), orientation, size, format, glob, min_score.
    params = [("q", "x"), ("in", str(folder / "2023")), ("in", "nodate"), ("k", 20)]
    found = {
        os.path.basename(h["path"])
        for h in client.get("/api/search", params=params).json()["results"]
    }
    assert found == {"old0.png", "old1.png", "old2.png", "recent.png", "spring.png"}
    one = {"q": "x", "orientation": "square", "file_type": "png", "min_width": 50}
    assert [h["path"] for h in client.get("/api/search", params=one).json()["results"]] == [
        "2023/old0.png"
    ]
    globbed = client.get("/api/search", params={"q": "x", "glob": "late.*"}).json()
    assert [h["path"] for h in globbed["results"]] == ["2024/late.jpg"]
    top = client.get("/api/search", params={"q": "a photo", "k": 20}).json()["results"]
    cut = client.get("/api/search", params={"q": "a photo", "min_score": top[1]["score"]})
    assert [h["id"] for h in cut.json()["results"]] == [top[0]["id"], top[1]["id"]]
    # Similar, and an uploaded image with the filters in the query string.
    first = got["results"][0]["id"]
    like = client.get(f"/api/similar/{first}", params=summer).json()["results"]
    assert len(like) == 4 and first not in {h["id"] for h in like}
    data = (folder / "2023" / "old1.png").read_bytes()
    up = client.post(
        "/api/search",
        params={"in": "2023", "orientation": "landscape"},
        files={"image": ("q.png", data, "image/png")},
    ).json()["results"]
    assert [h["path"] for h in up] == ["2023/old1.png"]
    # Bad values: 400 with the reason as JSON.
    for bad, why in [
        ({"after": "2024-13-01"}, "is not a date"),
        ({"before": "01/02/2024"}, "is not a date"),
        ({"after": "2024-09-01", "before": "2024-06-01"}, "must be earlier"),
        ({"orientation": "wide"}, "unknown orientation"),
        ({"file_type": "raw"}, "unknown file format"),
        ({"min_width": 0}, "min_width"),
        ({"min_score": "nan"}, "min_score"),
        ({"in": ""}, "empty folder"),
    ]:
        r = client.get("/api/search", params={"q": "x", **bad})
        assert r.status_code == 400 and why in r.json()["error"], (bad, r.text)
        r = client.get(f"/api/similar/{first}", params=bad)
        assert r.status_code == 400, (bad, r.text)
    # An empty date field (a form left blank) is no filter.
    blank = client.get("/api/search", params={"q": "x", "after": "", "k": 20}).json()
    assert len(blank["results"]) == len(PHOTOS) + 1


@pytest.fixture(scope="module")
def samples(tmp_path_factory, lite):
    """The sample photos indexed with the default model (and its re-ranker)."""
    base = tmp_path_factory.mktemp("samples")
    eng = Engine(base / "coll", embedder=lite)
    assert eng.index(SAMPLES, workers=0).embedded == 19
    yield eng
    eng.close()


@pytest.mark.parametrize("rerank", [False, True])
def test_subtracting_a_concept_drops_the_images_that_have_it(samples, rerank):
    cat = "cat_chelsea.png"
    assert names(samples.search("a photo of a cat", k=19, rerank=rerank))[0] == cat
    # Measured: last of the 19 for "a photo - cat" (and for "an animal - cat", where "an
    # animal" alone puts the cat 4th), with and without re-ranking.
    for text in ("a photo - cat", "an animal - cat"):
        ranked = names(samples.search(text, k=19, rerank=rerank))
        assert cat not in ranked[:10] and ranked.index(cat) >= 16, (text, ranked)


def test_the_reranker_sees_only_matching_candidates(samples, monkeypatch):
    seen: list[list[int]] = []
    real = Searcher.region_tokens

    def spy(self, reranker, ids):
        seen.append(list(ids))
        return real(self, reranker, ids)

    monkeypatch.setattr(Searcher, "region_tokens", spy)
    portrait = Filters(orientation="portrait")
    hits = samples.search("a cat", k=5, filters=portrait)
    assert names(hits) == ["grace_hopper.jpg"] and hits[0].rerank_score is not None
    landscape = samples.search("a cat", k=5, filters=Filters(orientation="landscape"))
    wide = {r.id for r in samples.search("a cat", k=19, filters=Filters(orientation="landscape"))}
    assert len(landscape) == 5 and names(landscape)[0] == "cat_chelsea.png"
    assert [hits[0].id] in seen and seen[-2] and set(seen[-2]) <= wide
    assert all(r.width > r.height for r in landscape)
    # The ten the re-ranker scored were all landscape photos (10 of the 19 are).
    assert len(seen[-2]) == 10 and np.all([i in wide for i in seen[-2]])


def test_filtered_searches_see_images_indexed_since(tmp_path, photos, tiny_clip):
    """The ids a filter passes are memoised per catalog state: a new photo is found."""
    eng = Engine(tmp_path / "coll", model=tiny_clip)
    eng.index(photos, workers=0)
    sub = Filters(folders=[photos / "sub"])
    assert names(eng.search("x", filters=sub)) == ["deep.jpg"]
    assert names(eng.search("y", filters=sub)) == ["deep.jpg"]  # the memo, same answer
    make_photo(photos / "sub" / "new.png", seed=42)
    eng.index(photos, workers=0)
    assert set(names(eng.search("x", filters=sub))) == {"deep.jpg", "new.png"}
    (photos / "sub" / "deep.jpg").unlink()
    eng.index(photos, workers=0)
    assert names(eng.search("x", filters=sub)) == ["new.png"]
    eng.close()
