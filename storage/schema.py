"""SQLAlchemy 2.0 ORM tables of the catalog.

Vectors are stored beside their row (``images.vector``) so that a row and its vector commit in one
transaction: the FAISS file is a derived cache that can always be brought up to date from here.
``vec_seq`` orders vector writes and ``tombstones`` records removals, so a saved FAISS index knows
exactly which changes it is missing.
"""

from __future__ import annotations

import os
from datetime import datetime

from sqlalchemy import BigInteger, Float, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

#: 2: ``images.ctime_ns`` and ``images.inode``, the ``roots`` and ``commits`` tables.
#: 3: the ``tag_sets``, ``tagged`` and ``tags`` tables (an older vtsearch would leave the tags of
#: a changed file in place). The first Alembic revision (``storage/migrations``).
#: 4: 64-bit integer columns on PostgreSQL (SQLite's are already); each later change is an
#: Alembic revision whose number this follows, so an older vtsearch refuses the catalog.
SCHEMA_VERSION = 4

#: A 64-bit integer: nanosecond times and inode numbers overflow PostgreSQL's ``integer``.
Int64 = BigInteger().with_variant(Integer, "sqlite")


class FsPath(TypeDecorator):
    """A file path as the OS gives it, including names that are not valid UTF-8.

    Python hands such names over with lone surrogates (``surrogateescape``), which a database's
    text type cannot hold. SQLite stores those paths as their raw bytes (a BLOB in the same
    column). PostgreSQL's column holds only text: each byte that is not UTF-8 is written as
    U+FFFF (a noncharacter no real name uses) and two hex digits, so the valid folders before it
    stay in the path's text and range filters on folders still take it. Both read back as the
    same ``str``; every other path stays plain text.
    """

    impl = Text
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            if dialect.name == "sqlite":
                return os.fsencode(value)
            return _escaped(value)
        if ESCAPE in value and dialect.name != "sqlite":
            return _escaped(value)  # a name holding the marker itself: escaped too
        return value

    def process_result_value(self, value, dialect):
        if isinstance(value, bytes | bytearray | memoryview):
            return os.fsdecode(bytes(value))
        if value is not None and ESCAPE in value and dialect.name != "sqlite":
            parts = value.split(ESCAPE)
            return parts[0] + "".join(_unescaped(p) for p in parts[1:])
        return value


#: Marks an escaped byte of a path that is not UTF-8 on databases other than SQLite (``FsPath``),
#: followed by its two hex digits (80 to ff), or by ``uu`` for the marker itself.
ESCAPE = "\uffff"
_LITERAL = "uu"


def _escaped(value: str) -> str:
    out = []
    for c in value:
        if 0xDC80 <= ord(c) <= 0xDCFF:
            out.append(f"{ESCAPE}{ord(c) - 0xDC00:02x}")
        elif c == ESCAPE:
            out.append(ESCAPE + _LITERAL)
        else:
            out.append(c)
    return "".join(out)


def _unescaped(part: str) -> str:
    """One part after a marker, back as it was; a part no escape made (a value another program
    wrote) stays as it reads."""
    head = part[:2]
    if head == _LITERAL:
        return ESCAPE + part[2:]
    try:
        code = int(head, 16)
    except ValueError:
        return ESCAPE + part
    if len(head) == 2 and 0x80 <= code <= 0xFF:
        return chr(0xDC00 + code) + part[2:]
    return ESCAPE + part


class Base(DeclarativeBase):
    pass


class ImageRow(Base):
    __tablename__ = "images"

    id: Mapped[int] = mapped_column(Int64, primary_key=True, autoincrement=True)
    path: Mapped[str] = mapped_column(FsPath, unique=True)
    size: Mapped[int] = mapped_column(Int64)
    mtime_ns: Mapped[int] = mapped_column(Int64)
    #: Inode change time and number: an in-place edit that keeps size and mtime (``exiftool -P``)
    #: still moves the change time. None in rows written before schema 2.
    ctime_ns: Mapped[int | None] = mapped_column(Int64)
    inode: Mapped[int | None] = mapped_column(Int64)
    sha256: Mapped[str | None] = mapped_column(String(64), index=True)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    format: Mapped[str | None] = mapped_column(String(16))
    taken_at: Mapped[datetime | None] = mapped_column()
    #: "indexed" (has a vector) or "failed" (see ``error``).
    status: Mapped[str] = mapped_column(String(16), index=True)
    error: Mapped[str | None] = mapped_column(Text)
    vector: Mapped[bytes | None] = mapped_column(LargeBinary)
    vec_seq: Mapped[int] = mapped_column(Int64, default=0)
    indexed_at: Mapped[float] = mapped_column(Float)

    # AUTOINCREMENT: an id is never reused, so a FAISS id always names one image for good.
    __table_args__ = (
        Index("ix_images_vec_seq", "vec_seq"),
        # What search filters read (``Catalog.matching_ids``), so SQLite answers them from this
        # index alone instead of reading every row past its vector (100k rows: 16 ms, not 48).
        Index("ix_images_filters", "status", "taken_at", "mtime_ns", "width", "height", "format"),
        {"sqlite_autoincrement": True},
    )


