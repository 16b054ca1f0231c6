"""The catalog's metadata table and the model a collection was indexed with (the schema version
it records is ``migrate``'s)."""

from __future__ import annotations

import time

from sqlalchemy import select
from sqlalchemy.orm import Session

from vtsearch.errors import ModelMismatchError
from vtsearch.storage.schema import Meta
from vtsearch.storage.sqlite import writes


class MetaRows:
    """Catalog methods for metadata and the model (mixed into ``Catalog``)."""

    def get_meta(self, key: str) -> str | None:
        with Session(self.engine) as s:
            row = s.get(Meta, key)
            return row.value if row else None

    @writes
    def set_meta(self, key: str, value: str) -> None:
        with Session(self.engine) as s, s.begin():
            s.merge(Meta(key=key, value=value))

    def meta(self) -> dict[str, str]:
        with Session(self.engine) as s:
            return {m.key: m.value for m in s.scalars(select(Meta))}

    @writes
    def bind_model(self, model_id: str, dim: int, revision: str = "") -> None:
        """Record the model of a new collection, or refuse one built by another model."""
        stored_model, stored_dim = self.get_meta("model_id"), self.get_meta("dim")
        if stored_model is None:
            with Session(self.engine) as s, s.begin():
                s.merge(Meta(key="model_id", value=model_id))
                s.merge(Meta(key="dim", value=str(dim)))
                s.merge(Meta(key="model_revision", value=revision))
                s.merge(Meta(key="created_at", value=str(time.time())))
            return
        stored_rev = self.get_meta("model_revision") or ""
        if stored_model == model_id and stored_rev != revision:
            raise ModelMismatchError(
                f"this collection was indexed with other weights of model '{model_id}' (revision "
                f"{stored_rev or 'unknown'}, installed {revision or 'unknown'}); re-index into a "
                "new collection with --db, or install the vtsearch version that built it"
            )
        if stored_model != model_id or int(stored_dim or 0) != dim:
            raise ModelMismatchError(
                f"this collection was indexed with model '{stored_model}' (dim {stored_dim}), "
                f"not '{model_id}' (dim {dim}); pass --model {stored_model}, or re-index into a "
                "new collection with --db"
            )
