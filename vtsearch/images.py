"""Image files as every part of vtsearch reads them: open, EXIF orientation and time, JPEG draft
scale, 8-bit RGB out of any mode, the decompression-bomb guard, and a short reason for a file
that cannot be read.

Formats: whatever this Pillow opens (JPEG, PNG, WebP, GIF, BMP, TIFF, and AVIF in Pillow >= 11.2),
plus HEIC/HEIF through pillow-heif when it is installed. Every image comes out as 8-bit RGB with
its EXIF orientation applied: CMYK, 16-bit, float, palette and alpha images included.
"""

from __future__ import annotations

import errno
import io
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import BinaryIO

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

try:  # HEIC/HEIF (iPhone photos): an optional opener registered with Pillow
    from pillow_heif import register_heif_opener

    register_heif_opener()
    HEIF = True
except ImportError:  # pragma: no cover - pillow-heif is a dependency; a bare install still runs
    HEIF = False

#: Most pixels an image may decode to; beyond it the file is refused as a decompression bomb. A
#: large JPEG is decoded at a reduced scale (DCT scaling), so only what is decoded counts.
MAX_DECODE_PIXELS = 120_000_000
#: Most pixels an uploaded query image may decode to (a 485 KB PNG can declare 120 million,
#: gigabytes once decoded; a server takes many uploads at once). 40 MP: any camera's photo, and
#: its JPEG decodes at a reduced scale anyway.
MAX_QUERY_PIXELS = 40_000_000
#: Most pixels a header may declare at all (Pillow refuses twice this before reading any data).
MAX_DECLARED_PIXELS = 1_000_000_000
Image.MAX_IMAGE_PIXELS = MAX_DECLARED_PIXELS // 2
_EXIF_DATETIME = (ExifTags.Base.DateTimeOriginal, ExifTags.Base.DateTime)


class DecompressionBomb(Exception):
    """An image whose decode would need more than ``MAX_DECODE_PIXELS`` pixels."""


def _taken_at(img: Image.Image) -> datetime | None:
    try:
        exif = img.getexif()
        exif_ifd = exif.get_ifd(ExifTags.IFD.Exif)
    except Exception:
        return None
    for tag in _EXIF_DATETIME:
        raw = exif_ifd.get(tag) or exif.get(tag)
        if isinstance(raw, str):
            try:
                return datetime.strptime(raw.strip("\x00 "), "%Y:%m:%d %H:%M:%S")
            except ValueError:
                continue
    return None


@dataclass
class Loaded:
    image: Image.Image
    size: tuple[int, int]
    format: str
    taken_at: datetime | None


#: Serialises Image.open under warnings.catch_warnings, which is not thread-safe.
_OPEN_LOCK = threading.Lock()

#: Smallest side a JPEG is decoded to (by DCT scaling) before the model's own resize: indexing
#: and image queries use the same, so a photo and a query of that photo embed alike.
DECODE_TARGET = 256


#: The formats an image that arrives from elsewhere (a query image sent to the server) may be
#: in: the photo formats vtsearch indexes, none of Pillow's rarer decoders (EPS, which runs
#: Ghostscript, among them).
QUERY_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "HEIF", "AVIF")


def load_image(
    path: str | BinaryIO,
    target: int | None = None,
    formats: Sequence[str] | None = None,
    max_pixels: int = MAX_DECODE_PIXELS,
) -> Loaded:
    """Open, orient and convert one image to RGB, with its displayed size, format and EXIF time.

    ``target`` lets JPEG decode at a reduced scale (DCT scaling) when the image is much larger, so
    a huge photo is resized while it is decoded instead of being refused. The first frame of an
    animation (GIF, WebP) or the first page of a TIFF is the image. ``path`` may be an open binary
    file; ``formats`` limits the decoders tried (e.g. :data:`QUERY_FORMATS`); ``max_pixels``
    lowers the bomb guard (e.g. :data:`MAX_QUERY_PIXELS` for uploads).

    Raises:
        DecompressionBomb: the decode would need more than ``max_pixels`` pixels.
        OSError, ValueError, ...: a file Pillow cannot read (see ``describe_error``).
    """
    with _OPEN_LOCK, warnings.catch_warnings():
        # Bombs are refused below, by what would be decoded rather than by what is declared.
        # The filters are process-wide and catch_warnings is not thread-safe: decode threads
        # take turns here, for the header only (Pillow warns at open; decoding comes after).
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        if formats is not None:
            Image.init()
            formats = [f for f in formats if f in Image.OPEN]
        img = Image.open(path, formats=formats)
    fmt = img.format or "?"
    size = img.size
    taken = _taken_at(img)
    if target and fmt == "JPEG":
        # draft() picks the smallest DCT scale that stays >= the requested size.
        img.draft("RGB", (target, target))
    w, h = img.size
    if w * h > max_pixels:
        raise DecompressionBomb(
            f"{size[0]}x{size[1]} pixels would need {w * h:,} decoded pixels, more than the "
            f"limit of {max_pixels:,}"
        )
    img.load()
    img, size = _orient(img, size)
    return Loaded(_to_rgb(img), size, fmt, taken)


