"""Search filters: which images a query may return, by folder, file name, date taken, size,
shape, file format and zero-shot tag, and the lowest final score to show.

A :class:`Filters` is applied inside retrieval, not after it: the catalog finds the ids that
match (:meth:`Catalog.matching_ids`, with the SQL built here), and the vector search runs over
those ids alone, so ``k`` results come back whenever ``k`` images match.

Example:
    >>> f = Filters(folders=["/photos/2024"], after="2024-06", orientation="landscape")
    >>> f.after.isoformat(), f.restricts
    ('2024-06-01T00:00:00', True)
    >>> Filters(min_score=0.2).restricts  # a score cut needs no catalog lookup
    False
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from datetime import date, datetime
from fnmatch import fnmatchcase
from pathlib import Path

from sqlalchemy import ColumnElement, LargeBinary, and_, literal, or_, select

from vtsearch.errors import QueryError
from vtsearch.storage.schema import ImageRow, Tag

#: Orientation names and what they mean for the displayed width and height.
ORIENTATIONS = ("landscape", "portrait", "square")
#: File formats as the catalog records them (Pillow's names), with the names people type.
FORMATS = {
    "jpeg": ("JPEG", "MPO"),  # MPO: a JPEG with a second frame (phones' depth maps)
    "jpg": ("JPEG", "MPO"),
    "png": ("PNG",),
    "webp": ("WEBP",),
    "gif": ("GIF",),
    "bmp": ("BMP",),
    "tiff": ("TIFF",),
    "tif": ("TIFF",),
    "heif": ("HEIF",),
    "heic": ("HEIF",),
    "avif": ("AVIF",),
}
_DATE = re.compile(r"^\d{4}(-\d{2}(-\d{2})?)?$")


def parse_when(value: str | date | datetime, name: str = "date") -> datetime:
    """A point in time from ``YYYY``, ``YYYY-MM``, ``YYYY-MM-DD`` or an ISO date and time, the
    start of the period a shorter form names (local time, as EXIF records it).

    Example:
        >>> parse_when("2024-06").isoformat(), parse_when("2024-06-01T08:30").isoformat()
        ('2024-06-01T00:00:00', '2024-06-01T08:30:00')
    """
    if isinstance(value, datetime):
        got = value
    elif isinstance(value, date):
        got = datetime(value.year, value.month, value.day)
    else:
        text = str(value).strip()
        try:
            if _DATE.match(text):
                parts = [int(p) for p in text.split("-")] + [1, 1]
                got = datetime(parts[0], parts[1], parts[2])
            else:
                got = datetime.fromisoformat(text.replace(" ", "T", 1))
        except ValueError:
            raise QueryError(
                f"{name} {text!r} is not a date; write YYYY-MM-DD (or YYYY, YYYY-MM, or "
                "YYYY-MM-DDTHH:MM)"
            ) from None
    if got.tzinfo is not None:  # EXIF times carry no zone: compare in local time
        got = got.astimezone().replace(tzinfo=None)
    return got


def _tuple(value) -> tuple:
    if value is None:
        return ()
    if isinstance(value, str | Path):
        return (value,)
    return tuple(value)


@dataclass(frozen=True)
class Filters:
    """What a search may return. Every condition set must hold (formats and folders: any one).

    Args:
        folders: files in one of these folders (or these files). An absolute path is a path
            prefix by whole components; a relative one means that folder inside any indexed
            folder (``"2024/summer"``).
        glob: a shell pattern (``*``, ``?``, ``[...]``, case-sensitive): without a ``/`` it
            matches the file name (``"IMG_*.jpg"``), else the whole path, where ``*`` also
            matches ``/`` (``"~/Pictures/2024-*/*.png"``; a relative one matches the end of
            the path: ``"summer/*.jpg"``).
        after: taken at or after this time; ``before``: taken before it (strings as
            :func:`parse_when` reads them: ``"2024-06-01"``, ``"2024-06"``). The time taken is
            the EXIF time, else the file's modification time in local time.
        orientation: ``landscape`` (wider than high), ``portrait`` or ``square``, as displayed.
        min_width, min_height: in pixels, as displayed.
        formats: file formats, any of (``"jpeg"``, ``"png"``, ``"heic"``...; see ``FORMATS``).
        tags: zero-shot tags (``vtsearch tag``), all of them, ignoring case.
        min_score: leave out results whose final score (after re-ranking) is below this.

    Raises:
        QueryError: a value that makes no sense (an unknown orientation or format, a date that
            is not one, ``after`` not before ``before``, a size below 1).
    """

    folders: tuple[str, ...] = ()
    glob: str | None = None
    after: datetime | None = None
    before: datetime | None = None
    orientation: str | None = None
    min_width: int | None = None
    min_height: int | None = None
    formats: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    min_score: float | None = None
    #: The catalog format names ``formats`` stand for (derived).
    format_names: tuple[str, ...] = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        put = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (frozen)
        folders = []
        for f in _tuple(self.folders):
            text = os.fspath(f).strip()
            if not text or not text.strip(os.sep):
                if text:  # "/": every file
                    continue
                raise QueryError("an empty folder filter matches nothing; give a folder")
            folders.append(text.rstrip(os.sep) if text != os.sep else text)
        put("folders", tuple(folders))
        if self.glob is not None and not str(self.glob).strip():
            raise QueryError("an empty glob matches nothing; give a pattern such as '*.jpg'")
        for name in ("after", "before"):
            value = getattr(self, name)
            if value is not None and value != "":
                put(name, parse_when(value, name))
            else:
                put(name, None)
        if self.after is not None and self.before is not None and self.after >= self.before:
            raise QueryError(
                f"after ({self.after.isoformat()}) must be earlier than before "
                f"({self.before.isoformat()}): no image can be taken in between"
            )
        if self.orientation is not None:
            o = str(self.orientation).strip().lower()
            if o not in ORIENTATIONS:
                raise QueryError(
                    f"unknown orientation {self.orientation!r}; choose one of "
                    f"{', '.join(ORIENTATIONS)}"
                )
            put("orientation", o)
        for name in ("min_width", "min_height"):
            value = getattr(self, name)
            if value is not None:
                if isinstance(value, bool) or int(value) != value or value < 1:
                    raise QueryError(f"{name} must be a whole number of pixels, 1 or more")
                put(name, int(value))
        formats, names = [], []
        for f in _tuple(self.formats):
            key = str(f).strip().lower().lstrip(".")
            if key not in FORMATS:
                raise QueryError(
                    f"unknown file format {f!r}; choose from {', '.join(sorted(FORMATS))}"
                )
            formats.append(key)
            names.extend(n for n in FORMATS[key] if n not in names)
        put("formats", tuple(formats))
        put("format_names", tuple(names))
        tags = tuple(dict.fromkeys(" ".join(str(t).split()) for t in _tuple(self.tags)))
        if "" in tags:
            raise QueryError("an empty tag matches nothing; give a tag, e.g. --tag dog")
        put("tags", tags)
        if self.min_score is not None:
            put("min_score", float(self.min_score))

    @property
    def restricts(self) -> bool:
        """Whether the catalog must pick the images (any condition but ``min_score``)."""
        return any(
            getattr(self, f.name) not in (None, ())
            for f in fields(self)
            if f.init and f.name != "min_score"
        )

    def where(
        self, roots: Iterable[str] = (), dialect: str = "sqlite"
    ) -> list[ColumnElement[bool]]:
        """SQL conditions on ``images`` rows for everything but the glob (see
        :meth:`matches_glob`); ``roots``: the collection's indexed folders, for relative
        ``folders``; ``dialect``: the catalog database's (how odd paths are stored)."""
        row, out = ImageRow, []
        if self.folders:
            prefixes = []
            for f in self.folders:
                if os.path.isabs(f):
                    prefixes.append(f)
                else:
                    prefixes.extend(os.path.join(r, f) for r in roots)
            out.append(or_(*(_under(p, dialect) for p in prefixes)) if prefixes else literal(False))
        if self.after is not None:
            out.append(_taken(self.after, ">="))
        if self.before is not None:
            out.append(_taken(self.before, "<"))
        if self.orientation == "landscape":
            out.append(row.width > row.height)
        elif self.orientation == "portrait":
            out.append(row.height > row.width)
        elif self.orientation == "square":
            out.append(row.width == row.height)
        if self.min_width is not None:
            out.append(row.width >= self.min_width)
        if self.min_height is not None:
            out.append(row.height >= self.min_height)
        if self.format_names:
            out.append(row.format.in_(self.format_names))
        for t in self.tags:
            out.append(row.id.in_(select(Tag.image_id).where(Tag.key == t.casefold())))
        return out

    def matches_glob(self, path: str) -> bool:
        """Whether ``path`` matches ``glob`` (True without one)."""
        if self.glob is None:
            return True
        pattern = os.path.expanduser(self.glob)
        if os.sep not in pattern:
            return fnmatchcase(os.path.basename(path), pattern)
        if not os.path.isabs(pattern):
            pattern = os.path.join("*", pattern)
        return fnmatchcase(path, pattern)

    def glob_prefilter(self, dialect: str = "sqlite") -> ColumnElement[bool] | None:
        """A cheap SQL condition every path :meth:`matches_glob` takes also meets (a superset),
        or None: the pattern's literal folder, when it starts with one; on SQLite, its ``GLOB``
        (the same ``*`` and ``?``; a pattern with ``[`` is left to Python), which the path
        index answers, with the paths stored as bytes let through for Python to judge."""
        if self.glob is None:
            return None
        pattern = os.path.expanduser(self.glob)
        out = []
        head = re.split(r"[*?\[]", pattern, maxsplit=1)[0]
        folder = head[: head.rfind(os.sep)] if os.sep in head else ""
        if os.path.isabs(pattern) and folder.strip(os.sep):
            out.append(_under(folder, dialect))
        if dialect == "sqlite" and "[" not in pattern and _is_text(pattern):
            whole = pattern if os.path.isabs(pattern) else os.path.join("*", pattern)
            path = ImageRow.path
            out.append(or_(path.op("GLOB")(whole), path >= literal(b"", LargeBinary)))
        return and_(*out) if out else None


