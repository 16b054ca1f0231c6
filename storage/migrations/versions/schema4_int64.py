"""Schema 4: 64-bit integer columns and bytewise-sorted paths on PostgreSQL, and the
sequence-number row every writer locks.

SQLite's integers already hold 64 bits: only the ``seq`` row is new there. On PostgreSQL,
nanosecond times, inode numbers and ids past 2**31 need ``bigint`` (and the id sequences too).
Writers take ``meta['seq']`` ``FOR UPDATE`` to number their commit, so that row must exist
before the first one does.

Revision ID: schema4
Revises: schema3
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "schema4"
down_revision = "schema3"
branch_labels = None
depends_on = None

#: Table, columns widened to ``bigint``.
WIDE = {
    "images": ("id", "size", "mtime_ns", "ctime_ns", "inode", "vec_seq"),
    "tombstones": ("id", "seq"),
    "texts": ("id", "vec_seq"),
    "text_tombstones": ("id", "seq"),
    "commits": ("seq",),
    "tagged": ("image_id",),
    "tags": ("image_id",),
}


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        for table, columns in WIDE.items():
            for col in columns:
                op.alter_column(table, col, type_=sa.BigInteger(), existing_type=sa.Integer())
        for table in ("images", "texts"):
            op.execute(f"ALTER SEQUENCE IF EXISTS {table}_id_seq AS bigint")
        # Folder filters select paths by range (``/a/`` to ``/a0``): that needs bytewise order,
        # which a database's language collation (en_US...) does not give.
        for table in ("images", "roots"):
            op.execute(f'ALTER TABLE {table} ALTER COLUMN path TYPE text COLLATE "C"')
    meta = sa.table("meta", sa.column("key", sa.String), sa.column("value", sa.Text))
    if bind.execute(sa.select(meta.c.key).where(meta.c.key == "seq")).first() is None:
        op.bulk_insert(meta, [{"key": "seq", "value": "0"}])


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        for table, columns in WIDE.items():
            for col in columns:
                op.alter_column(table, col, type_=sa.Integer(), existing_type=sa.BigInteger())
