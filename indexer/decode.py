"""Decode image files in batches, in threads that take turns with the model (CPU) or worker
processes ahead of it (GPU); a file that fails becomes a recorded error. Reading one image is
``vtsearch.images``."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from vtsearch.images import DECODE_TARGET, describe_error, load_image


@dataclass
class Decoded:
    index: int
    pixels: torch.Tensor | None
    width: int | None = None
    height: int | None = None
    format: str | None = None
    taken_at: datetime | None = None
    error: str | None = None


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


def collate(items: list[Decoded]) -> tuple[torch.Tensor | None, list[Decoded]]:
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
        collate_fn=collate,
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
                yield collate([self.files[i] for i in self._part(start)])
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
                        yield collate([f.result() for f in batch])
                finally:
                    self._pool = None
                    if self._ahead:  # the consumer stopped early: drop the batch decoded for it
                        for f in self._ahead:
                            f.cancel()
        finally:
            torch.set_num_threads(consumer_threads)
