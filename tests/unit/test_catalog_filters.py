"""Search filters in the catalog: which ids ``Catalog.matching_ids`` lets through, by folder
(paths stored as text or, for names that are not UTF-8, as bytes), glob, date taken (EXIF, else
the file's mtime), shape, size and format; and the values ``Filters`` refuses."""

from __future__ import annotations

import os
from datetime import date, datetime

import numpy as np
import pytest

from vtsearch.errors import QueryError
from vtsearch.storage.catalog import Catalog, NewImage
from vtsearch.storage.filters import Filters, parse_when

ODD = os.fsdecode(b"/photos/caf\xe9")  # a folder name that is not UTF-8 (held with a surrogate)


def ns(when: str) -> int:
    """A local time as a file's mtime in nanoseconds."""
    return round(datetime.fromisoformat(when).timestamp() * 1e9)


ROWS = [
    # path, (width, height), format, EXIF time, mtime
    ("/photos/2024/a.jpg", (400, 300), "JPEG", "2024-07-01 10:00:00", "2020-01-01"),
    ("/photos/2024/b.png", (300, 400), "PNG", None, "2024-06-15 09:00"),
    ("/photos/2024x/c.jpg", (500, 500), "MPO", "2024-08-31 23:59:59", "2020-01-01"),
    ("/photos/2023/d.heic", (4000, 3000), "HEIF", "2023-12-31 23:00:00", "2024-07-01"),
    ("/photos/2023/IMG_0001.jpg", (640, 480), "JPEG", None, "2023-05-05"),
    ("/photos/2023/sub/IMG_0002.jpg", (480, 640), "JPEG", "2024-09-01 00:00:00", "2020-01-01"),
    (os.fsdecode(b"/photos/2024/caf\xe9.jpg"), (800, 600), "JPEG", None, "2024-07-04"),
    (ODD + "/x.png", (100, 100), "PNG", None, "2024-07-04"),
    ("/other/2024/e.jpg", (1000, 800), "JPEG", "2024-07-02 12:00:00", "2020-01-01"),
]


@pytest.fixture
def catalog(tmp_path, catalog_url) -> tuple[Catalog, dict[str, int]]:
    cat = Catalog.open(tmp_path, url=catalog_url)
    cat.bind_model("synthetic", 4)
    v = np.eye(4, dtype=np.float32)[0]
    items = [
        NewImage(
            path,
            size=1,
            mtime_ns=ns(mtime),
            sha256=f"{i:064x}",
            vector=v,
            width=w,
            height=h,
            format=fmt,
            taken_at=datetime.fromisoformat(taken) if taken else None,
        )
        for i, (path, (w, h), fmt, taken, mtime) in enumerate(ROWS)
    ]
    # A failed row matches nothing, whatever its path.
    items.append(NewImage("/photos/2024/broken.jpg", 1, 1, None, error="truncated"))
    cat.write_batch(items)
    cat.add_root("/photos")
    cat.add_root("/other")
    return cat, {p: r.id for p, r in cat.records().items()}


def names(cat: Catalog, ids: dict[str, int], **kw) -> set[str]:
    """The base names (odd bytes as \\xNN) of the rows ``Filters(**kw)`` lets through."""
    by_id = {i: p for p, i in ids.items()}
    got = cat.matching_ids(Filters(**kw))
    assert got.dtype == np.int64 and (np.diff(got) > 0).all()  # sorted, unique
    return {
        os.fsencode(os.path.basename(by_id[int(i)])).decode("utf-8", "backslashreplace")
        for i in got
    }


ALL = {os.fsencode(os.path.basename(r[0])).decode("utf-8", "backslashreplace") for r in ROWS}


def test_no_filter_is_every_indexed_row(catalog):
    cat, ids = catalog
    assert names(cat, ids) == ALL  # the failed row is not there


