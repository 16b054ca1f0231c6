"""A catalog on a database server (PostgreSQL) instead of the collection folder's SQLite file.

The collection folder still holds what is derived from the catalog (FAISS files, the token
cache, thumbnails) and records the server's URL in ``catalog.url``, without its password (that
comes from ``PGPASSWORD`` or ``~/.pgpass``, as for ``psql``), so later commands on the folder
find the catalog without ``--catalog``.
"""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import URL, create_engine, make_url
from sqlalchemy.engine import Engine
from sqlalchemy.exc import ArgumentError

from vtsearch.errors import CatalogConnectionError, ConfigError

URL_FILE = "catalog.url"
#: Servers whose catalog code is tested (``tests/e2e/test_postgres.py``).
SERVERS = ("postgresql",)


def server_url(folder: Path, url: str | None, sqlite_file: str) -> URL | None:
    """The URL of the folder's catalog on a server, or None for its SQLite file.

    Args:
        folder: The collection folder.
        url: A SQLAlchemy URL given by the user (``--catalog``), or None for what the folder
            records.
        sqlite_file: The name of the folder's SQLite catalog, which a server URL must not shadow.

    Raises:
        ConfigError: ``url`` is not a URL of a supported server, or the folder's catalog is
            elsewhere (another server, or its own SQLite file).
    """
    recorded = _recorded(folder)
    if url is None:
        return recorded
    given = parse_server_url(url, sqlite_file)
    if recorded is not None and plain(recorded) != plain(given):
        raise ConfigError(
            f"the collection {folder} keeps its catalog at {redacted(recorded)}, not "
            f"{redacted(given)}; leave out --catalog, or use another --db folder"
        )
    if recorded is None and (folder / sqlite_file).exists():
        raise ConfigError(
            f"the collection {folder} has its own catalog ({sqlite_file}); a PostgreSQL catalog "
            "needs a collection folder of its own (--db)"
        )
    return given


def parse_server_url(url: str, sqlite_file: str) -> URL:
    """``url`` as a SQLAlchemy URL of a supported server.

    Raises:
        ConfigError: it is not a URL, or not one of a supported server.
    """
    try:
        given = make_url(url)
        given.port  # noqa: B018  (a port that is not a number fails here, not at connect)
    except (ArgumentError, ValueError) as e:
        raise ConfigError(
            f"--catalog {redacted_text(url)!r} is not a database URL; give one such as "
            "postgresql+psycopg://user@host:5432/vtsearch"
        ) from e
    if given.get_backend_name() not in SERVERS:
        raise ConfigError(
            f"--catalog takes a PostgreSQL URL (postgresql+psycopg://...), not "
            f"{given.get_backend_name()!r}; without it the catalog is {sqlite_file} in the "
            "collection folder"
        )
    return given


def plain(url: URL) -> str:
    """The URL as the folder records it: without the password."""
    return (
        _without_query_password(url)._replace(password=None).render_as_string(hide_password=False)
    )


def record(folder: Path, url: URL) -> None:
    """Write ``catalog.url`` (without the password) once, atomically."""
    path = folder / URL_FILE
    if path.exists():
        return
    tmp = path.with_name(f".{URL_FILE}.{os.getpid()}")
    tmp.write_text(plain(url) + "\n")
    os.replace(tmp, path)


def server_engine(url: URL) -> Engine:
    """An engine on the server; the first connection is made here, so an unreachable server is
    a typed error now rather than a traceback later.

    Raises:
        CatalogConnectionError: the server refused or could not be reached.
    """
    from sqlalchemy.exc import DBAPIError

    engine = create_engine(url, pool_pre_ping=True)
    try:
        with engine.connect():
            pass
    except DBAPIError as e:
        engine.dispose()
        why = str(e.orig).strip().splitlines()[0] if e.orig else str(e)
        raise CatalogConnectionError(
            f"cannot reach the catalog at {redacted(url)}: {why}; check that the server runs "
            "and the database exists (createdb), and the password (PGPASSWORD or ~/.pgpass)"
        ) from e
    return engine


def redacted(url: URL) -> str:
    """The URL as messages show it: no password (nor one given as ``?password=``)."""
    return _without_query_password(url).render_as_string(hide_password=True)


def redacted_text(url: str) -> str:
    try:
        return redacted(make_url(url))
    except (ArgumentError, ValueError):
        return url.split("@")[-1].split("?")[0]


def _without_query_password(url: URL) -> URL:
    return url.difference_update_query(["password"])


def _recorded(folder: Path) -> URL | None:
    path = folder / URL_FILE
    if not path.exists():
        return None
    try:
        return make_url(path.read_text().strip())
    except (ArgumentError, ValueError, OSError) as e:
        raise ConfigError(
            f"{path} does not hold a readable database URL ({e}); write the catalog's "
            "postgresql+psycopg://... URL into it, or pass --catalog"
        ) from e
