"""Hostile and broken inputs: one generated corpus holds every kind; one run indexes the good files,
records each bad one with its reason, exits 0, and `vtsearch status` lists them. Then the query
side: empty, very long, and not-an-image queries."""

from __future__ import annotations

import io
import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import make_photo
from PIL import Image

from vtsearch import Engine
from vtsearch.cli import main
from vtsearch.errors import QueryError
from vtsearch.images import load_image

RED, BLUE = (220, 20, 20), (20, 20, 220)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def bomb_png() -> bytes:
    """69 bytes that declare 50,000 x 50,000 pixels."""
    ihdr = struct.pack(">IIBBBBB", 50_000, 50_000, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + _png_chunk(b"IEND", b"")
    )


def halves(w: int = 64, h: int = 48) -> Image.Image:
    """Red left half, blue right half: orientation is visible."""
    a = np.zeros((h, w, 3), np.uint8)
    a[:, : w // 2], a[:, w // 2 :] = RED, BLUE
    return Image.fromarray(a)


def encoded(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def build_corpus(folder: Path) -> tuple[set[str], dict[str, str]]:
    """Write the corpus; returns (names that must index, {name: words its reason must contain})."""
    folder.mkdir(parents=True)
    good: set[str] = set()

    def put(name: str, data: bytes) -> None:
        (folder / name).write_bytes(data)

    make_photo(folder / "plain.jpg", seed=1)
    make_photo(folder / "plain.png", seed=2)
    good |= {"plain.jpg", "plain.png"}
    # CMYK, 16-bit, palette with transparency, alpha, grey+alpha.
    put("cmyk.jpg", encoded(Image.new("CMYK", (40, 30), (0, 255, 255, 0)), "JPEG"))
    grad = np.linspace(0, 65535, 48 * 64).reshape(48, 64).astype(np.uint16)
    put("gray16.png", encoded(Image.fromarray(grad), "PNG"))
    pal = halves().convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    put("palette.png", encoded(pal, "PNG", transparency=0))
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[..., 1], rgba[..., 3] = 200, np.linspace(0, 255, 40, dtype=np.uint8)[None, :]
    put("alpha.png", encoded(Image.fromarray(rgba, "RGBA"), "PNG"))
    put("gray_alpha.png", encoded(Image.fromarray(rgba[..., 2:], "LA"), "PNG"))
    # EXIF orientation 6: stored landscape, displayed rotated 90 degrees clockwise.
    exif = Image.Exif()
    exif[0x0112] = 6
    put("rotated.jpg", encoded(halves(), "JPEG", exif=exif.tobytes(), quality=95))
    # A huge but valid photo: decoded at a reduced scale, not refused.
    put("huge.jpg", encoded(Image.new("RGB", (12_000, 9_000), (30, 160, 60)), "JPEG", quality=30))
    good |= {"cmyk.jpg", "gray16.png", "palette.png", "alpha.png", "gray_alpha.png"}
    good |= {"rotated.jpg", "huge.jpg"}
    # Names: unicode, spaces, a newline, bytes that are not UTF-8.
    for name, seed in (("café ☕ 写真.png", 3), ("with  spaces .png", 4), ("new\nline.png", 5)):
        make_photo(folder / name, seed=seed)
        good.add(name)
    make_photo(folder / "tmp.png", seed=6)
    raw = os.fsencode(str(folder)) + b"/latin1-caf\xe9.png"
    os.rename(os.fsencode(str(folder / "tmp.png")), raw)
    good.add(os.fsdecode(b"latin1-caf\xe9.png"))
    # A working symlink to a good file is indexed as that file's copy.
    (folder / "link-to-plain.jpg").symlink_to(folder / "plain.jpg")
    good.add("link-to-plain.jpg")

    jpg = (folder / "plain.jpg").read_bytes()
    png = (folder / "plain.png").read_bytes()
    rng = np.random.default_rng(0)
    put("truncated.jpg", jpg[: len(jpg) // 2])
    put("truncated.png", png[: len(png) // 2])
    put("corrupt.jpg", jpg[:3] + rng.integers(0, 256, 3000, dtype=np.uint8).tobytes())
    bad_png = bytearray(png)
    bad_png[29] ^= 0xFF  # the IHDR checksum
    put("corrupt.png", bytes(bad_png))
    put("zero.jpg", b"")
    (folder / "notes.jpg").write_text("this is a text file, not a photo\n")
    put("bomb.png", bomb_png())
    (folder / "dangling.jpg").symlink_to(folder / "does-not-exist.jpg")
    (folder / "loop.jpg").symlink_to(folder / "loop.jpg")
    (folder / "ping.png").symlink_to(folder / "pong.png")
    (folder / "pong.png").symlink_to(folder / "ping.png")
    os.mkfifo(folder / "pipe.jpg")
    bad = {
        "truncated.jpg": "truncated",
        "truncated.png": "truncated",
        "corrupt.jpg": "damaged",
        "corrupt.png": "damaged PNG",
        "zero.jpg": "empty file",
        "notes.jpg": "not an image",
        "bomb.png": "decompression bomb",
        "dangling.jpg": "broken symbolic link",
        "loop.jpg": "symbolic link loop",
        "ping.png": "symbolic link loop",
        "pong.png": "symbolic link loop",
        "pipe.jpg": "not a regular file",
    }
    return good, bad


def test_one_run_indexes_the_good_and_reports_every_bad_file(tmp_path, tiny_clip):
    folder = tmp_path / "hostile"
    good, bad = build_corpus(folder)
    db = tmp_path / "coll"
    r = CliRunner().invoke(
        main, ["--db", str(db), "--model", tiny_clip, "index", str(folder), "--workers", "0"]
    )
    assert r.exit_code == 0, r.output
    assert f"{len(bad)} failed" in r.output
    for name, words in bad.items():
        assert f"failed: {folder / name}: " in r.output and words in r.output, name

    st = Engine(db).status()
    assert st.indexed == len(good)
    failed = dict(st.failed)
    assert set(failed) == {str(folder / n) for n in bad}
    for name, words in bad.items():
        assert words in failed[str(folder / name)], (name, failed[str(folder / name)])

    shown = CliRunner().invoke(main, ["--db", str(db), "status"])
    assert shown.exit_code == 0 and f"failed:     {len(bad)}" in shown.output
    for name in bad:
        assert f"failed: {folder / name}: " in shown.output
    as_json = json.loads(CliRunner().invoke(main, ["--db", str(db), "status", "--json"]).output)
    assert {p for p, _ in as_json["failed"]} == set(failed)

    # Every good file is findable, odd names included, and a re-run has nothing to redo.
    hits = Engine(db).search(text="a photo", k=50, rerank=False)
    assert {os.path.basename(h.path) for h in hits} == good
    again = Engine(db).index(folder, workers=0)
    # Every file that failed is tried again (the reason may have passed: a decoder installed, a
    # permission fixed) and reported again; the good ones are unchanged.
    assert (again.embedded, again.unchanged) == (0, len(good))
    assert {os.path.basename(p) for p, _ in again.failed} == set(bad)


def test_decoded_pixels_are_right(tmp_path):
    folder = tmp_path / "hostile"
    build_corpus(folder)
    rotated = load_image(str(folder / "rotated.jpg"))
    # Orientation 6 turns the red-left/blue-right picture so red is on top.
    assert rotated.size == (48, 64) and rotated.image.size == (48, 64)
    top, bottom = rotated.image.getpixel((24, 5)), rotated.image.getpixel((24, 58))
    assert top[0] > 180 > top[2] and bottom[2] > 180 > bottom[0]
    # CMYK red stays red; 16-bit grey is mid-grey in the middle, not clipped to white.
    assert load_image(str(folder / "cmyk.jpg")).image.getpixel((5, 5))[0] > 200
    mid = load_image(str(folder / "gray16.png")).image.getpixel((32, 24))
    assert 100 < mid[0] < 160 and mid[0] == mid[1] == mid[2]
    # Transparent pixels are composited on white, not black.
    assert load_image(str(folder / "alpha.png")).image.getpixel((0, 0)) == (255, 255, 255)
    # The huge photo decodes at a reduced scale but reports its real size.
    huge = load_image(str(folder / "huge.jpg"), target=256)
    assert huge.size == (12_000, 9_000) and max(huge.image.size) <= 1_500


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file: permissions cannot deny it")
def test_unreadable_files_are_recorded(tmp_path, tiny_clip):
    folder = tmp_path / "photos"
    make_photo(folder / "ok.png", seed=1)
    make_photo(folder / "secret.png", seed=2)
    make_photo(folder / "locked" / "inside.png", seed=3)
    os.chmod(folder / "secret.png", 0)
    eng = Engine(tmp_path / "coll", model=tiny_clip)
    first = eng.index(folder, workers=0)
    assert first.embedded == 2
    os.chmod(folder / "locked", 0)
    try:
        report = eng.index(folder, workers=0)
    finally:
        os.chmod(folder / "locked", 0o755)
        os.chmod(folder / "secret.png", 0o644)
    failed = dict(report.failed)
    assert "Permission denied" in failed[str(folder / "secret.png")]
    assert "cannot list folder" in failed[str(folder / "locked") + os.sep]
    # The files of a folder that could not be listed are kept, not taken for deleted.
    assert report.deleted == 0 and eng.status().indexed == 2


def test_unlistable_folder_keeps_its_files(tmp_path, tiny_clip, monkeypatch):
    """The same as above without needing a non-root user: the walk is told the folder failed."""
    import vtsearch.indexer.scan as scan

    folder = tmp_path / "photos"
    make_photo(folder / "ok.png", seed=1)
    make_photo(folder / "sub" / "inside.png", seed=2)
    eng = Engine(tmp_path / "coll", model=tiny_clip)
    assert eng.index(folder, workers=0).embedded == 2
    real_walk = os.walk

    def walk(top, onerror=None, followlinks=False):
        for dirpath, dirnames, filenames in real_walk(top, followlinks=followlinks):
            if dirpath.endswith("sub"):
                onerror(PermissionError(13, "Permission denied", dirpath))
                continue
            yield dirpath, dirnames, filenames

    monkeypatch.setattr(scan.os, "walk", walk)
    report = eng.index(folder, workers=0)
    assert dict(report.failed) == {
        str(folder / "sub") + os.sep: "cannot list folder: Permission denied"
    }
    assert report.deleted == 0 and eng.status().indexed == 2


# -- query side ------------------------------------------------------------------------------


@pytest.fixture
def indexed(tmp_path, photos, tiny_clip):
    eng = Engine(tmp_path / "coll", model=tiny_clip)
    eng.index(photos, workers=0)
    return eng


@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
def test_empty_query_is_a_clear_error(indexed, tmp_path, text):
    with pytest.raises(QueryError, match="empty"):
        indexed.search(text=text)
    r = CliRunner().invoke(main, ["--db", str(tmp_path / "coll"), "query", text])
    assert r.exit_code == 2 and "Error: the query is empty" in r.output


def test_very_long_query_is_truncated_and_works(indexed, tmp_path):
    text = " ".join(["a red car parked on a sunny street"] * 400)  # thousands of tokens
    hits = indexed.search(text=text, k=3)
    assert len(hits) == 3
    r = CliRunner().invoke(main, ["--db", str(tmp_path / "coll"), "query", text, "-n", "2"])
    assert r.exit_code == 0 and len(r.output.strip().splitlines()) == 2


def test_query_image_that_is_not_an_image(indexed, tmp_path):
    fake = tmp_path / "fake.jpg"
    fake.write_text("not a picture")
    with pytest.raises(QueryError, match=r"cannot read query image .*not an image"):
        indexed.search(image=fake)
    with pytest.raises(QueryError, match="No such file"):
        indexed.search(image=tmp_path / "missing.jpg")
    (tmp_path / "bomb.png").write_bytes(bomb_png())
    with pytest.raises(QueryError, match="decompression bomb"):
        indexed.search(image=tmp_path / "bomb.png")
    r = CliRunner().invoke(main, ["--db", str(tmp_path / "coll"), "query", "--image", str(fake)])
    assert r.exit_code == 2 and "Error: cannot read query image" in r.output
    assert "Traceback" not in r.output