#: Made by ``Catalog`` in catalogs created before it (an index changes no data: no migration).
FILTER_INDEX = next(ix for ix in ImageRow.__table__.indexes if ix.name == "ix_images_filters")


class Tombstone(Base):
    """A vector removed at ``seq``; lets a stale FAISS file drop it on load."""

    __tablename__ = "tombstones"

    id: Mapped[int] = mapped_column(Int64, primary_key=True)
    seq: Mapped[int] = mapped_column(Int64, index=True)


class TextRow(Base):
    """A text of the collection's text set (captions, labels), searchable by image."""

    __tablename__ = "texts"

    id: Mapped[int] = mapped_column(Int64, primary_key=True, autoincrement=True)
    text: Mapped[str] = mapped_column(Text, unique=True)
    source: Mapped[str | None] = mapped_column(Text, index=True)
    vector: Mapped[bytes] = mapped_column(LargeBinary)
    vec_seq: Mapped[int] = mapped_column(Int64, index=True)
    added_at: Mapped[float] = mapped_column(Float)

    __table_args__ = ({"sqlite_autoincrement": True},)


class TextTombstone(Base):
    __tablename__ = "text_tombstones"

    id: Mapped[int] = mapped_column(Int64, primary_key=True)
    seq: Mapped[int] = mapped_column(Int64, index=True)


class Root(Base):
    """A folder indexed into the collection: ``vtsearch index`` with no folder refreshes each."""

    __tablename__ = "roots"

    path: Mapped[str] = mapped_column(FsPath, primary_key=True)
    added_at: Mapped[float] = mapped_column(Float)


class Commit(Base):
    """A random mark per catalog sequence number. A FAISS file records the mark of the sequence
    number it reflects: a catalog restored from a backup (or one that lost commits) has another
    mark there, or none, and the index is rebuilt instead of replaying changes onto vectors the
    catalog no longer knows."""

    __tablename__ = "commits"

    seq: Mapped[int] = mapped_column(Int64, primary_key=True)
    mark: Mapped[str] = mapped_column(String(32))


class TagSet(Base):
    """A named label set the images were tagged with (``vtsearch tag``). ``signature`` covers
    the labels, prompts, model revision and rule: tagging again with another one re-tags all."""

    __tablename__ = "tag_sets"

    name: Mapped[str] = mapped_column(Text, primary_key=True)
    labels: Mapped[str] = mapped_column(Text)  # JSON list, in the order given
    signature: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(Text)  # model id @ revision
    threshold: Mapped[float | None] = mapped_column(Float)
    top_k: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[float] = mapped_column(Float)


class Tagged(Base):
    """An image scored against a tag set, whether or not a label was kept: re-tagging after new
    images are indexed scores only the images without a row here."""

    __tablename__ = "tagged"

    set_name: Mapped[str] = mapped_column(Text, primary_key=True)
    image_id: Mapped[int] = mapped_column(Int64, primary_key=True)


class Tag(Base):
    """A label kept for an image; ``key`` is the label casefolded, what ``--tag`` matches."""

    __tablename__ = "tags"

    set_name: Mapped[str] = mapped_column(Text, primary_key=True)
    image_id: Mapped[int] = mapped_column(Int64, primary_key=True)
    label: Mapped[str] = mapped_column(Text, primary_key=True)
    key: Mapped[str] = mapped_column(Text)
    score: Mapped[float] = mapped_column(Float)  # the model's similarity
    #: The calibrated chance the label fits; None when the model has no calibration.
    confidence: Mapped[float | None] = mapped_column(Float)

    __table_args__ = (
        Index("ix_tags_key", "key", "image_id"),
        Index("ix_tags_image", "image_id"),
    )


class Meta(Base):
    __tablename__ = "meta"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
