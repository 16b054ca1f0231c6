"""The upkeep half of the engine: duplicates, check and repair, optimize, status and export.
None of them loads a model; each hands the work to ``vtsearch.search.dupes`` or
``vtsearch.storage``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from vtsearch.collection import Collection

if TYPE_CHECKING:
    from vtsearch.search.dupes import DupeGroups
    from vtsearch.storage.catalog_move import MoveReport
    from vtsearch.storage.check import CheckReport
    from vtsearch.storage.export import ExportReport
    from vtsearch.storage.rebuild import OptimizeReport
    from vtsearch.storage.shards import ShardLayout
    from vtsearch.storage.status import CollectionStatus


class Upkeep:
    """``Engine``'s duplicates, check, optimize, status and export."""

    path: Path
    _parts: Collection

    def export(
        self, path: str | Path, format: str = "parquet", *, include_failed: bool = False
    ) -> ExportReport:
        """Write the collection's rows (id, path, folder, file metadata, tags and vector) for
        other tools: one Parquet file, or a folder of ``vectors.npy``, ``ids.npy`` and
        ``meta.parquet`` (``format="npy"``). Only indexed images unless ``include_failed``.
        Rows are streamed from one consistent snapshot of the catalog, so an indexer may run
        meanwhile; the output appears whole or not at all (see ``vtsearch.storage.export``).

        Raises:
            ConfigError: an unknown format, or an npy folder that exists and is not empty.
            StorageError: ``path`` cannot be written (permission, full disk).
        """
        from vtsearch.storage.export import export_collection

        catalog = self._parts.catalog(create=False)
        return export_collection(catalog, Path(path).expanduser(), format, include_failed)

    def duplicates(self, threshold: float | None = None, *, exact_only: bool = False) -> DupeGroups:
        """Groups of copies among the indexed images: byte-identical files, and near copies
        (resized, re-encoded, cropped a little, a small edit) whose similarity is ``threshold``
        or more. Candidates come from the vector index; with the default model they are judged
        by their cached region tokens, else by their vectors (``vtsearch.search.dupes``; the
        defaults were chosen on planted copies of Flickr8k dev). The file to keep comes first in
        each group: largest resolution, then largest file, then oldest. No model is loaded.

        Returns a list of ``DupeGroup`` whose ``measure`` and ``threshold`` say what was used.

        Example:
            >>> for group in Engine("/tmp/photos-index").duplicates():  # doctest: +SKIP
            ...     print([(f.path, f.width, f.height, f.keep) for f in group.files])
        """
        from vtsearch.search.dupes import check_threshold, find_duplicates
        from vtsearch.storage.tokens import TokenCache

        if threshold is not None:
            check_threshold(threshold)  # before any file is opened
        catalog = self._parts.catalog(create=False)
        vindex = None if exact_only else self._parts.stored_vectors()
        tokens = None if exact_only else TokenCache.open_existing(self.path)
        return find_duplicates(catalog, vindex, threshold, tokens=tokens, exact_only=exact_only)

    def check(self, repair: bool = False) -> CheckReport:
        """Verify that the catalog, the FAISS index and the token cache agree.

        With ``repair``, rebuild what is derivable (under the write lock): the FAISS file from the
        catalog's vectors, the token cache without records no row points at; rows that lost their
        vector or tokens are embedded again by the next ``index`` run (``vtsearch.storage.check``).
        """
        from vtsearch.storage.check import check_collection

        catalog = self._parts.catalog(create=False)
        # Under the write lock even to look: a running indexer's half-done batch is no problem.
        with self._parts.write_lock():
            report = check_collection(self.path, catalog, repair=repair)
        self._parts.reload_indexes()
        return report

    def optimize(
        self,
        kind: str | None = None,
        *,
        force: bool = False,
        dry_run: bool = False,
        memory_bytes: int | None = None,
    ) -> list[OptimizeReport]:
        """Rebuild each vector index whose kind no longer fits the collection's size (``kind``
        forces one; ``force`` compacts a right one; ``dry_run`` only reports). Queries keep
        using the old index until the new one is saved."""
        from vtsearch.storage.rebuild import optimize

        catalog = self._parts.catalog(create=False)
        with self._parts.write_lock():
            reports = optimize(
                self.path,
                catalog,
                kind=kind,
                force=force,
                dry_run=dry_run,
                memory_bytes=memory_bytes,
            )
        self._parts.reload_indexes()
        return reports

    def build_shards(
        self,
        n_shards: int = 2,
        kind: str = "auto",
        *,
        nlist: int | None = None,
        nprobe: int | None = None,
        pq_m: int | None = None,
    ) -> ShardLayout:
        """Split the image index into ``n_shards`` shard files that Ray actors hold (IVF-PQ
        trained once on a catalog sample, built in bounded memory; ``kind`` ``flat`` for exact
        shards) and record the layout in the catalog; an engine made with ``ray`` then searches
        them on the cluster (see ``docs/scale.md``).

        Raises:
            ConfigError: no vectors yet, or too few to train IVF-PQ on.
        """
        from vtsearch.storage.shards import build_shards, choose_spec

        catalog = self._parts.catalog(create=False)
        dim = int(catalog.get_meta("dim") or 0)
        count = catalog.counts().get("indexed", 0)
        spec = choose_spec(kind, count, dim, nlist, nprobe, pq_m) if dim else None
        with self._parts.write_lock():
            layout = build_shards(catalog, self.path, n_shards, spec)
        self._parts.reload_indexes()
        return layout

    def shard_layout(self) -> ShardLayout | None:
        """The shard layout the catalog records, or None when the index is not sharded."""
        from vtsearch.storage.shards import read_layout

        return read_layout(self._parts.catalog(create=False))

    def move_catalog(self, url: str) -> MoveReport:
        """Move the collection's SQLite catalog into the empty PostgreSQL database ``url``
        (ids, history and marks kept: the vector index files stay valid); the folder records
        the server, and the SQLite file is kept aside, renamed.

        Raises:
            ConfigError: no SQLite catalog here, or the database is not empty.
            CatalogConnectionError: the server cannot be reached.
        """
        from vtsearch.storage.catalog_move import move_to_server

        self._parts.catalog(create=False)
        with self._parts.write_lock():
            self._parts.close()
            return move_to_server(self.path, url)

    def status(self) -> CollectionStatus:
        """Model, counts, folders, failed files and size on disk of the collection."""
        from vtsearch.storage.status import collection_status

        return collection_status(self.path, self._parts.catalog(create=False))
