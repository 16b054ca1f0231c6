"""Alembic's environment: migrations run on the connection ``vtsearch.storage.migrate`` hands
over (inside its transaction and lock), never on one of their own."""

from __future__ import annotations

from alembic import context

from vtsearch.storage.schema import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    # SQLite cannot alter most columns in place: Alembic's batch mode copies the table instead.
    render_as_batch=connection.dialect.name == "sqlite",
)
context.run_migrations()
