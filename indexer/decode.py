"""Decode image files in batches, in threads or worker processes; a file that fails becomes a
recorded error.

Formats: whatever this Pillow opens (JPEG, PNG, WebP, GIF, BMP, TIFF, and AVIF in Pillow >= 11.2),
plus HEIC/HEIF through pillow-heif when it is installed. Every image comes out as 8-bit RGB with
its EXIF orientation applied: CMYK, 16-bit, float, palette and alpha images included.
"""

from __future__ import annotations

import errno
import signal
import threading
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import torch
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset

try:  # HEIC/HEIF (iPhone photos): an optional opener registered with Pillow
    from pillow_heif import register_heif_opener

    register_heif_opener()
    HEIF = True
except ImportError:  # pragma: no cover - pillow-heif is a dependency; a bare install still runs
    HEIF = False

#: Most pixels an image may decode to; beyond it the file is refused as a decompression bomb. A
#: large JPEG is decoded at a reduced scale (DCT scaling), so only what is decoded counts.
MAX_DECODE_PIXELS = 120_000_000
#: Most pixels a header may declare at all (Pillow refuses twice this before reading any data).
MAX_DECLARED_PIXELS = 1_000_000_000
Image.MAX_IMAGE_PIXELS = MAX_DECLARED_PIXELS // 2
_EXIF_DATETIME = (ExifTags.Base.DateTimeOriginal, ExifTags.Base.DateTime)


class DecompressionBomb(Exception):
    """An image whose decode would need more than ``MAX_DECODE_PIXELS`` pixels."""


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


#: Serialises Image.open under warnings.catch_warnings, which is not thread-safe.
_OPEN_LOCK = threading.Lock()

#: Smallest side a JPEG is decoded to (by DCT scaling) before the model's own resize: indexing
#: and image queries use the same, so a photo and a query of that photo embed alike.
DECODE_TARGET = 256


def load_image(path: str, target: int | None = None) -> Loaded:
    """Open, orient and convert one image to RGB, with its displayed size, format and EXIF time.

    ``target`` lets JPEG decode at a reduced scale (DCT scaling) when the image is much larger, so
    a huge photo is resized while it is decoded instead of being refused. The first frame of an
    animation (GIF, WebP) or the first page of a TIFF is the image.

    Raises:
        DecompressionBomb: the decode would need more than ``MAX_DECODE_PIXELS`` pixels.
        OSError, ValueError, ...: a file Pillow cannot read (see ``describe_error``).
    """
    with _OPEN_LOCK, warnings.catch_warnings():
        # Bombs are refused below, by what would be decoded rather than by what is declared.
        # The filters are process-wide and catch_warnings is not thread-safe: decode threads
        # take turns here, for the header only (Pillow warns at open; decoding comes after).
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        img = Image.open(path)
    fmt = img.format or "?"
    size = img.size
    taken = _taken_at(img)
    if target and fmt == "JPEG":
        # draft() picks the smallest DCT scale that stays >= the requested size.
        img.draft("RGB", (target, target))
    w, h = img.size
    if w * h > MAX_DECODE_PIXELS:
        raise DecompressionBomb(
            f"{size[0]}x{size[1]} pixels would need {w * h:,} decoded pixels, more than the "
            f"limit of {MAX_DECODE_PIXELS:,}"
        )
    img.load()
    img, size = _orient(img, size)
    return Loaded(_to_rgb(img), size, fmt, taken)


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


class ImageFiles(Dataset):
    """Decodes ``paths[i]`` with ``transform``; never raises, so one bad file cannot stop a run."""

    def __init__(
        self,
        paths: list[str],
        transform: Callable[[Image.Image], torch.Tensor],
        target: int | None = DECODE_TARGET,
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
            return Decoded(i, None, error=describe_error(e, self.paths[i]))


def _collate(items: list[Decoded]) -> tuple[torch.Tensor | None, list[Decoded]]:
    good = [d.pixels for d in items if d.pixels is not None]
    return (torch.stack(good) if good else None), items


def _ignore_sigint(_worker_id: int) -> None:
    # Ctrl-C reaches the whole process group; only the main process decides when to stop (after
    # the current batch), so a worker must not die of it while that batch is still being decoded.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


#: One batch: the pixels of the files that decoded (``None`` if none did), and every file's result.
Batch = tuple[torch.Tensor | None, list[Decoded]]


def decode_loader(
    paths: list[str],
    transform: Callable[[Image.Image], torch.Tensor],
    batch_size: int,
    workers: int,
    pin_memory: bool = False,
) -> DataLoader:
    """Batches of ``(pixels of the good files, [Decoded per file])`` in path order, decoded by
    ``workers`` processes ahead of the consumer (the GPU path: decode overlaps the model)."""
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


def _one_torch_thread() -> None:
    # The transform's tensor ops would otherwise start an OpenMP team per decode thread, whose
    # threads spin on after each op and take the cores from the model's own team (the model ran
    # 10-15% slower between decodes).
    torch.set_num_threads(1)


class DecodeInTurns:
    """The same batches as ``decode_loader``, decoded by ``threads`` threads in turns with the
    consumer (the CPU path).

    On a CPU the model's own threads already fill every core: decoding alongside them (in worker
    processes) preempts them and slows every forward pass, and each batch crosses a process
    boundary. Here a batch is decoded only while the model is idle: when the consumer asks for
    it, or, earlier, when it calls ``decode_next`` once its forward pass is done and it turns to
    work of its own (writing the batch). Pillow releases the GIL while it decodes and resizes, so
    the threads decode in parallel. ``threads=0`` decodes in the consumer's thread.
    """

    def __init__(
        self,
        paths: list[str],
        transform: Callable[[Image.Image], torch.Tensor],
        batch_size: int,
        threads: int,
    ) -> None:
        self.files = ImageFiles(paths, transform)
        self.batch_size = batch_size
        self.threads = threads
        self._starts = iter(range(0, len(paths), batch_size))
        self._pool: ThreadPoolExecutor | None = None
        self._ahead: list[Future[Decoded]] | None = None

    def _part(self, start: int) -> range:
        return range(start, min(start + self.batch_size, len(self.files)))

    def decode_next(self) -> None:
        """Start decoding the next batch in the background, if it is not already under way."""
        if self._pool is None or self._ahead is not None:
            return
        start = next(self._starts, None)
        if start is not None:
            self._ahead = [self._pool.submit(self.files.__getitem__, i) for i in self._part(start)]

    def __iter__(self) -> Iterator[Batch]:
        if self.threads <= 0:
            for start in self._starts:
                yield _collate([self.files[i] for i in self._part(start)])
            return
        # torch.set_num_threads in a decode thread also sets the default that threads started
        # later take up: the consumer's own count is put back once the decode threads are gone.
        consumer_threads = torch.get_num_threads()
        try:
            with ThreadPoolExecutor(
                self.threads, thread_name_prefix="vtsearch-decode", initializer=_one_torch_thread
            ) as pool:
                self._pool = pool
                try:
                    while True:
                        self.decode_next()
                        if self._ahead is None:
                            return
                        batch, self._ahead = self._ahead, None
                        yield _collate([f.result() for f in batch])
                finally:
                    self._pool = None
                    if self._ahead:  # the consumer stopped early: drop the batch decoded for it
                        for f in self._ahead:
                            f.cancel()
        finally:
            torch.set_num_threads(consumer_threads)
