"""Moving a collection's SQLite catalog to PostgreSQL, ids, history and marks as they are, so
the folder's FAISS files, token cache and thumbnails stay valid without a rebuild."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, insert, select, text

from vtsearch.errors import ConfigError
from vtsearch.storage.catalog import Catalog
from vtsearch.storage.catalog_history import read_head
from vtsearch.storage.schema import Base
from vtsearch.storage.server_db import (
    URL_FILE,
    parse_server_url,
    record,
    redacted,
    server_engine,
)
from vtsearch.storage.sqlite import CATALOG_FILE

#: Rows copied per statement.
CHUNK = 2000
#: What the SQLite file is renamed to once its rows are on the server (kept, not deleted).
MOVED_SUFFIX = ".moved-to-postgresql"


@dataclass
class MoveReport:
    url: str
    rows: dict[str, int]
    kept_file: str


def move_to_server(folder: Path, url: str) -> MoveReport:
    """Copy every table of the folder's SQLite catalog into the empty PostgreSQL database
    ``url`` in one transaction, then record the URL in the folder and set the SQLite file aside
    (renamed, not deleted). The caller holds the collection's write lock; other processes
    using the collection must be stopped first (they would go on reading the old file). A move
    killed after the copy committed is finished by running it again.

    Raises:
        ConfigError: the folder has no SQLite catalog, already uses a server, or the database
            already holds a catalog with images.
        CatalogConnectionError: the server cannot be reached.
    """
    db = folder / CATALOG_FILE
    if (folder / URL_FILE).exists():
        raise ConfigError(f"the collection {folder} already keeps its catalog on a server")
    if not db.exists():
        raise ConfigError(f"no SQLite catalog at {db} to move")
    target_url = parse_server_url(url, CATALOG_FILE)
    source = Catalog.open(folder)  # brings an older file to this schema first
    engine = server_engine(target_url)
    target = Catalog(engine, False, redacted(target_url))  # creates the schema
    rows: dict[str, int] = {}
    try:
        with source.snapshot.connect() as src, engine.begin() as dst:
            held = dst.scalar(select(func.count()).select_from(Base.metadata.tables["images"]))
            if held and read_head(dst) == read_head(src) and read_head(src)[1] is not None:
                # This very catalog, copied by a move killed before the folder recorded it
                # (the same last commit and random mark): finish that move.
                rows = {t.name: _count(dst, t) for t in Base.metadata.sorted_tables}
            elif held:
                raise ConfigError(
                    f"the database at {redacted(target_url)} already holds a catalog with images; "
                    "move into an empty database (createdb)"
                )
            for table in Base.metadata.sorted_tables if not held else ():
                dst.execute(table.delete())  # the new catalog's own meta rows
                n = 0
                result = src.execute(select(table)).mappings()
                while chunk := result.fetchmany(CHUNK):
                    dst.execute(insert(table), [dict(r) for r in chunk])
                    n += len(chunk)
                rows[table.name] = n
            for table in ("images", "texts") if not held else ():
                # New ids continue after the highest ever given (SQLite's AUTOINCREMENT record).
                last = src.scalar(
                    text("SELECT seq FROM sqlite_sequence WHERE name = :t"), {"t": table}
                )
                if last:
                    dst.execute(
                        text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), :v)"),
                        {"v": int(last)},
                    )
    finally:
        source.close()
        target.close()
    # The folder names the server first: killed before the file is set aside, the collection
    # already opens on the server, and the file is only a leftover.
    record(folder, target_url)
    kept = db.with_name(db.name + MOVED_SUFFIX)
    os.replace(db, kept)
    for side in ("-wal", "-shm"):
        Path(str(db) + side).unlink(missing_ok=True)
    return MoveReport(redacted(target_url), rows, str(kept))


def _count(con, table) -> int:
    return int(con.scalar(select(func.count()).select_from(table)) or 0)
