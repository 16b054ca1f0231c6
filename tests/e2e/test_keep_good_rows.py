"""What a run cannot use this time never costs a good row: failed files are retried, a stricter
limit or a half-written file keeps the indexed version, a filtered run keeps the rest, an empty
looking folder is refused, and an in-place edit that keeps size and mtime is still seen."""

from __future__ import annotations

import os

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import make_photo
from PIL import Image

from vtsearch import Engine
from vtsearch.cli import main
from vtsearch.errors import RootError


def _indexed_paths(eng: Engine) -> set[str]:
    return {os.path.basename(h.path) for h in eng.search(text="anything", k=50, rerank=False)}


def test_failed_file_is_retried_on_the_next_run(tmp_path, photos, tiny_clip):
    eng = Engine(tmp_path / "coll", model=tiny_clip)
    big = photos / "img0.png"
    first = eng.index(photos, workers=0, max_bytes=big.stat().st_size - 1)
    assert "img0.png" in {os.path.basename(p) for p, _ in first.failed}
    # Same size, same mtime: only the limit changed. The failed row is tried again.
    again = eng.index(photos, workers=0)
    assert again.embedded >= 1 and again.failed == []
    assert "img0.png" in _indexed_paths(eng)
    assert eng.status().counts.get("failed", 0) == 0


def test_a_stricter_limit_keeps_indexed_rows(tmp_path, photos, tiny_clip):
    eng = Engine(tmp_path / "coll", model=tiny_clip)
    eng.index(photos, workers=0)
    before = _indexed_paths(eng)
    r = eng.index(photos, workers=0, max_bytes=10)
    assert (r.embedded, r.deleted, r.unchanged) == (0, 0, 7)
    assert _indexed_paths(eng) == before and eng.status().indexed == 7


def test_a_new_version_that_fails_to_decode_keeps_the_old_vector(tmp_path, photos, tiny_clip):
    eng = Engine(tmp_path / "coll", model=tiny_clip)
    eng.index(photos, workers=0)
    target = photos / "img2.png"
    good = target.read_bytes()
    target.write_bytes(good[: len(good) // 3])  # caught half-copied
    r = eng.index(photos, workers=0)
    assert [os.path.basename(p) for p, _ in r.kept] == ["img2.png"] and r.failed == []
    assert "img2.png" in _indexed_paths(eng) and eng.status().indexed == 7
    target.write_bytes(good)  # the copy finished
    r = eng.index(photos, workers=0)
    assert r.kept == [] and r.embedded + r.unchanged == 7


def test_an_extension_filter_leaves_other_files_alone(tmp_path, photos, tiny_clip):
    eng = Engine(tmp_path / "coll", model=tiny_clip)
    eng.index(photos, workers=0)  # six PNGs and one JPEG
    r = eng.index(photos, workers=0, extensions=(".png",))
    assert (r.deleted, r.unchanged) == (0, 6)
    assert "deep.jpg" in _indexed_paths(eng) and eng.status().indexed == 7


def test_a_root_that_looks_empty_is_refused(tmp_path, photos, tiny_clip):
    db = tmp_path / "coll"
    eng = Engine(db, model=tiny_clip)
    eng.index(photos, workers=0)
    away = tmp_path / "away"
    away.mkdir()
    for p in [*photos.iterdir()]:
        p.rename(away / p.name)  # an unmounted drive: the mount point is an empty folder
    with pytest.raises(RootError, match="unmounted drive"):
        eng.index(photos, workers=0)
    out = CliRunner().invoke(main, ["--db", str(db), "--model", tiny_clip, "index", str(photos)])
    assert out.exit_code == 7 and "nothing was removed" in out.output
    assert "Traceback" not in out.output
    assert eng.status().indexed == 7


def test_same_size_and_mtime_new_content_is_embedded_again(tmp_path, tiny_clip):
    folder = tmp_path / "photos"
    folder.mkdir()
    path = folder / "edit.bmp"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(path)
    make_photo(folder / "other.png", seed=3)
    eng = Engine(tmp_path / "coll", model=tiny_clip)
    eng.index(folder, workers=0)
    st = path.stat()
    # An edit in place (exiftool -P): same byte count (BMP), mtime put back.
    Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns
    r = eng.index(folder, workers=0)
    assert (r.embedded, r.unchanged) == (1, 1)
    top = eng.search(image=path, k=1, rerank=False)[0]
    assert top.path == str(path) and top.score == pytest.approx(1.0, abs=1e-4)


def test_stop_while_hashing_writes_nothing(tmp_path, photos, tiny_clip):
    eng = Engine(tmp_path / "coll", model=tiny_clip)
    seen: list[tuple[int, int]] = []
    r = eng.index(
        photos,
        workers=0,
        hash_progress=lambda done, total: seen.append((done, total)),
        should_stop=lambda: len(seen) >= 3,
    )
    assert r.interrupted and r.embedded == 0
    assert seen[0] == (0, 7) and all(t == 7 for _, t in seen)
    assert eng.status().counts == {"texts": 0}
    assert eng.index(photos, workers=0).embedded == 7  # the next run does it all
