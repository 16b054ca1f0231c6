"""Where collections live and which model is used by default."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_MODEL = "vtsearch-lite"
#: What ``vtsearch index`` picks up (case-insensitive). HEIC/HEIF decode through pillow-heif, AVIF
#: through Pillow itself (11.2 and later); a file of a format this install cannot read is recorded
#: as failed with the reason.
DEFAULT_EXTENSIONS = (
    ".jpg",
    ".jpeg",
    ".jpe",
    ".jfif",
    ".png",
    ".webp",
    ".gif",
    ".bmp",
    ".tif",
    ".tiff",
    ".heic",
    ".heif",
    ".avif",
)
#: Files larger than this are skipped as "too large" before any decode is attempted.
DEFAULT_MAX_FILE_BYTES = 200 * 1024 * 1024


def home() -> Path:
    """The folder holding collections: ``$VTSEARCH_HOME`` or the user data dir."""
    env = os.environ.get("VTSEARCH_HOME")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("vtsearch", appauthor=False))


def cache_dir() -> Path:
    """Per-machine derived files (e.g. the traced text tower): ``$VTSEARCH_CACHE`` or the user
    cache dir. Separate from :func:`home`, so many collection homes share one cache."""
    env = os.environ.get("VTSEARCH_CACHE")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("vtsearch", appauthor=False))


def default_collection() -> Path:
    return home() / "default"


def model_name(explicit: str | None = None) -> str:
    """The model asked for: an explicit name, else ``$VTSEARCH_MODEL``, else the default."""
    return explicit or os.environ.get("VTSEARCH_MODEL") or DEFAULT_MODEL


def checkpoint_seconds() -> float:
    """How often (at most) an indexing run re-saves the FAISS file: ``$VTSEARCH_CHECKPOINT_SECONDS``
    or 30. Readers replay the catalog changes since the last save, so this only bounds that work."""
    return float(os.environ.get("VTSEARCH_CHECKPOINT_SECONDS", "30"))


def commit_images() -> int:
    """Fewest images an indexing run commits in one transaction: ``$VTSEARCH_COMMIT_IMAGES`` or
    32. A commit and the index sync after it cost about 6 ms whatever the number of rows (a tenth
    of a CPU forward pass of 8 images); a killed run loses at most the group it was building."""
    return max(1, int(os.environ.get("VTSEARCH_COMMIT_IMAGES", "32")))
