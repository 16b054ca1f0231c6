"""What a search returns."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime


@dataclass
class Result:
    """One hit: the catalog id, the file, and the bi-encoder similarity."""

    id: int
    path: str
    score: float
    width: int | None = None
    height: int | None = None
    taken_at: datetime | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["taken_at"] = self.taken_at.isoformat() if self.taken_at else None
        return d


@dataclass
class TextResult:
    """One text of the collection's text set, matched to a query image."""

    id: int
    text: str
    score: float
    source: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)
