"""The catalog's history: a sequence number per commit with a random mark, the vectors written
and removed since a number (what a stale FAISS file replays), and removed ids (what the token
cache drops)."""

from __future__ import annotations

import secrets

from sqlalchemy import Connection, select
from sqlalchemy.orm import Session

from vtsearch.storage.schema import Commit, ImageRow, Meta, TextRow, TextTombstone, Tombstone


class History:
    """Catalog methods for sequence numbers and changes (mixed into ``Catalog``)."""

    def changes_since(
        self, seq: int, kind: str = "image"
    ) -> tuple[int, list[tuple[int, int, bytes]], list[tuple[int, int]]]:
        """Vectors written and removed after ``seq``, read in one snapshot.

        ``kind`` is ``"image"`` or ``"text"``. Returns ``(current_seq, [(id, vec_seq, vector)],
        [(id, tombstone_seq)])``.
        """
        current, _, added, removed = self.changes_marked(seq, kind)
        return current, added, removed

    def current_seq(self) -> int:
        return self.head()[0]

    def head(self) -> tuple[int, str | None]:
        """The current sequence number and its mark (None in catalogs older than schema 2)."""
        self.refresh_if_stale()
        with Session(self.engine) as s:
            return read_head(s)

    def mark_at(self, seq: int) -> str | None:
        """The mark this catalog gave sequence number ``seq``, or None when it has none."""
        with Session(self.engine) as s:
            return s.scalar(select(Commit.mark).where(Commit.seq == seq))

    def changes_marked(
        self, seq: int, kind: str = "image"
    ) -> tuple[int, str | None, list[tuple[int, int, bytes]], list[tuple[int, int]]]:
        """:meth:`changes_since`, with the mark of the returned sequence number (one snapshot)."""
        if kind == "image":
            row, tomb, live = ImageRow, Tombstone, ImageRow.status == "indexed"
        else:
            row, tomb, live = TextRow, TextTombstone, True
        with Session(self.snapshot) as s, s.begin():
            current, mark = read_head(s)
            added = s.execute(
                select(row.id, row.vec_seq, row.vector).where(row.vec_seq > seq, live)
            ).all()
            removed = s.execute(select(tomb.id, tomb.seq).where(tomb.seq > seq)).all()
        return current, mark, [tuple(a) for a in added], [tuple(r) for r in removed]

    def dead_since(self, seq: int) -> tuple[int, list[int]]:
        """Ids whose vector was removed after ``seq`` and that are not live again, and the
        current sequence number, read in one snapshot."""
        with Session(self.snapshot) as s, s.begin():
            current = s.scalar(select(Meta.value).where(Meta.key == "seq"))
            live = select(ImageRow.id).where(ImageRow.status == "indexed")
            ids = s.scalars(
                select(Tombstone.id).where(Tombstone.seq > seq, Tombstone.id.not_in(live))
            ).all()
        return (int(current) if current else 0), list(ids)

    def _next_seq(self, s: Session) -> int:
        """The number of the commit ``s`` is making. On a server several writers may commit at
        once: the ``seq`` row stays locked until this one commits, so commits become visible in
        the order of their numbers, and a reader that synced to ``n`` never misses a later
        commit numbered below it."""
        row = s.get(Meta, "seq", with_for_update=True)
        nxt = int(row.value) + 1 if row else 1
        mark = secrets.token_hex(8)
        s.merge(Meta(key="seq", value=str(nxt)))
        s.merge(Meta(key="mark", value=mark))
        s.merge(Commit(seq=nxt, mark=mark))
        return nxt


def read_head(s: Session | Connection) -> tuple[int, str | None]:
    """The sequence number and mark a session or connection sees."""
    got = dict(s.execute(select(Meta.key, Meta.value).where(Meta.key.in_(("seq", "mark")))).all())
    return (int(got["seq"]) if got.get("seq") else 0), got.get("mark")
