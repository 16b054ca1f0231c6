"""Alembic's environment. vtsearch runs migrations on the connection ``vtsearch.storage.migrate``
hands over (inside its transaction and lock); a developer's ``alembic revision --autogenerate``
(``alembic.ini`` at the repository root) connects to the database its ``sqlalchemy.url`` names."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine

from vtsearch.storage.schema import Base


def run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        # SQLite cannot alter most columns in place: Alembic's batch mode copies the table.
        render_as_batch=connection.dialect.name == "sqlite",
    )
    context.run_migrations()


given = context.config.attributes.get("connection")
if given is not None:
    run(given)
else:
    with create_engine(context.config.get_main_option("sqlalchemy.url")).begin() as con:
        run(con)
