"""Thumbnails cached on disk: ``thumbs/ID-HASH.jpg`` inside the collection folder, one per image.

A changed file gets a new id, and ids are not reused, except after ``catalog.db`` was restored
from a backup: then new rows take ids the lost history used. So a thumbnail is named by its id and
the first 16 hex digits of the image's content hash, and one of an id that now names other
content is never served. :meth:`ThumbCache.prune` drops those of rows that are gone. The cache is
only a cache: a thumbnail that cannot be written (a full disk, a read-only collection) is simply
not kept.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from vtsearch.storage.files import create_temp

THUMBS_DIR = "thumbs"
_TEMP_PREFIX = ".thumb-"
#: A temporary file older than this is left by a process that died while writing it.
_STALE_TEMP_SECONDS = 3600


class ThumbCache:
    """The thumbnails of one collection folder.

    Example:
        >>> import tempfile
        >>> cache = ThumbCache(Path(tempfile.mkdtemp()))
        >>> cache.put(7, "ab12", b"jpeg bytes"); cache.get(7, "ab12"), cache.get(7, "cd34")
        (b'jpeg bytes', None)
        >>> cache.ids()
        [7]
    """

    def __init__(self, folder: Path) -> None:
        self.dir = folder / THUMBS_DIR

    def path(self, image_id: int, content: str | None) -> Path:
        """Where the thumbnail of ``image_id`` with content hash ``content`` is kept."""
        return self.dir / f"{int(image_id)}-{(content or 'none')[:16]}.jpg"

    def get(self, image_id: int, content: str | None) -> bytes | None:
        try:
            return self.path(image_id, content).read_bytes()
        except OSError:
            return None

    def put(self, image_id: int, content: str | None, data: bytes) -> bool:
        """Keep ``data`` as the thumbnail of ``image_id`` (atomically: a reader never sees half a
        file); False when it could not be written."""
        tmp = None
        try:
            self.dir.mkdir(exist_ok=True)
            tmp = create_temp(self.dir, _TEMP_PREFIX)
            tmp.write_bytes(data)
            os.replace(tmp, self.path(image_id, content))
            return True
        except OSError:
            if tmp is not None:
                tmp.unlink(missing_ok=True)
            return False

    def remove(self, image_ids: Iterable[int]) -> None:
        """Drop every thumbnail of these ids (of any content)."""
        wanted = {int(i) for i in image_ids}
        for name, image_id in self._files():
            if image_id in wanted:
                with contextlib.suppress(OSError):
                    (self.dir / name).unlink(missing_ok=True)

    def ids(self) -> list[int]:
        """Ids that have a cached thumbnail, ascending."""
        return sorted({i for _, i in self._files()})

    def _files(self) -> list[tuple[str, int]]:
        try:
            names = os.listdir(self.dir)
        except OSError:
            return []
        out = []
        for n in names:
            head = n[:-4].split("-", 1)[0]
            if n.endswith(".jpg") and head.isdigit():
                out.append((n, int(head)))
        return out

    def prune(self, live: Callable[[list[int]], set[int]]) -> int:
        """Drop the thumbnails of ids that ``live`` (given cached ids, returns those whose rows
        still exist) leaves out, and temporary files of writes that died; returns how many
        thumbnails went."""
        cached = self.ids()
        keep: set[int] = set()
        for i in range(0, len(cached), 500):
            keep |= live(cached[i : i + 500])
        dead = [i for i in cached if i not in keep]
        self.remove(dead)
        try:
            temps = [self.dir / n for n in os.listdir(self.dir) if n.startswith(_TEMP_PREFIX)]
        except OSError:
            temps = []
        for t in temps:
            with contextlib.suppress(OSError):
                if time.time() - t.stat().st_mtime > _STALE_TEMP_SECONDS:
                    t.unlink()
        return len(dead)
