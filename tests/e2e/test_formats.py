"""Every common image format, generated here: decoded right, indexed, found again."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image, features

from vtsearch import Engine, config
from vtsearch.images import HEIF, load_image

COLOURS = [(200, 30, 30), (30, 160, 40), (40, 60, 210), (220, 200, 30), (150, 40, 160)]

#: (file name, Pillow format, save options); AVIF only where this Pillow writes it.
FORMATS = [
    ("photo.jpg", "JPEG", {"quality": 95}),
    ("photo.jpeg", "JPEG", {"quality": 95}),
    ("PHOTO.JPG", "JPEG", {"quality": 95}),
    ("photo.png", "PNG", {}),
    ("photo.webp", "WEBP", {"quality": 95}),
    ("photo.bmp", "BMP", {}),
    ("photo.tif", "TIFF", {}),
    ("photo.tiff", "TIFF", {"compression": "tiff_lzw"}),
    ("photo.heic", "HEIF", {"quality": 95}),
    ("photo.heif", "HEIF", {"quality": 95}),
    ("photo.avif", "AVIF", {"quality": 95}),
]


def picture(i: int) -> Image.Image:
    """A flat colour with a distinct pattern, so each file is its own nearest neighbour."""
    rng = np.random.default_rng(i)
    a = np.empty((48, 64, 3), np.uint8)
    a[:] = COLOURS[i % len(COLOURS)]
    a[8:40, 8:56] = rng.integers(0, 256, 3)
    return Image.fromarray(a)


def write_all(folder) -> dict[str, Image.Image]:
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for i, (name, fmt, opts) in enumerate(FORMATS):
        if fmt == "AVIF" and not features.check("avif"):
            continue
        img = picture(i)
        img.save(folder / name, fmt, **opts)
        written[name] = img
    # GIF: two frames, the first is the image.
    first, second = picture(20), picture(21)
    first.save(folder / "anim.gif", save_all=True, append_images=[second], duration=100, loop=0)
    written["anim.gif"] = first
    return written


def test_the_formats_are_the_default_extensions():
    for name, _, _ in FORMATS:
        assert os.path.splitext(name)[1].lower() in config.DEFAULT_EXTENSIONS
    assert ".gif" in config.DEFAULT_EXTENSIONS
    assert HEIF, "pillow-heif is a dependency and registers the HEIC/HEIF opener"


def test_each_format_decodes_to_its_pixels(tmp_path):
    written = write_all(tmp_path)
    for name, img in written.items():
        got = load_image(str(tmp_path / name))
        assert got.size == img.size and got.image.mode == "RGB", name
        want = np.asarray(img, dtype=np.int16)
        diff = np.abs(np.asarray(got.image, dtype=np.int16) - want)
        # Lossless formats exactly, lossy ones (JPEG, WebP, HEIC, AVIF, GIF's palette) closely.
        assert np.median(diff) <= 6, (name, np.median(diff))


def test_every_format_is_indexed_and_found_by_itself(tmp_path, tiny_clip):
    folder = tmp_path / "photos"
    written = write_all(folder)
    eng = Engine(tmp_path / "coll", model=tiny_clip)
    report = eng.index(folder, workers=0)
    assert report.failed == []
    assert report.embedded == len(written)
    status = eng.status()
    assert status.indexed == len(written)
    for name in written:
        top = eng.search(image=folder / name, k=1)[0]
        assert os.path.basename(top.path) == name


def test_avif_where_pillow_supports_it(tmp_path):
    if not features.check("avif"):
        pytest.skip("this Pillow was built without AVIF (Pillow >= 11.2 wheels have it)")
    picture(0).save(tmp_path / "x.avif", "AVIF")
    assert load_image(str(tmp_path / "x.avif")).format == "AVIF"
