"""The public engine: one collection folder, one model; index, search, similar, images by id,
explain, texts, check, status.

A thin facade: it opens the collection's parts lazily and hands the work to ``vtsearch.indexer``
(index runs), ``vtsearch.search`` (the query path, images by id, explanations) and
``vtsearch.storage`` (check, status).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from vtsearch import config
from vtsearch.collection import TEXTS, Collection

if TYPE_CHECKING:
    from PIL import Image

    from vtsearch.indexer.pipeline import IndexReport
    from vtsearch.models.base import Embedder
    from vtsearch.search.blip import BlipReranker
    from vtsearch.search.explain import Explanation
    from vtsearch.search.rerank import FusionReranker
    from vtsearch.search.results import ImageInfo, Result, TextResult
    from vtsearch.storage.check import CheckReport
    from vtsearch.storage.rebuild import OptimizeReport
    from vtsearch.storage.status import CollectionStatus


class Engine:
    """A collection of images in one folder, searchable by text or by image.

    One engine may serve searches from many threads at once, also while one of them indexes.

    Args:
        path: the collection folder (created on first index); default ``$VTSEARCH_HOME/default``.
        model: embedding model name; default the collection's own model, else ``vtsearch-lite``.
        device: ``"cpu"``, ``"cuda"``...; default CUDA when present.
        embedder: an already loaded model to use (shared between engines); overrides ``model``.
        reranker: ``None`` (the model's fusion scorer if it ships one), ``"none"``, ``"blip"``,
            or the path of a fusion weights file.

    Example:
        >>> eng = Engine("/tmp/photos-index")  # doctest: +SKIP
        >>> eng.index("~/Pictures")  # doctest: +SKIP
        >>> [r.path for r in eng.search(text="a red car", k=3)]  # doctest: +SKIP
    """

    def __init__(
        self,
        path: str | Path | None = None,
        model: str | None = None,
        device: str | None = None,
        embedder: Embedder | None = None,
        reranker: str | None = None,
    ) -> None:
        self.path = Path(path).expanduser() if path else config.default_collection()
        #: The collection's lazily opened parts, shared by every thread using this engine.
        self._parts = Collection(self.path, model, device, embedder, reranker)

    @property
    def model_id(self) -> str:
        return self._parts.model_id

    def reranker(self) -> FusionReranker | BlipReranker | None:
        """The re-ranker queries use (loaded on first use), or None."""
        return self._parts.reranker()

    # -- public API -----------------------------------------------------------------------------
    def index(
        self,
        folder: str | Path | None = None,
        *,
        batch_size: int | None = None,
        workers: int | None = None,
        extensions: tuple[str, ...] = config.DEFAULT_EXTENSIONS,
        max_bytes: int = config.DEFAULT_MAX_FILE_BYTES,
        progress: Callable[[int, int], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        hash_progress: Callable[[int, int], None] | None = None,
    ) -> IndexReport:
        """Index (or re-index) ``folder``: only new, changed, moved or deleted files cost work.

        Without ``folder``, every folder indexed into the collection before is refreshed; one
        that no longer exists (or looks empty) is reported in ``missing_roots`` and keeps its
        rows, one that no longer exists and holds none is dropped (``dropped_roots``).
        ``progress`` follows the embedding, ``hash_progress`` the reading of new files before it;
        ``should_stop`` is polled throughout (what was embedded is committed).

        Raises:
            RootError: ``folder`` looks empty while the collection holds images from it.
        """
        from vtsearch.indexer.run import index_collection, roots_to_index
        from vtsearch.storage.check import remove_leftovers

        roots = roots_to_index(folder)
        if roots is None:
            self._parts.catalog(create=False)  # refreshing needs a collection
        with self._parts.write_lock():
            remove_leftovers(self.path)  # temp files of a save a killed run never finished
            catalog, embedder = self._parts.bound(create=True)
            return index_collection(
                self.path,
                roots,
                catalog,
                self._parts.vectors(),
                embedder,
                tokens=self._parts.token_sink(),
                extensions=extensions,
                max_bytes=max_bytes,
                batch_size=batch_size,
                workers=workers,
                progress=progress,
                should_stop=should_stop,
                hash_progress=hash_progress,
            )

    def roots(self) -> list[str]:
        """The folders indexed into the collection."""
        return self._parts.catalog(create=False).roots()

    def forget_root(self, folder: str | Path) -> int:
        """Drop an indexed folder and every image under it from the collection (the files stay
        where they are); returns how many images were dropped.

        Raises:
            RootError: ``folder`` is not one of the collection's folders.
        """
        from vtsearch.indexer.run import forget_root, resolve_root

        root = resolve_root(self._parts.catalog(create=False), folder)
        with self._parts.write_lock():
            catalog, _ = self._parts.bound(create=False)
            return forget_root(catalog, self._parts.vectors(), self.path, root)

    def search(
        self,
        text: str | None = None,
        image: str | Path | Image.Image | bytes | None = None,
        k: int = 10,
        *,
        offset: int = 0,
        rerank: bool = True,
        rerank_k: int | None = None,
    ) -> list[Result]:
        """Images ranked by similarity to a text query, an example image (a file, a decoded
        image or an image file's bytes), or both; results ``offset`` to ``offset + k``.

        Text may carry weighted terms (``"a beach - people + sunset^0.5"``, see ``parse_query``).
        With a text and a fusion scorer, the bi-encoder's top ``rerank_k`` are re-ranked by it
        and the rest follow in bi-encoder order, so pages of one query never overlap.
        """
        return self._parts.searcher().images(text, image, k, rerank, rerank_k, offset)

    def similar(self, image_id: int, k: int = 10, *, offset: int = 0) -> list[Result]:
        """Images like the indexed image ``image_id`` ("more like this"): its stored vector is
        the query, and the image itself is left out. Raises ``ImageNotFoundError``."""
        return self._parts.searcher().similar(image_id, k, offset)

    def search_texts(
        self,
        image: str | Path | Image.Image | bytes | None = None,
        text: str | None = None,
        k: int = 10,
        *,
        image_id: int | None = None,
        rerank: bool = True,
        rerank_k: int | None = None,
    ) -> list[TextResult]:
        """The collection's texts ranked by similarity to an image (or the indexed image
        ``image_id``), a text, or both. With a query image and a fusion scorer, the top
        ``rerank_k`` texts are re-ranked by it. Raises ``NoTextsError`` without texts."""
        return self._parts.searcher().texts(image, text, k, rerank, rerank_k, image_id)

    def image(self, image_id: int) -> ImageInfo:
        """Catalog metadata of an indexed image. Raises ``ImageNotFoundError``."""
        return self._parts.gallery().info(image_id)

    def image_file(self, image_id: int) -> Path:
        """The file of an indexed image, links resolved, when it is a regular file inside its
        indexed folder; else ``ImageNotFoundError`` (see ``vtsearch.search.gallery``)."""
        return self._parts.gallery().file(image_id)

    def thumbnail(self, image_id: int) -> bytes:
        """A JPEG thumbnail (longest side 256) of an indexed image, cached in the collection's
        ``thumbs/`` folder. Raises ``ImageNotFoundError``."""
        return self._parts.gallery().thumbnail(image_id)

    def explain(self, text: str, image_id: int) -> Explanation:
        """Where each word of ``text`` looks in the indexed image ``image_id`` and how much it
        counts, by the fusion scorer. Raises ``NoScorerError`` when there is none."""
        return self._parts.searcher().explain(text, image_id)

    def can_explain(self) -> bool:
        """Whether the re-ranker is a fusion scorer (what ``explain`` needs)."""
        from vtsearch.search.rerank import FusionReranker

        return isinstance(self.reranker(), FusionReranker)

    def add_texts(
        self, texts: Sequence[str], source: str | None = None, batch_size: int = 256
    ) -> int:
        """Add texts (captions, labels) that images can be matched against; returns how many
        were new. Duplicates of stored texts are skipped."""
        from vtsearch.indexer.texts import add_texts

        with self._parts.write_lock():
            catalog, embedder = self._parts.bound(create=True)
            n = add_texts(catalog, embedder, texts, source, batch_size)
            self._parts.vectors(TEXTS).save(self.path, TEXTS)
            return n

    def remove_texts(self, source: str | None = None) -> int:
        """Remove the texts added from ``source``, or all texts; returns how many."""
        with self._parts.write_lock():
            catalog, _ = self._parts.bound(create=False)
            n = catalog.remove_texts(source)
            self._parts.vectors(TEXTS).save(self.path, TEXTS)
            return n

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

    def status(self) -> CollectionStatus:
        """Model, counts, folders, failed files and size on disk of the collection."""
        from vtsearch.storage.status import collection_status

        return collection_status(self.path, self._parts.catalog(create=False))

    def close(self) -> None:
        self._parts.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
