"""The catalog's metadata table and what it records on open: the schema version (a newer catalog
refused, an older one migrated) and the model a collection was indexed with."""

from __future__ import annotations

import time

from sqlalchemy import inspect, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session
from sqlalchemy.schema import CreateIndex

from vtsearch.errors import ModelMismatchError, SchemaVersionError
from vtsearch.storage.schema import FILTER_INDEX, SCHEMA_VERSION, Base, Meta
from vtsearch.storage.sqlite import writes


class MetaRows:
    """Catalog methods for metadata, the schema version and the model (mixed into ``Catalog``)."""

    def _check_schema(self) -> None:
        stored = self.get_meta("schema_version")
        if stored is None and not self.readonly:
            self.set_meta("schema_version", str(SCHEMA_VERSION))
        elif stored is not None and int(stored) > SCHEMA_VERSION:
            raise SchemaVersionError(
                f"this collection has catalog schema {stored}, newer than this vtsearch "
                f"understands ({SCHEMA_VERSION}); upgrade vtsearch to open it"
            )
        elif stored is not None and int(stored) < SCHEMA_VERSION:
            if self.readonly:
                raise SchemaVersionError(
                    f"this collection has catalog schema {stored} and needs an upgrade to "
                    f"{SCHEMA_VERSION}, which needs write access: run `vtsearch status` once as "
                    "a user who may write to the collection"
                )
            self._migrate(int(stored))

    @writes
    def _migrate(self, stored: int) -> None:
        """Bring an older catalog up to ``SCHEMA_VERSION`` in one transaction."""
        with self.engine.begin() as con:
            # A write first: it takes the database's write lock, so two processes opening an
            # old catalog at once migrate it one after the other, the second finding it done.
            con.execute(update(Meta).where(Meta.key == "schema_version").values(value=Meta.value))
            current = con.scalar(select(Meta.value).where(Meta.key == "schema_version"))
            if int(current or 0) >= SCHEMA_VERSION:
                return
            if stored < 2:
                have = {c["name"] for c in inspect(con).get_columns("images")}
                for col in ("ctime_ns", "inode"):
                    if col not in have:
                        con.exec_driver_sql(f"ALTER TABLE images ADD COLUMN {col} INTEGER")
            # 3 adds only tables (the tags'), which ``create_missing`` made before this runs.
            con.execute(
                update(Meta).where(Meta.key == "schema_version").values(value=str(SCHEMA_VERSION))
            )

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


def create_missing(engine: Engine) -> None:
    """Create the tables and indexes an older (or new) catalog lacks. Another process opening the
    same catalog may create one between our look and our ``CREATE``: that is the one error to
    look again after."""
    for attempt in range(3):
        try:
            Base.metadata.create_all(engine)
            have = {ix["name"] for ix in inspect(engine).get_indexes("images")}
            if FILTER_INDEX.name not in have:  # a catalog made before it
                with engine.begin() as con:
                    con.execute(CreateIndex(FILTER_INDEX, if_not_exists=True))
            return
        except OperationalError as e:
            if "already exists" not in str(e) or attempt == 2:
                raise