def test_folders_by_whole_components_text_and_bytes(catalog):
    cat, ids = catalog
    # "/photos/2024" holds a.jpg, b.png and the odd name, not /photos/2024x/c.jpg.
    assert names(cat, ids, folders=["/photos/2024"]) == {"a.jpg", "b.png", "caf\\xe9.jpg"}
    assert names(cat, ids, folders=["/photos/2024/"]) == {"a.jpg", "b.png", "caf\\xe9.jpg"}
    assert names(cat, ids, folders=["/photos/2023"]) == {"d.heic", "IMG_0001.jpg", "IMG_0002.jpg"}
    # A folder that is not UTF-8 itself; several folders are any of them.
    assert names(cat, ids, folders=[ODD]) == {"x.png"}
    assert names(cat, ids, folders=[ODD, "/other"]) == {"x.png", "e.jpg"}
    # A file itself; a folder that holds nothing.
    assert names(cat, ids, folders=["/photos/2024/a.jpg"]) == {"a.jpg"}
    assert names(cat, ids, folders=["/nowhere"]) == set()
    # Relative: that folder inside any indexed folder.
    assert names(cat, ids, folders=["2024"]) == {"a.jpg", "b.png", "caf\\xe9.jpg", "e.jpg"}
    assert names(cat, ids, folders=["2023/sub"]) == {"IMG_0002.jpg"}


def test_glob_on_names_and_paths_with_odd_bytes(catalog):
    cat, ids = catalog
    assert names(cat, ids, glob="IMG_*.jpg") == {"IMG_0001.jpg", "IMG_0002.jpg"}
    # Without a "/" only the file name counts: "2023*" names no file.
    assert names(cat, ids, glob="2023*") == set()
    assert names(cat, ids, glob="*.png") == {"b.png", "x.png"}
    # A path pattern: "*" crosses folders; the odd names match like any other.
    assert names(cat, ids, glob="/photos/2024*/*.jpg") == {"a.jpg", "c.jpg", "caf\\xe9.jpg"}
    assert names(cat, ids, glob=os.fsdecode(b"*/caf\xe9.jpg")) == {"caf\\xe9.jpg"}
    assert names(cat, ids, glob="caf?.jpg") == {"caf\\xe9.jpg"}  # one odd byte, one character
    assert names(cat, ids, glob="2023/*/IMG_*") == {"IMG_0002.jpg"}  # relative: the path's end
    assert names(cat, ids, glob="*.JPG") == set()  # case counts
    # With other filters, all must hold.
    assert names(cat, ids, glob="*.jpg", folders=["/other"]) == {"e.jpg"}


def test_dates_use_exif_then_the_file_time(catalog):
    cat, ids = catalog
    summer = names(cat, ids, after="2024-06-01", before="2024-09-01")
    # a: EXIF July; b: no EXIF, mtime June 15; c: EXIF Aug 31 23:59:59 (before is exclusive);
    # the odd names: no EXIF, mtime July 4; e: EXIF July. d's EXIF (2023) wins over its July
    # mtime; IMG_0002 was taken at the first instant of September, so it is out.
    assert summer == {"a.jpg", "b.png", "c.jpg", "caf\\xe9.jpg", "x.png", "e.jpg"}
    assert names(cat, ids, before="2024") == {"d.heic", "IMG_0001.jpg"}
    assert names(cat, ids, after="2024-09-01") == {"IMG_0002.jpg"}
    assert names(cat, ids, after=date(2024, 7, 2), before="2024-07-03") == {"e.jpg"}
    assert names(cat, ids, after="2024-07-04T00:00", before="2024-07-05") == {
        "caf\\xe9.jpg",
        "x.png",
    }


def test_shape_size_and_format(catalog):
    cat, ids = catalog
    assert names(cat, ids, orientation="portrait") == {"b.png", "IMG_0002.jpg"}
    assert names(cat, ids, orientation="square") == {"c.jpg", "x.png"}
    assert len(names(cat, ids, orientation="landscape")) == 5
    assert names(cat, ids, min_width=900) == {"d.heic", "e.jpg"}
    assert names(cat, ids, min_width=500, min_height=600) == {"d.heic", "e.jpg", "caf\\xe9.jpg"}
    # "jpeg" is JPEG and MPO; "heic" is Pillow's HEIF.
    jpegs = names(cat, ids, formats=["jpeg"])
    assert "c.jpg" in jpegs and "b.png" not in jpegs and len(jpegs) == 6
    assert names(cat, ids, formats=["heic", "png"]) == {"d.heic", "b.png", "x.png"}
    assert names(cat, ids, formats=".PNG", orientation="square") == {"x.png"}


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"after": "2024-13-01"}, "after '2024-13-01' is not a date"),
        ({"before": "yesterday"}, "before 'yesterday' is not a date"),
        ({"after": "2024-09-01", "before": "2024-06-01"}, "must be earlier"),
        ({"orientation": "wide"}, "unknown orientation"),
        ({"formats": ["jpeg", "raw"]}, "unknown file format 'raw'"),
        ({"min_width": 0}, "min_width must be"),
        ({"folders": [""]}, "empty folder"),
        ({"glob": " "}, "empty glob"),
    ],
)
def test_bad_values_say_what_is_wrong(kw, message):
    with pytest.raises(QueryError, match=message):
        Filters(**kw)