def _is_text(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _under(folder: str, dialect: str = "sqlite") -> ColumnElement[bool]:
    """``images.path`` is ``folder`` or inside it: by ranges the path index serves, for paths
    stored as text and, on SQLite, for the odd ones stored as bytes (``FsPath``), which it sorts
    after every text value. ``/`` is followed by ``0`` in both orders (PostgreSQL's path columns
    sort bytewise: ``COLLATE "C"``, schema 4)."""
    path = ImageRow.path
    raw = os.fsencode(folder)
    # A folder that is not valid UTF-8 binds through FsPath like the rows under it.
    text = or_(path == folder, and_(path >= folder + os.sep, path < folder + "0"))
    if dialect != "sqlite":
        return text  # odd paths are text there too (escaped bytes after a valid prefix)
    lo, hi = (literal(raw + s.encode(), LargeBinary) for s in (os.sep, "0"))
    return or_(text, and_(path >= lo, path < hi))


def _taken(when: datetime, op: str) -> ColumnElement[bool]:
    """The image was taken ``op`` ``when``: by its EXIF time, else by its file's mtime (a naive
    ``when`` is local time, as ``datetime.timestamp`` takes it)."""
    row = ImageRow
    mtime_ns = round(when.timestamp() * 1e9)
    if op == ">=":
        exif, mtime = row.taken_at >= when, row.mtime_ns >= mtime_ns
    else:
        exif, mtime = row.taken_at < when, row.mtime_ns < mtime_ns
    return or_(and_(row.taken_at.is_not(None), exif), and_(row.taken_at.is_(None), mtime))