#: Longest side of a thumbnail.
THUMB_SIZE = 256


def thumbnail(path: str, size: int = THUMB_SIZE, quality: int = 85) -> bytes:
    """A JPEG of the image at ``path`` whose longest side is at most ``size`` pixels, oriented as
    displayed; a large JPEG is decoded at a reduced scale, and the bomb guard applies.

    Raises:
        DecompressionBomb, OSError, ...: as :func:`load_image`.
    """
    img = load_image(path, size).image
    img.thumbnail((size, size), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    img.save(out, "JPEG", quality=quality, optimize=True)
    return out.getvalue()


def _orient(img: Image.Image, size: tuple[int, int]) -> tuple[Image.Image, tuple[int, int]]:
    """Apply the EXIF orientation; the size reported is the displayed one."""
    before = img.size
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # a broken EXIF block is no reason to lose the picture
        return img, size
    if img.size != before and img.size == before[::-1]:
        size = (size[1], size[0])
    return img, size


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode.startswith("I") or img.mode == "F":
        # 16-bit and float images: Pillow's own conversion clips them to white; scale instead.
        a = np.nan_to_num(np.asarray(img, dtype=np.float64))
        if img.mode.startswith("I;16") or (img.mode == "I" and a.max(initial=0) > 255):
            a = a / 257.0
        elif img.mode == "F" and a.max(initial=0) <= 1.0:
            a = a * 255.0
        img = Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L")
    if img.mode in ("RGBA", "LA", "P", "PA", "RGBa", "La"):
        # Palette/alpha images are composited on white so transparency does not turn black.
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(bg, rgba).convert("RGB")
    return img.convert("RGB")


#: Leading bytes of the formats we read, to tell a damaged image from a file that is none.
_MAGIC = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF8", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)


def sniff_format(path: str) -> str | None:
    """The format a file's first bytes claim (JPEG, PNG, ...), or None."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError:
        return None
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    if head[4:8] == b"ftyp":
        return "AVIF" if head[8:12] in (b"avif", b"avis") else "HEIF"
    return None


def describe_error(e: BaseException, path: str | None = None) -> str:
    """A short reason for a file that could not be decoded, as recorded in the catalog."""
    if isinstance(e, UnidentifiedImageError):
        claimed = sniff_format(path) if path else None
        if claimed == "HEIF" and not HEIF:
            return "HEIC/HEIF image, but pillow-heif is not installed"
        if claimed:
            return f"damaged {claimed} file: its header cannot be read"
        return "not an image (no image format recognised)"
    if isinstance(e, DecompressionBomb):
        return f"refused as a decompression bomb: {e}"
    if isinstance(e, Image.DecompressionBombError | Image.DecompressionBombWarning):
        return f"refused as a decompression bomb: {e}"
    if isinstance(e, OSError) and e.errno == errno.ELOOP:
        return "symbolic link loop"
    if isinstance(e, OSError) and e.strerror:
        return f"{e.strerror}"
    if isinstance(e, OSError | SyntaxError) and str(e):
        # Pillow's words for a damaged file: "image file is truncated", "broken PNG file"...
        return f"damaged image: {e}"
    if isinstance(e, MemoryError):
        return "not enough memory to decode"
    return f"{type(e).__name__}: {e}"
