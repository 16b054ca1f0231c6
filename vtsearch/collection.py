"""The lazily opened parts of one collection: its catalog, model, vector indexes, re-ranker and
query path. Shared by every thread of an ``Engine``: each part is made once, under one lock."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

from vtsearch import config
from vtsearch.errors import CollectionNotFoundError

if TYPE_CHECKING:
    from vtsearch.models.base import Embedder
    from vtsearch.search.blip import BlipReranker
    from vtsearch.search.gallery import Gallery
    from vtsearch.search.rerank import FusionReranker
    from vtsearch.search.searcher import Searcher
    from vtsearch.storage.catalog import Catalog
    from vtsearch.storage.vectors import VectorIndex

TEXTS = "texts"


class Collection:
    """One collection folder with one model (see ``Engine`` for the arguments)."""

    def __init__(
        self,
        path: Path,
        model: str | None,
        device: str | None,
        embedder: Embedder | None,
        reranker: str | None,
        catalog_url: str | None = None,
        ray_address: str | None = None,
    ) -> None:
        self.path = path
        self._catalog_url = catalog_url
        #: A Ray cluster to use: the image index's shards are searched there when the catalog
        #: records a shard layout (``vtsearch shards build``), and indexing embeds there.
        self.ray_address = ray_address
        self._model_arg = embedder.model_id if embedder is not None else model
        self._device = device
        self._catalog: Catalog | None = None
        self._embedder: Embedder | None = embedder
        self._vindex: VectorIndex | None = None
        #: The local image index when ``_vindex`` holds the Ray shards (``stored_vectors``).
        self._local_vindex: VectorIndex | None = None
        self._tindex: VectorIndex | None = None
        self._reranker_name = reranker
        self._model_checked = False
        self._reranker: FusionReranker | BlipReranker | bool | None = False  # False: not loaded
        self._searcher: Searcher | None = None
        self._gallery: Gallery | None = None
        # Threads that start together share one catalog, model and index instead of racing to
        # make their own.
        self._lock = threading.RLock()

    def catalog(self, create: bool) -> Catalog:
        """The catalog; without ``create``, a missing collection is an error."""
        from vtsearch.storage.catalog import CATALOG_FILE, Catalog

        with self._lock:
            if self._catalog is None:
                if not create and not self._on_server() and not (self.path / CATALOG_FILE).exists():
                    raise CollectionNotFoundError(
                        f"no collection at {self.path}; index a folder first "
                        f"(vtsearch index FOLDER) or pass --db"
                    )
                self._catalog = Catalog.open(self.path, url=self._catalog_url)
            return self._catalog

    @property
    def model_id(self) -> str:
        stored = self._catalog.get_meta("model_id") if self._catalog else None
        return self._model_arg or stored or config.model_name()

    def bound(self, create: bool) -> tuple[Catalog, Embedder]:
        """The catalog and the model, checked once to belong together."""
        with self._lock:
            catalog = self.catalog(create)
            if self._model_arg is None and catalog.get_meta("model_id") is None:
                self._model_arg = config.model_name()
            if self._embedder is None:
                from vtsearch.models.registry import load_embedder

                self._embedder = load_embedder(self.model_id, self._device)
            embedder = self._embedder
            if not self._model_checked and (create or catalog.get_meta("model_id") is not None):
                # A query never binds a collection an indexer is still creating: it finds nothing.
                catalog.bind_model(embedder.model_id, embedder.dim, embedder.revision)
                self._model_checked = True
            return catalog, embedder

    def vectors(self, name: str = "vectors") -> VectorIndex:
        """The image (or text) index, caught up with the catalog (thread-safe; a rebuild after a
        restored catalog happens here)."""
        from vtsearch.storage.vectors import VectorIndex

        catalog, embedder = self.bound(create=False)
        with self._lock:
            attr = "_tindex" if name == TEXTS else "_vindex"
            if getattr(self, attr) is None and name != TEXTS and self.ray_address is not None:
                setattr(self, attr, self._sharded(catalog))
            if getattr(self, attr) is None:
                setattr(self, attr, VectorIndex.load_or_empty(self.path, embedder.dim, name=name))
            vindex = getattr(self, attr)
        vindex.sync(catalog, "text" if name == TEXTS else "image")
        return vindex

    def _sharded(self, catalog: Catalog) -> VectorIndex | None:
        """The image index's shards on the Ray cluster, when the catalog records a layout."""
        from vtsearch.indexer.ray_embed import connect
        from vtsearch.storage.shards import open_if_sharded, read_layout

        if read_layout(catalog) is None:
            return None
        connect(self.ray_address or "auto")
        return open_if_sharded(self.path, catalog)  # type: ignore[return-value]

    def stored_vectors(self) -> VectorIndex | None:
        """The image index caught up with the catalog, without loading the model (comparing
        stored vectors with one another needs none); None before any image was indexed."""
        from vtsearch.storage.vectors import VectorIndex

        catalog = self.catalog(create=False)
        dim = int(catalog.get_meta("dim") or 0)
        if not dim:
            return None
        with self._lock:
            vindex = self._vindex
            if vindex is None or not isinstance(vindex, VectorIndex):
                # Duplicates compare stored vectors (range search, reconstruct), which only
                # the local index offers: with shards in use, it is kept apart.
                if self._local_vindex is None:
                    self._local_vindex = VectorIndex.load_or_empty(self.path, dim)
                vindex = self._local_vindex
                if self._vindex is None and self.ray_address is None:
                    self._vindex = vindex
        vindex.sync(catalog, "image")
        return vindex

    def reranker(self) -> FusionReranker | BlipReranker | None:
        """The re-ranker queries use (loaded on first use), or None."""
        with self._lock:
            if self._reranker is False:
                from vtsearch.models.registry import resolve_device
                from vtsearch.search.rerank import load_reranker

                device = str(resolve_device(self._device))
                self._reranker = load_reranker(self.model_id, self._reranker_name, device)
            return self._reranker  # type: ignore[return-value]

    def searcher(self) -> Searcher:
        from vtsearch.search.searcher import Searcher

        catalog, embedder = self.bound(create=False)
        with self._lock:
            if self._searcher is None:
                self._searcher = Searcher(
                    self.path,
                    catalog,
                    embedder,
                    self.reranker,
                    self.vectors,
                    lambda: self.vectors(TEXTS),
                )
            return self._searcher

    def gallery(self) -> Gallery:
        """The indexed images by id: metadata, files, thumbnails (no model needed)."""
        from vtsearch.search.gallery import Gallery

        catalog = self.catalog(create=False)
        with self._lock:
            if self._gallery is None or self._gallery.catalog is not catalog:
                self._gallery = Gallery(self.path, catalog)
            return self._gallery

    def token_sink(self):
        """Where indexing puts region tokens: the fusion scorer's cache, or None (other
        re-rankers read pixels, not cached tokens)."""
        from vtsearch.search.rerank import FusionReranker, token_cache_for_indexing

        reranker = self.reranker()
        if not isinstance(reranker, FusionReranker):
            return None
        from vtsearch.indexer.pipeline import TokenSink

        return TokenSink(reranker.reduce, token_cache_for_indexing(self.path, reranker))

    def write_lock(self):
        from vtsearch.storage.lock import write_lock

        server = self.catalog(create=True).engine if self._on_server() else None
        return write_lock(self.path, server)

    def _on_server(self) -> bool:
        """Whether the catalog is on a database server (given, or recorded in the folder)."""
        from vtsearch.storage.server_db import URL_FILE

        return self._catalog_url is not None or (self.path / URL_FILE).exists()

    def reload_indexes(self) -> None:
        """Forget the loaded indexes (rebuilt on disk by check, optimize or a shard build)."""
        with self._lock:
            self._close_shards()
            self._vindex = self._tindex = self._searcher = self._local_vindex = None

    def _close_shards(self) -> None:
        close = getattr(self._vindex, "close", None)  # a ShardedIndex ends the actors it started
        if close is not None:
            close()

    def close(self) -> None:
        with self._lock:
            self._close_shards()
            self._vindex = self._local_vindex = None
            if self._catalog is not None:
                self._catalog.close()
                self._catalog = None
            self._searcher = self._gallery = None
