"""The folders indexed into a collection (its roots), as part of the catalog."""

from __future__ import annotations

import time

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from vtsearch.storage.records import is_under
from vtsearch.storage.schema import Root
from vtsearch.storage.sqlite import writes


class RootRows:
    """Catalog methods for roots (mixed into ``Catalog``)."""

    def roots(self) -> list[str]:
        """The folders indexed into this collection, sorted."""
        with Session(self.engine) as s:
            return sorted(s.scalars(select(Root.path)))

    @writes
    def add_root(self, path: str) -> None:
        """Record ``path`` as indexed, unless a root holds it; roots inside it are dropped (it
        covers them)."""
        with Session(self.engine) as s, s.begin():
            roots = s.scalars(select(Root.path)).all()
            if any(is_under(path, old) for old in roots):
                return
            for old in roots:
                if is_under(old, path):
                    s.execute(delete(Root).where(Root.path == old))
            s.add(Root(path=path, added_at=time.time()))

    @writes
    def forget_root(self, path: str) -> int:
        """Drop a root and every row under it (their vectors tombstoned); returns the rows."""
        ids = [r.id for r in self.records(under=path).values()]
        self.remove(ids)
        with Session(self.engine) as s, s.begin():
            s.execute(delete(Root).where(Root.path == path))
        return len(ids)

    def count_under(self, path: str) -> int:
        return len(self.records(under=path))
