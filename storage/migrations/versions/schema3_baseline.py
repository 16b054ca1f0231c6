"""Schema 3, the catalog as vtsearch made it before Alembic: images with their vectors, the
history (tombstones, commits), texts, roots, tags and metadata.

A catalog made by that vtsearch already has these tables: ``migrate`` marks it as at this
revision instead of running it.

Revision ID: schema3
Revises:
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "schema3"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "commits",
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("mark", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
    )
    op.create_table(
        "images",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("mtime_ns", sa.Integer(), nullable=False),
        sa.Column("ctime_ns", sa.Integer(), nullable=True),
        sa.Column("inode", sa.Integer(), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("width", sa.Integer(), nullable=True),
        sa.Column("height", sa.Integer(), nullable=True),
        sa.Column("format", sa.String(length=16), nullable=True),
        sa.Column("taken_at", sa.DateTime(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("vector", sa.LargeBinary(), nullable=True),
        sa.Column("vec_seq", sa.Integer(), nullable=False),
        sa.Column("indexed_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("path"),
        sqlite_autoincrement=True,
    )
    op.create_index(
        "ix_images_filters",
        "images",
        ["status", "taken_at", "mtime_ns", "width", "height", "format"],
    )
    op.create_index("ix_images_sha256", "images", ["sha256"])
    op.create_index("ix_images_status", "images", ["status"])
    op.create_index("ix_images_vec_seq", "images", ["vec_seq"])
    op.create_table(
        "meta",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_table(
        "roots",
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("added_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("path"),
    )
    op.create_table(
        "tag_sets",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("labels", sa.Text(), nullable=False),
        sa.Column("signature", sa.String(length=64), nullable=False),
        sa.Column("model", sa.Text(), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=True),
        sa.Column("top_k", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "tagged",
        sa.Column("set_name", sa.Text(), nullable=False),
        sa.Column("image_id", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("set_name", "image_id"),
    )
    op.create_table(
        "tags",
        sa.Column("set_name", sa.Text(), nullable=False),
        sa.Column("image_id", sa.Integer(), nullable=False),
        sa.Column("label", sa.Text(), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("confidence", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("set_name", "image_id", "label"),
    )
    op.create_index("ix_tags_image", "tags", ["image_id"])
    op.create_index("ix_tags_key", "tags", ["key", "image_id"])
    op.create_table(
        "text_tombstones",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_text_tombstones_seq", "text_tombstones", ["seq"])
    op.create_table(
        "texts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("source", sa.Text(), nullable=True),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
        sa.Column("vec_seq", sa.Integer(), nullable=False),
        sa.Column("added_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("text"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_texts_source", "texts", ["source"])
    op.create_index("ix_texts_vec_seq", "texts", ["vec_seq"])
    op.create_table(
        "tombstones",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_tombstones_seq", "tombstones", ["seq"])


def downgrade() -> None:
    for table in (
        "tombstones",
        "texts",
        "text_tombstones",
        "tags",
        "tagged",
        "tag_sets",
        "roots",
        "meta",
        "images",
        "commits",
    ):
        op.drop_table(table)
