"""Typed errors of the library. The CLI turns them into one-line messages and exit codes, the
server (``vtsearch.server``) into HTTP statuses with a JSON body."""

from __future__ import annotations


class VtsearchError(Exception):
    """Base of every error vtsearch raises on purpose; the message names the fix."""

    exit_code = 1


class ConfigError(VtsearchError):
    """A setting or argument that cannot be used."""

    exit_code = 2


class ModelNotFoundError(VtsearchError):
    """A model name that is neither registered, a local folder, nor downloadable."""

    exit_code = 2


class ModelMismatchError(VtsearchError):
    """The collection was built by another model or with another dimension."""

    exit_code = 3


class CollectionNotFoundError(VtsearchError):
    """No collection at the given path."""

    exit_code = 4


class SchemaVersionError(VtsearchError):
    """The catalog was written by a newer vtsearch."""

    exit_code = 3


class IndexLockedError(VtsearchError):
    """Another indexer holds the collection's write lock."""

    exit_code = 5


class QueryError(VtsearchError):
    """A query that cannot be run (empty, unreadable image, ...)."""

    exit_code = 2


class NotAnImageError(QueryError):
    """A query image that cannot be decoded: not an image, a damaged one, or a format refused."""


class ImageTooLargeError(QueryError):
    """A query image over the size limit, or one that would decode to more pixels than the
    decompression-bomb guard allows."""


class NoTextsError(QueryError):
    """An image -> text search of a collection that has no texts."""


class ImageNotFoundError(VtsearchError):
    """No indexed image has that id (never indexed, removed since, or failed to index), or its
    file may not be served (gone, or not a regular file inside its indexed folder)."""

    exit_code = 4


class NoScorerError(VtsearchError):
    """Something that needs the fusion scorer (an explanation) with a model or re-ranker that
    has none (a CLIP model, ``--reranker none``, BLIP)."""

    exit_code = 2


class ImageDecodeError(VtsearchError):
    """One image that could not be read; recorded per file, never fatal to a run."""


class DatasetError(VtsearchError):
    """Training or evaluation data that is missing or malformed."""

    exit_code = 2


class StorageError(VtsearchError):
    """A collection file that cannot be read or written; the message names the file."""

    exit_code = 6


class DiskFullError(StorageError):
    """No space left to write the collection; nothing committed is lost, re-run to resume."""


class CollectionPermissionError(StorageError):
    """A collection file or folder this user may not read (or write, for a writer)."""


class CatalogConnectionError(StorageError):
    """The collection's catalog server (PostgreSQL) cannot be reached or refused the login."""


class RayError(VtsearchError):
    """Ray is not installed, or its cluster cannot be reached or lost the work it was given."""

    exit_code = 8


class RootError(VtsearchError):
    """An indexed folder that is missing or suddenly looks empty; its rows are kept."""

    exit_code = 7
