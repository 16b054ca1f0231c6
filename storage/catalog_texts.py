"""The collection's text set (captions, labels) as part of the catalog."""

from __future__ import annotations

import time
from collections.abc import Iterable

import numpy as np
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from vtsearch.storage.records import StoredText
from vtsearch.storage.schema import TextRow, TextTombstone
from vtsearch.storage.sqlite import writes


class TextRows:
    """Catalog methods for texts (mixed into ``Catalog``)."""

    def known_texts(self, texts: Iterable[str]) -> set[str]:
        wanted = list(set(texts))
        found: set[str] = set()
        with Session(self.engine) as s:
            for i in range(0, len(wanted), 500):
                found.update(
                    s.scalars(select(TextRow.text).where(TextRow.text.in_(wanted[i : i + 500])))
                )
        return found

    @writes
    def add_texts(self, texts: list[str], vectors: np.ndarray, source: str | None) -> list[int]:
        """Insert texts with their vectors in one transaction; returns their ids."""
        now = time.time()
        with Session(self.engine) as s, s.begin():
            seq = self._next_seq(s)
            rows = [
                TextRow(
                    text=t,
                    source=source,
                    vector=np.ascontiguousarray(v, np.float32).tobytes(),
                    vec_seq=seq,
                    added_at=now,
                )
                for t, v in zip(texts, vectors, strict=True)
            ]
            s.add_all(rows)
            s.flush()
            return [r.id for r in rows]

    def texts(self, ids: Iterable[int], vectors: bool = False) -> dict[int, StoredText]:
        """Texts by id, in one query (a removed text is absent); ``vectors``: with their stored
        vectors, for re-scoring and priors."""
        ids = list(ids)
        cols = [TextRow.id, TextRow.text, TextRow.source]
        if vectors:
            cols.append(TextRow.vector)
        with Session(self.engine) as s:
            return {
                row[0]: StoredText(
                    row[1], row[2], np.frombuffer(row[3], dtype=np.float32) if vectors else None
                )
                for row in s.execute(select(*cols).where(TextRow.id.in_(ids)))
            }

    def text_count(self) -> int:
        with Session(self.engine) as s:
            return int(s.scalar(select(func.count()).select_from(TextRow)) or 0)

    @writes
    def remove_texts(self, source: str | None = None) -> int:
        """Remove the texts added from ``source`` (all texts when None); returns how many."""
        with Session(self.engine) as s, s.begin():
            stmt = select(TextRow.id)
            if source is not None:
                stmt = stmt.where(TextRow.source == source)
            ids = list(s.scalars(stmt))
            if not ids:
                return 0
            seq = self._next_seq(s)
            for row_id in ids:
                s.merge(TextTombstone(id=row_id, seq=seq))
            for i in range(0, len(ids), 500):
                s.execute(delete(TextRow).where(TextRow.id.in_(ids[i : i + 500])))
            return len(ids)
