"""What a search returns."""

from __future__ import annotations

import base64
import math
import os
from dataclasses import asdict, dataclass, field
from datetime import datetime

#: The score fields of a result: a score that is not a finite number (BLIP's ``-inf`` for a file
#: that can no longer be read) becomes None in ``to_dict``, so the dict is strict JSON.
SCORE_FIELDS = ("score", "bi_score", "rerank_score", "prior")


def _finite_scores(d: dict) -> dict:
    for name in SCORE_FIELDS:
        v = d.get(name)
        if v is not None and not math.isfinite(v):
            d[name] = None
    return d


def path_fields(path: str) -> dict[str, str]:
    """``path`` as JSON can carry it: a path that is not valid UTF-8 (a file name in another
    encoding, which Python holds with lone surrogates) becomes a readable ``path`` with
    replacement characters and ``path_b64``, the base64 of its exact bytes."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        raw = os.fsencode(path)
        return {
            "path": raw.decode("utf-8", errors="replace"),
            "path_b64": base64.b64encode(raw).decode("ascii"),
        }
    return {"path": path}


def relative_path(path: str, root: str | None) -> str:
    """``path`` inside ``root`` with "/" between its parts (the whole path when it has no root),
    valid UTF-8 (a name that is not shows replacement characters)."""
    rel = os.path.relpath(path, root) if root else path
    if os.sep != "/":
        rel = rel.replace(os.sep, "/")
    return os.fsencode(rel).decode("utf-8", errors="replace")


@dataclass
class Result:
    """One hit: the catalog id, the file, and its score.

    ``score`` orders the results; ``bi_score`` is the bi-encoder similarity, ``rerank_score``
    the re-ranker's own score (None when not re-ranked, or when the re-ranker's weights leave its
    scorer off for this direction) and ``prior`` the query-bank prior subtracted (None when the
    results were not re-ranked). ``root`` is the indexed folder that holds the file.
    """

    id: int
    path: str
    score: float
    width: int | None = None
    height: int | None = None
    taken_at: datetime | None = None
    bi_score: float | None = None
    rerank_score: float | None = None
    prior: float | None = None
    root: str | None = None

    def to_dict(self) -> dict:
        """Fields for JSON: strict (non-finite scores are None) and valid UTF-8 (see
        :func:`path_fields` for a path that is not)."""
        d = asdict(self)
        d["taken_at"] = self.taken_at.isoformat() if self.taken_at else None
        d.update(path_fields(self.path))
        if self.root is not None:
            d["root"] = os.fsencode(self.root).decode("utf-8", errors="replace")
        return _finite_scores(d)


@dataclass
class ImageInfo:
    """An indexed image's catalog metadata (``Engine.image``)."""

    id: int
    path: str
    root: str | None
    width: int | None
    height: int | None
    taken_at: datetime | None
    format: str | None
    #: Size of the file when it was indexed.
    bytes: int
    #: Zero-shot tags (``vtsearch tag``), most likely first.
    tags: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return os.path.basename(self.path)


@dataclass
class TextResult:
    """One text of the collection's text set, matched to a query image."""

    id: int
    text: str
    score: float
    source: str | None = None
    bi_score: float | None = None
    rerank_score: float | None = None
    prior: float | None = None

    def to_dict(self) -> dict:
        """Fields for JSON; non-finite scores are None."""
        return _finite_scores(asdict(self))
