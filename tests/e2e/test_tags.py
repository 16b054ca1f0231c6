"""Zero-shot tags (``Engine.tag``, `vtsearch tag`, `query --tag`, the API's ``tag`` filter and
``/api/tags``) on the sample photos indexed with the default model, and on generated photos with
a tiny CLIP model (no calibration: rank only)."""

from __future__ import annotations

import json
import os
import shutil

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from conftest import SAMPLES, make_photo
from fastapi.testclient import TestClient

from vtsearch import Engine
from vtsearch.cli import main
from vtsearch.errors import ConfigError
from vtsearch.models.calibration import load_tag_calibration
from vtsearch.server.app import create_app
from vtsearch.storage.filters import Filters

#: Labels for seven of the samples; five of them are their sample's top label (the default
#: model puts the coins and the astronaut nearest "rocket").
LABELS = "cat,rocket,coins,coffee,flower,raccoon,astronaut"
TOP = {
    "cat_chelsea.png": "cat",
    "rocket_launch.jpg": "rocket",
    "coffee_cup.jpg": "coffee",
    "dahlia_flower.jpg": "flower",
    "raccoon.jpg": "raccoon",
}
N_SAMPLES = 19


@pytest.fixture(scope="module")
def tagged(tmp_path_factory, lite):
    base = tmp_path_factory.mktemp("tags")
    photos = base / "photos"
    shutil.copytree(SAMPLES, photos)
    eng = Engine(base / "coll", embedder=lite)
    eng.index(photos, workers=0)
    report = eng.tag(LABELS)
    eng.close()
    return base / "coll", photos.resolve(), report


def by_name(eng: Engine) -> dict[str, int]:
    return {os.path.basename(r.path): r.id for r in eng.search(text="a photo", k=50)}


def test_the_default_model_ships_a_calibration_for_its_weights(lite):
    cal = load_tag_calibration(lite)
    assert cal is not None and cal.slope > 0 and 0 < cal.threshold < 1


def test_tags_round_trip_through_the_catalog(tagged, lite):
    coll, _, report = tagged
    assert report.scored == N_SAMPLES and report.already == 0 and report.calibrated
    assert report.tags >= N_SAMPLES  # every image keeps at least its top label
    with Engine(coll, embedder=lite) as eng:
        ids = by_name(eng)
        for name, label in TOP.items():
            assert eng.image(ids[name]).tags[0] == label, name
        (s,) = eng.tag_sets()
        assert s.name == "default" and s.labels == LABELS.split(",") and s.images == N_SAMPLES
        assert s.model.startswith("vtsearch-lite@") and s.threshold == report.threshold
        counts = dict(eng.tag_counts())
        assert sum(counts.values()) == report.tags and counts["cat"] >= 1


def test_a_tag_filter_returns_only_tagged_images_and_k_of_them(tagged, lite):
    coll, _, _ = tagged
    with Engine(coll, embedder=lite) as eng:
        ids = by_name(eng)
        cat = eng._parts.catalog(create=False)
        tags = cat.tags_of(ids.values())
        with_flower = {i for i, ts in tags.items() if "flower" in {t.label for t in ts}}
        assert ids["dahlia_flower.jpg"] in with_flower
        got = eng.search(text="a rocket launch", k=50, filters=Filters(tags=["Flower"]))
        assert {r.id for r in got} == with_flower  # all of them, though they are not rockets
        both = eng.search(text="a cat", k=50, filters=Filters(tags=["cat", "raccoon"]))
        assert all({"cat", "raccoon"} <= set(eng.image(r.id).tags) for r in both)
        assert eng.search(text="a cat", filters=Filters(tags=["unicorn"])) == []


