"""The public engine: one collection folder, one model; index, watch, search, similar, images by
id, explain, texts, check, status, export.

A thin facade: it opens the collection's parts lazily and hands the work to ``vtsearch.indexer``
(index runs, watching folders), ``vtsearch.search`` (the query path, images by id, explanations) and
``vtsearch.storage`` (check, status, export).
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
    from vtsearch.indexer.watch import WatchReport, WatchRun
    from vtsearch.models.base import Embedder
    from vtsearch.search.blip import BlipReranker
    from vtsearch.search.dupes import DupeGroups
    from vtsearch.search.explain import Explanation
    from vtsearch.search.rerank import FusionReranker
    from vtsearch.search.results import ImageInfo, Result, TextResult
    from vtsearch.storage.check import CheckReport
    from vtsearch.storage.export import ExportReport
    from vtsearch.storage.filters import Filters
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
        from vtsearch.indexer.run import roots_to_index

        roots = roots_to_index(folder)
        if roots is None:
            self._parts.catalog(create=False)  # refreshing needs a collection
        return self._index(
            roots,
            extensions=extensions,
            max_bytes=max_bytes,
            batch_size=batch_size,
            workers=workers,
            progress=progress,
            should_stop=should_stop,
            hash_progress=hash_progress,
        )

    def _index(self, roots: list[Path] | None, **options) -> IndexReport:
        """One run under the write lock (``options``: ``indexer.run.index_collection``'s)."""
        from vtsearch.indexer.run import index_collection
        from vtsearch.storage.check import remove_leftovers

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
                **options,
            )

    def watch(
        self,
        folder: str | Path | None = None,
        *,
        debounce: float = 2.0,
        max_delay: float = 30.0,
        rescan_every: float = 600.0,
        on_run: Callable[[WatchRun], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        batch_size: int | None = None,
        workers: int | None = None,
        extensions: tuple[str, ...] = config.DEFAULT_EXTENSIONS,
        max_bytes: int = config.DEFAULT_MAX_FILE_BYTES,
    ) -> WatchReport:
        """Index ``folder`` (None: every folder of the collection), then keep the collection
        current as files change, until ``should_stop`` says so.

        File events are debounced (a run once none came for ``debounce`` seconds, at the latest
        ``max_delay`` seconds into a steady stream) into ordinary ``index`` runs, each under the
        write lock for that run only; a full run every ``rescan_every`` seconds catches events
        the file system never sent. ``on_run`` gets a ``WatchRun`` after each run (see
        ``vtsearch.indexer.watch``); the other options are ``index``'s.

        Example:
            >>> stop = threading.Event()  # doctest: +SKIP
            >>> Engine("./my-index").watch("~/Pictures", on_run=print, should_stop=stop.is_set)
            ... # doctest: +SKIP

        Raises:
            CollectionNotFoundError: ``folder`` is not a folder, or no collection without one.
            ConfigError: no folder is recorded, or the system cannot watch that many folders.
        """
        from vtsearch.errors import IndexLockedError
        from vtsearch.indexer.run import roots_to_index
        from vtsearch.indexer.watch import watch_folders

        roots = roots_to_index(folder)
        if roots is None:
            self.roots()  # a collection is needed to know its folders

        def run(root: Path | None, stop: Callable[[], bool]) -> IndexReport:
            # Many small runs: the FAISS file is saved when it lags, and once more at the end.
            return self._index(
                roots_to_index(root),
                lazy_save=True,
                batch_size=batch_size,
                workers=workers,
                extensions=extensions,
                max_bytes=max_bytes,
                should_stop=stop,
            )

        report = watch_folders(
            roots[0] if roots else None,
            self.roots,
            run,
            extensions=extensions,
            debounce=debounce,
            max_delay=max_delay,
            rescan_every=rescan_every,
            ignore=(self.path,),
            on_run=on_run,
            should_stop=should_stop,
        )
        if report.runs:
            try:
                with self._parts.write_lock():
                    self._parts.vectors().save(self.path)
            except IndexLockedError:
                pass  # another writer has it, and saves it when done
        return report

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
        filters: Filters | None = None,
    ) -> list[Result]:
        """Images ranked by similarity to a text query, an example image (a file, a decoded
        image or an image file's bytes), or both; results ``offset`` to ``offset + k``.

        Text may carry weighted terms (``"a beach - people + sunset^0.5"``, see ``parse_query``).
        With a text and a fusion scorer, the bi-encoder's top ``rerank_k`` are re-ranked by it
        and the rest follow in bi-encoder order, so pages of one query never overlap.

        ``filters`` (folder, file name, date taken, size, shape, format) are applied inside the
        search, so ``k`` results come back whenever ``k`` images match; its ``min_score`` cuts
        the results whose final score is lower.

        Example:
            >>> from vtsearch.storage.filters import Filters
            >>> eng.search("a beach", k=20, filters=Filters(after="2024-06", before="2024-09",
            ...     folders=["~/Pictures"], orientation="landscape"))  # doctest: +SKIP
        """
        return self._parts.searcher().images(text, image, k, rerank, rerank_k, offset, filters)

    def similar(
        self, image_id: int, k: int = 10, *, offset: int = 0, filters: Filters | None = None
    ) -> list[Result]:
        """Images like the indexed image ``image_id`` ("more like this"): its stored vector is
        the query, and the image itself is left out; ``filters`` as for :meth:`search`. Raises
        ``ImageNotFoundError``."""
        return self._parts.searcher().similar(image_id, k, offset, filters)

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

    def duplicates(
        self, threshold: float | None = None, *, exact_only: bool = False
    ) -> DupeGroups:
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
