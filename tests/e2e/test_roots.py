"""A collection knows its folders: a renamed folder keeps its rows and vectors, a copy from
another folder reuses its vector, a vanished folder is reported and kept, and a command drops it."""

from __future__ import annotations

import os
import shutil

import pytest
from click.testing import CliRunner
from conftest import make_photo

from vtsearch import Engine
from vtsearch.cli import main
from vtsearch.errors import RootError
from vtsearch.storage.catalog import is_under


def _names(hits) -> list[str]:
    return sorted(os.path.basename(h.path) for h in hits)


def test_renamed_folder_moves_rows_and_never_duplicates(tmp_path, photos, tiny_clip):
    eng = Engine(tmp_path / "coll", model=tiny_clip)
    assert eng.index(photos, workers=0).embedded == 7
    renamed = tmp_path / "Photos"
    photos.rename(renamed)

    r = eng.index(renamed, workers=0)
    assert (r.embedded, r.relinked, r.copied, r.deleted) == (0, 7, 0, 0)
    hits = eng.search(text="anything", k=50, rerank=False)
    assert len(hits) == 7 and all(is_under(h.path, str(renamed)) for h in hits)
    assert len({h.path for h in hits}) == 7

    # The old folder is listed as missing, with no rows left; a refresh of all roots drops it.
    st = eng.status()
    assert (str(photos), False, 0) in st.roots and (str(renamed), True, 7) in st.roots
    again = eng.index(workers=0)
    assert again.dropped_roots == [str(photos)] and again.missing_roots == []
    assert (again.embedded, again.unchanged) == (0, 7)
    assert eng.roots() == [str(renamed)]


def test_copy_from_another_root_reuses_its_vector(tmp_path, photos, tiny_clip):
    eng = Engine(tmp_path / "coll", model=tiny_clip)
    eng.index(photos, workers=0)
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(photos / "img0.png", other / "same.png")
    r = eng.index(other, workers=0)
    assert (r.embedded, r.copied, r.relinked) == (0, 1, 0)
    top = eng.search(image=other / "same.png", k=2, rerank=False)
    assert _names(top) == ["img0.png", "same.png"]
    assert top[1].score == pytest.approx(1.0, abs=1e-4)


def test_missing_root_is_reported_and_kept_then_dropped_by_command(tmp_path, photos, tiny_clip):
    db = tmp_path / "coll"
    eng = Engine(db, model=tiny_clip)
    second = tmp_path / "second"
    make_photo(second / "a.png", seed=70)
    make_photo(second / "b.png", seed=71)
    eng.index(photos, workers=0)
    eng.index(second, workers=0)
    assert eng.roots() == sorted([str(photos), str(second)])
    shutil.move(second, tmp_path / "unplugged")  # a drive that went away

    r = eng.index(workers=0)  # refresh every root
    assert r.missing_roots == [str(second)] and r.deleted == 0
    assert eng.status().indexed == 9

    shown = CliRunner().invoke(main, ["--db", str(db), "--model", tiny_clip, "status"])
    assert shown.exit_code == 0, shown.output
    assert f"{second} (missing, 2 images)" in shown.output

    dropped = CliRunner().invoke(
        main, ["--db", str(db), "--model", tiny_clip, "roots", "remove", str(second)]
    )
    assert dropped.exit_code == 0, dropped.output
    assert "2 images" in dropped.output
    assert eng.status().indexed == 7 and eng.roots() == [str(photos)]
    hits = eng.search(text="anything", k=50, rerank=False)
    assert all(is_under(h.path, str(photos)) for h in hits) and len(hits) == 7
    with pytest.raises(RootError, match="not an indexed folder"):
        eng.forget_root(second)


def test_index_with_no_folder_refreshes_every_root(tmp_path, photos, tiny_clip):
    eng = Engine(tmp_path / "coll", model=tiny_clip)
    second = tmp_path / "second"
    make_photo(second / "a.png", seed=80)
    eng.index(photos, workers=0)
    eng.index(second, workers=0)
    make_photo(photos / "new.png", seed=81)
    make_photo(second / "new2.png", seed=82)
    (photos / "img0.png").unlink()
    r = CliRunner().invoke(main, ["--db", str(tmp_path / "coll"), "index"])
    assert r.exit_code == 0, r.output
    assert "2 embedded" in r.output and "1 deleted" in r.output
    assert eng.status().indexed == 9


def test_a_root_inside_a_root_is_covered_by_it(tmp_path, photos, tiny_clip):
    eng = Engine(tmp_path / "coll", model=tiny_clip)
    eng.index(photos / "sub", workers=0)
    eng.index(photos, workers=0)
    assert eng.roots() == [str(photos)]
    assert eng.index(photos / "sub", workers=0).unchanged == 1
    assert eng.roots() == [str(photos)]


def test_paths_under_the_filesystem_root():
    assert is_under("/photos/a.jpg", "/") and is_under("/a", "/a")
    assert not is_under("/ab/c.jpg", "/a") and is_under("/a/b/c.jpg", "/a/b")


@pytest.mark.parametrize("direction", ["a_to_b", "b_to_a"])
def test_a_move_between_roots_keeps_its_row_whatever_their_order(tmp_path, tiny_clip, direction):
    a, b = tmp_path / "a", tmp_path / "b"
    make_photo(a / "one.png", seed=1)
    make_photo(a / "two.png", seed=2)
    make_photo(b / "three.png", seed=3)
    make_photo(b / "four.png", seed=4)
    eng = Engine(tmp_path / "coll", model=tiny_clip)
    eng.index(a, workers=0)
    eng.index(b, workers=0)
    src, dst, name = (a, b, "one.png") if direction == "a_to_b" else (b, a, "three.png")
    before = {os.path.basename(h.path): h.id for h in eng.search(text="x", k=10, rerank=False)}
    shutil.move(src / name, dst / name)

    r = eng.index(workers=0)  # refresh both roots, the source first or last
    assert (r.embedded, r.relinked, r.deleted) == (0, 1, 0)
    after = {os.path.basename(h.path): h for h in eng.search(text="x", k=10, rerank=False)}
    assert after[name].id == before[name] and after[name].path == str(dst / name)
    assert len(after) == 4
