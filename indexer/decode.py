"""Decode image files in DataLoader workers; a file that fails becomes a recorded error."""

from __future__ import annotations

import signal
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import torch
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset

# Refuse decompression bombs (PIL raises above twice this) instead of exhausting memory.
Image.MAX_IMAGE_PIXELS = 120_000_000
_EXIF_DATETIME = (ExifTags.Base.DateTimeOriginal, ExifTags.Base.DateTime)


@dataclass
class Decoded:
    index: int
    pixels: torch.Tensor | None
    width: int | None = None
    height: int | None = None
    format: str | None = None
    taken_at: datetime | None = None
    error: str | None = None


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


def load_image(path: str, target: int | None = None) -> Loaded:
    """Open, orient and convert one image to RGB, with its original size, format and EXIF time.

    ``target`` lets JPEG decode at a reduced scale (DCT scaling) when the image is much larger.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        img = Image.open(path)
        fmt = img.format or "?"
        size = img.size
        taken = _taken_at(img)
        if target and fmt == "JPEG":
            # draft() picks the smallest DCT scale that stays >= the requested size.
            img.draft("RGB", (target, target))
        img.load()
    img = ImageOps.exif_transpose(img)
    if img.mode != "RGB":
        # Palette/alpha images are composited on white so transparency does not turn black.
        if img.mode in ("RGBA", "LA", "P", "PA"):
            rgba = img.convert("RGBA")
            bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            img = Image.alpha_composite(bg, rgba).convert("RGB")
        else:
            img = img.convert("RGB")
    return Loaded(img, size, fmt, taken)


def describe_error(e: BaseException) -> str:
    if isinstance(e, UnidentifiedImageError):
        return "not a recognised image format"
    if isinstance(e, Image.DecompressionBombError | Image.DecompressionBombWarning):
        return f"refused as a decompression bomb: {e}"
    if isinstance(e, OSError) and e.strerror:
        return f"{e.strerror}"
    return f"{type(e).__name__}: {e}"


class ImageFiles(Dataset):
    """Decodes ``paths[i]`` with ``transform``; never raises, so one bad file cannot stop a run."""

    def __init__(
        self,
        paths: list[str],
        transform: Callable[[Image.Image], torch.Tensor],
        target: int | None = 256,
    ) -> None:
        self.paths = paths
        self.transform = transform
        self.target = target

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Decoded:
        try:
            got = load_image(self.paths[i], self.target)
            w, h = got.size
            return Decoded(i, self.transform(got.image), w, h, got.format, got.taken_at)
        except Exception as e:  # any decoder failure is data, not a crash
            return Decoded(i, None, error=describe_error(e))


def _collate(items: list[Decoded]) -> tuple[torch.Tensor | None, list[Decoded]]:
    good = [d.pixels for d in items if d.pixels is not None]
    return (torch.stack(good) if good else None), items


def _ignore_sigint(_worker_id: int) -> None:
    # Ctrl-C reaches the whole process group; only the main process decides when to stop (after
    # the current batch), so a worker must not die of it while that batch is still being decoded.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def decode_loader(
    paths: list[str],
    transform: Callable[[Image.Image], torch.Tensor],
    batch_size: int,
    workers: int,
    pin_memory: bool = False,
) -> DataLoader:
    """Batches of ``(pixels of the good files, [Decoded per file])`` in path order."""
    return DataLoader(
        ImageFiles(paths, transform),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=_collate,
        pin_memory=pin_memory,
        persistent_workers=False,
        worker_init_fn=_ignore_sigint if workers > 0 else None,
        prefetch_factor=4 if workers > 0 else None,
    )
