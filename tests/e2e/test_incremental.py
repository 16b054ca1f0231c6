"""Re-indexing touches only what changed: add, modify, move, copy, delete."""

import os
import shutil

import pytest
from conftest import make_photo

from vtsearch import Engine
from vtsearch.errors import CollectionNotFoundError, ConfigError, ModelMismatchError


def test_first_run_then_nothing_to_do(tmp_path, photos, tiny_clip, catalog_url):
    eng = Engine(tmp_path / "coll", model=tiny_clip, catalog=catalog_url)
    first = eng.index(photos, workers=0)
    assert (first.scanned, first.embedded, first.failed) == (7, 7, [])
    again = eng.index(photos, workers=0)
    assert (again.embedded, again.unchanged) == (0, 7)
    assert eng.status().indexed == 7


def test_add_modify_move_copy_delete(tmp_path, photos, tiny_clip, catalog_url):
    eng = Engine(tmp_path / "coll", model=tiny_clip, catalog=catalog_url)
    eng.index(photos, workers=0)

    make_photo(photos / "new.png", seed=50)  # added
    make_photo(photos / "img1.png", seed=51)  # modified in place
    os.utime(photos / "img1.png", ns=(1, 10**18))
    shutil.move(photos / "img2.png", photos / "sub" / "moved.png")  # moved
    shutil.copy(photos / "img3.png", photos / "copy_of_3.png")  # copied
    (photos / "img4.png").unlink()  # deleted
    st = (photos / "img5.png").stat()  # touched only: same bytes, new mtime
    os.utime(photos / "img5.png", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))

    r = eng.index(photos, workers=0)
    assert r.embedded == 2  # new.png and the modified img1.png: nothing else is decoded
    # img5.png was touched only: re-read, found the same, counted unchanged (not moved).
    assert (r.relinked, r.copied, r.deleted, r.unchanged) == (1, 1, 1, 4)
    assert eng.status().indexed == 8

    paths = {os.path.basename(x.path) for x in eng.search(text="anything", k=50)}
    assert paths == {
        "img0.png",
        "img1.png",
        "img3.png",
        "img5.png",
        "deep.jpg",
        "new.png",
        "moved.png",
        "copy_of_3.png",
    }

    # The moved file kept its vector: it is its own nearest neighbour at similarity 1.
    top = eng.search(image=photos / "sub" / "moved.png", k=1)[0]
    assert top.path.endswith("sub/moved.png") and top.score == pytest.approx(1.0, abs=1e-4)
    # The modified file was re-embedded: its new pixels find it first.
    top = eng.search(image=photos / "img1.png", k=1)[0]
    assert top.path.endswith("img1.png") and top.score == pytest.approx(1.0, abs=1e-4)


def test_queries_from_a_fresh_engine_see_the_saved_index(tmp_path, photos, tiny_clip, catalog_url):
    Engine(tmp_path / "coll", model=tiny_clip, catalog=catalog_url).index(photos, workers=0)
    # The model comes from the collection; the catalog's server too (the folder records it).
    fresh = Engine(tmp_path / "coll")
    hits = fresh.search(image=photos / "img0.png", k=3)
    assert hits[0].path.endswith("img0.png")
    assert len(hits) == 3 and hits[0].score >= hits[1].score >= hits[2].score


def test_decode_workers_give_the_same_vectors(tmp_path, photos, tiny_clip):
    a = Engine(tmp_path / "a", model=tiny_clip)
    a.index(photos, workers=0)
    b = Engine(tmp_path / "b", model=tiny_clip)
    b.index(photos, workers=2, batch_size=3)
    qa = [(os.path.basename(h.path), round(h.score, 4)) for h in a.search(text="red", k=7)]
    qb = [(os.path.basename(h.path), round(h.score, 4)) for h in b.search(text="red", k=7)]
    assert qa == qb


def test_other_model_is_refused_with_what_to_do(tmp_path, photos, tiny_clip, tiny_siglip):
    Engine(tmp_path / "coll", model=tiny_clip).index(photos, workers=0)
    with pytest.raises(ModelMismatchError, match="re-index"):
        Engine(tmp_path / "coll", model=tiny_siglip).search(text="a cat")


def test_search_without_collection_says_index_first(tmp_path, tiny_clip):
    with pytest.raises(CollectionNotFoundError, match="vtsearch index"):
        Engine(tmp_path / "nothing", model=tiny_clip).search(text="a cat")


def test_a_collection_of_schema_1_upgrades_and_reembeds_nothing(tmp_path, photos, tiny_clip):
    from legacy import as_schema_1

    db = tmp_path / "coll"
    Engine(db, model=tiny_clip).index(photos, workers=0)
    as_schema_1(db)
    eng = Engine(db, model=tiny_clip)
    assert len(eng.search(text="anything", k=50)) == 7  # readable at once
    r = eng.index(photos, workers=0)
    assert (r.embedded, r.unchanged, r.relinked, r.deleted) == (0, 7, 0, 0)
    # The change times it lacked are recorded: an edit that keeps size and mtime is seen now.
    assert all(rec.ctime_ns is not None for rec in eng._parts.catalog(False).records().values())
    assert eng.roots() == [str(photos)]


def test_manifests_index_what_they_list_and_leave_the_rest_alone(tmp_path, photos, tiny_clip):
    eng = Engine(tmp_path / "coll", model=tiny_clip)
    files = sorted(str(p) for p in photos.rglob("*.*"))
    part1, part2 = tmp_path / "part1.txt", tmp_path / "part2.txt"
    part1.write_text("# shard 1\n" + "\n".join(files[:4]) + "\n\n")
    # Spelled through a link: stored as a walk of the resolved folder would store it.
    (tmp_path / "link").symlink_to(photos)
    part2.write_text("\n".join(f.replace(str(photos), str(tmp_path / "link")) for f in files[4:]))
    assert eng.index(manifest=part1, workers=0).embedded == 4
    second = eng.index(manifest=part2, workers=0)
    assert (second.embedded, second.deleted) == (3, 0)  # part 1's rows are not part 2's business
    assert eng.status().indexed == 7
    assert eng._parts.catalog(create=False).roots() == []  # no folder to walk on a refresh
    again = eng.index(manifest=part1, workers=0)
    assert (again.embedded, again.deleted, again.unchanged) == (0, 0, 4)
    # A walk of the folder finds the very rows the manifests made: nothing new, nothing doubled.
    walk = eng.index(photos, workers=0)
    assert (walk.embedded, walk.copied, walk.relinked, walk.unchanged) == (0, 0, 0, 7)
    part1.write_text("photos/img0.png\n")
    with pytest.raises(ConfigError, match="absolute paths"):
        eng.index(manifest=part1)
    with pytest.raises(ConfigError, match="not both"):
        eng.index(photos, manifest=part1)