def test_filters_read_dates_like_people_write_them():
    assert parse_when("2024") == datetime(2024, 1, 1)
    assert parse_when("2024-06") == datetime(2024, 6, 1)
    assert parse_when(" 2024-06-05 ") == datetime(2024, 6, 5)
    assert parse_when("2024-06-05 13:30") == datetime(2024, 6, 5, 13, 30)
    f = Filters(folders="/a/", formats="jpg", min_score=0.5)
    assert (f.folders, f.formats, f.format_names, f.restricts) == (
        ("/a",),
        ("jpg",),
        ("JPEG", "MPO"),
        True,
    )
    assert not Filters(min_score=0.5).restricts and not Filters().restricts


def test_a_catalog_from_before_the_filter_index_gets_it_when_opened(tmp_path):
    import sqlite3

    Catalog.open(tmp_path).close()
    con = sqlite3.connect(tmp_path / "catalog.db")
    # As a schema 3 vtsearch made before the index existed (and before Alembic).
    con.execute("DROP INDEX ix_images_filters")
    con.execute("DROP TABLE alembic_version")
    con.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
    con.commit()
    cat = Catalog.open(tmp_path)
    names = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert "ix_images_filters" in names
    plan = " ".join(
        r[3]
        for r in con.execute(
            "EXPLAIN QUERY PLAN SELECT id FROM images WHERE status = 'indexed' AND width > height"
        )
    )
    assert "COVERING INDEX ix_images_filters" in plan  # read without the rows and their vectors
    assert len(cat.matching_ids(Filters(orientation="portrait"))) == 0


def test_filters_are_read_from_indexes_not_rows(catalog):
    """The query plans SQLite picks for matching_ids: a folder by the path index (not every row
    through the status index), the other filters from the covering filter index."""
    from sqlalchemy import event

    cat, _ = catalog
    if cat.on_server:
        pytest.skip("SQLite's query plans; PostgreSQL plans a 10-row table by a scan")
    seen: list[tuple[str, tuple]] = []

    def keep(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("SELECT IMAGES.ID"):
            seen.append((statement, parameters))

    event.listen(cat.engine, "before_cursor_execute", keep)
    plans = {}
    for name, f in {
        "folder": Filters(folders=["/photos/2023"]),
        "date": Filters(after="2024-06-01", orientation="landscape", formats=["jpeg"]),
    }.items():
        seen.clear()
        cat.matching_ids(f)
        statement, parameters = seen[-1]
        with cat.engine.connect() as con:
            rows = con.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)
            plans[name] = " ".join(str(r[3]) for r in rows)
    event.remove(cat.engine, "before_cursor_execute", keep)
    assert "sqlite_autoindex_images_1 (path>? AND path<?)" in plans["folder"], plans
    assert "COVERING INDEX ix_images_filters" in plans["date"], plans


def test_folders_are_matched_case_for_case_whatever_the_database_collation(tmp_path, catalog_url):
    """A language collation (the PostgreSQL test databases use ICU en-US) sorts '/photos/b'
    between '/Photos/' and '/Photos0': paths must sort bytewise for folder ranges."""
    cat = Catalog.open(tmp_path, url=catalog_url)
    v = np.eye(4, dtype=np.float32)[0]
    paths = ["/Photos/a.jpg", "/photos/b.jpg", "/Photos-2/c.jpg", "/PhotosX/d.jpg"]
    cat.write_batch([NewImage(p, 1, 1, f"{i:064x}", vector=v) for i, p in enumerate(paths)])
    by_id = {r.id: p for p, r in cat.records().items()}
    got = [by_id[int(i)] for i in cat.matching_ids(Filters(folders=("/Photos",)))]
    assert got == ["/Photos/a.jpg"]
