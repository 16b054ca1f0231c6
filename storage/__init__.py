"""Persistent state of a collection: the SQLite catalog and the FAISS vector index."""

from vtsearch.storage.catalog import Catalog, FileRecord, ImageRow
from vtsearch.storage.vectors import VectorIndex

__all__ = ["Catalog", "FileRecord", "ImageRow", "VectorIndex"]
