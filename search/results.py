"""What a search returns."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime


@dataclass
class Result:
    """One hit: the catalog id, the file, and its score.

    ``score`` orders the results; ``bi_score`` is the bi-encoder similarity, ``rerank_score``
    the re-ranker's own score (None when not re-ranked, or when the re-ranker's weights leave its
    scorer off for this direction) and ``prior`` the query-bank prior subtracted (None when the
    results were not re-ranked).
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
    bi_score: float | None = None
    rerank_score: float | None = None
    prior: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)
