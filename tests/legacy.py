"""Collections as older versions of vtsearch left them, for upgrade tests."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def as_schema_1(folder: Path) -> None:
    """Turn a catalog back into what vtsearch wrote before schema 2 (no change time, no inode,
    no roots or commit marks)."""
    con = sqlite3.connect(folder / "catalog.db")
    con.executescript(
        """
        CREATE TABLE images_v1 AS SELECT id, path, size, mtime_ns, sha256, width, height, format,
            taken_at, status, error, vector, vec_seq, indexed_at FROM images;
        DROP TABLE images; ALTER TABLE images_v1 RENAME TO images;
        DROP TABLE roots; DROP TABLE commits; DROP TABLE IF EXISTS alembic_version;
        DELETE FROM meta WHERE key = 'mark';
        UPDATE meta SET value = '1' WHERE key = 'schema_version';
        """
    )
    con.commit()
    con.close()