def test_tagging_again_scores_only_new_images_and_forgets_changed_ones(tmp_path, lite):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("cat_chelsea.png", "rocket_launch.jpg", "coffee_cup.jpg"):
        shutil.copyfile(SAMPLES / name, photos / name)
    eng = Engine(tmp_path / "coll", embedder=lite)
    eng.index(photos, workers=0)
    assert eng.tag(LABELS).scored == 3
    shutil.copyfile(SAMPLES / "raccoon.jpg", photos / "raccoon.jpg")
    eng.index(photos, workers=0)
    again = eng.tag(LABELS)
    assert (again.scored, again.already, again.replaced) == (1, 3, False)
    assert eng.image(by_name(eng)["raccoon.jpg"]).tags[0] == "raccoon"
    # A changed file is a new row: the old one's tags go with it, the new one is scored.
    shutil.copyfile(SAMPLES / "dahlia_flower.jpg", photos / "cat_chelsea.png")
    eng.index(photos, workers=0)
    cat = eng._parts.catalog(create=False)
    assert cat.tag_sets()[0].images == 3
    third = eng.tag(LABELS)
    assert third.scored == 1 and eng.image(by_name(eng)["cat_chelsea.png"]).tags[0] == "flower"
    # Other labels (or another rule) re-tag everything; a second set lives beside the first.
    changed = eng.tag(LABELS + ",dog")
    assert changed.replaced and changed.scored == 4
    eng.tag("building,animal", name="kinds")
    assert {s.name for s in eng.tag_sets()} == {"default", "kinds"}
    assert eng.remove_tags("kinds") >= 4 and [s.name for s in eng.tag_sets()] == ["default"]
    with pytest.raises(ConfigError):
        eng.remove_tags("kinds")
    eng.close()


def test_tags_show_in_the_cli_the_api_and_the_export(tagged, tmp_path, lite):
    coll, _, _ = tagged
    runner = CliRunner()
    r = runner.invoke(main, ["--db", str(coll), "query", "a pet", "--tag", "cat", "--json"])
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in r.output.splitlines()]
    assert rows and any(row["path"].endswith("cat_chelsea.png") for row in rows)
    r = runner.invoke(main, ["--db", str(coll), "tag", "--list"])
    assert r.exit_code == 0 and "default: 7 labels, 19 images scored" in r.output, r.output
    r = runner.invoke(main, ["--db", str(coll), "query", "a cat", "--tag", " "])
    assert r.exit_code == 2 and "empty tag" in r.output

    with Engine(coll, embedder=lite) as eng, TestClient(create_app(eng)) as client:
        ids = by_name(eng)
        counts = client.get("/api/tags").json()["tags"]
        assert {"tag": "cat", "images": dict(eng.tag_counts())["cat"]} in counts
        res = client.get("/api/search", params={"q": "a pet", "tag": ["cat"]}).json()
        assert ids["cat_chelsea.png"] in [x["id"] for x in res["results"]]
        assert all("cat" in eng.image(x["id"]).tags for x in res["results"])
        image = client.get(f"/api/images/{ids['rocket_launch.jpg']}").json()
        assert image["tags"][0] == "rocket"

    out = tmp_path / "rows.parquet"
    r = runner.invoke(main, ["--db", str(coll), "export", str(out)])
    assert r.exit_code == 0, r.output
    table = pq.read_table(out).to_pydict()
    tags = {os.path.basename(p): t for p, t in zip(table["path"], table["tags"], strict=True)}
    assert all(tags[name][0] == label for name, label in TOP.items())


def test_a_model_without_calibration_tags_by_rank(tmp_path, tiny_clip):
    for i in range(4):
        make_photo(tmp_path / "p" / f"{i}.png", i)
    eng = Engine(tmp_path / "coll", model=tiny_clip)
    eng.index(tmp_path / "p", workers=0)
    with pytest.raises(ConfigError, match="no tag calibration"):
        eng.tag("red,blue", threshold=0.5)
    report = eng.tag("red,blue,green", top_k=2)
    assert not report.calibrated and report.tags == 8
    assert all(len(eng.image(i).tags) == 2 for i in range(1, 5))
    r = CliRunner().invoke(
        main, ["--db", str(tmp_path / "coll"), "--model", tiny_clip, "tag", "--labels", " , "]
    )
    assert r.exit_code != 0 and "no labels" in r.output
    eng.close()
