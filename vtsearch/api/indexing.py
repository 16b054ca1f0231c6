"""The writing half of the engine: index runs, watching folders, the collection's folders,
texts and tags. Each run holds the collection's write lock and hands the work to
``vtsearch.indexer``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from vtsearch import config
from vtsearch.collection import TEXTS, Collection
from vtsearch.errors import ConfigError

if TYPE_CHECKING:
    from vtsearch.indexer.pipeline import IndexReport
    from vtsearch.indexer.tagging import TagReport
    from vtsearch.indexer.watch import WatchReport, WatchRun
    from vtsearch.storage.catalog_tags import StoredTagSet


class Indexing:
    """``Engine``'s index, watch, roots, forget_root, add_texts, remove_texts and tag."""

    path: Path
    _parts: Collection

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
        ray: str | None = None,
        manifest: str | Path | None = None,
    ) -> IndexReport:
        """Index (or re-index) ``folder``: only new, changed, moved or deleted files cost work.

        Without ``folder``, every folder indexed into the collection before is refreshed; one
        that no longer exists (or looks empty) is reported in ``missing_roots`` and keeps its
        rows, one that no longer exists and holds none is dropped (``dropped_roots``).
        ``progress`` follows the embedding, ``hash_progress`` the reading of new files before it;
        ``should_stop`` is polled throughout (what was embedded is committed). ``ray``: decode
        and embed on a Ray cluster (``"auto"``, ``"local"``, or its address; a process that
        called ``ray.init`` uses its own) while this process scans and commits. ``manifest``: a
        file listing the images (one absolute path a line, e.g. on shared storage) instead of
        ``folder``; the folder they share becomes the root, and what it held before and the
        manifest no longer lists is deleted.

        Raises:
            RootError: ``folder`` looks empty while the collection holds images from it.
            RayError: Ray is missing, its cluster unreachable, or it failed the work.
            ConfigError: both ``folder`` and ``manifest``, or a manifest that lists nothing.
        """
        from vtsearch.indexer.run import roots_to_index
        from vtsearch.indexer.scan import read_manifest

        listing = None
        if manifest is not None:
            if folder is not None:
                raise ConfigError("give a folder or a manifest, not both")
            root, listing = read_manifest(Path(manifest).expanduser())
            roots = [root]
        else:
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
            ray_address=ray or self._parts.ray_address,
            listing=listing,
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

    def tag(
        self,
        labels: str | Path | Sequence[str],
        *,
        name: str = "default",
        threshold: float | None = None,
        top_k: int = 1,
        limit: int = 5,
        progress: Callable[[int, int], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> TagReport:
        """Tag the indexed images with zero-shot ``labels`` (a list, a file with one per line,
        or ``"cat,dog,car"``), stored as the label set ``name``: each image keeps the labels
        whose calibrated confidence is ``threshold`` or more (default: the model's calibrated
        threshold; at most ``limit``), else its ``top_k`` most similar labels. Tagging again
        scores only images the set has not scored; changed labels or rule re-tag all. Search
        with ``Filters(tags=["dog"])``; see ``vtsearch.indexer.tagging``.

        Example:
            >>> Engine("./my-index").tag("cat,dog,car,beach,mountain")  # doctest: +SKIP

        Raises:
            ConfigError: no labels, a threshold outside 0..1 or one for a model without
                calibration.
        """
        from vtsearch.indexer.tagging import read_labels, tag_images
        from vtsearch.models.calibration import load_tag_calibration

        wanted = read_labels(labels)
        name = name.strip()
        if not name:
            from vtsearch.errors import ConfigError

            raise ConfigError("a tag set needs a name, e.g. 'default' or 'animals'")
        with self._parts.write_lock():
            catalog, embedder = self._parts.bound(create=False)
            return tag_images(
                catalog,
                embedder,
                wanted,
                name=name,
                calibration=load_tag_calibration(embedder),
                threshold=threshold,
                top_k=top_k,
                limit=limit,
                progress=progress,
                should_stop=should_stop,
            )

    def tag_sets(self) -> list[StoredTagSet]:
        """The label sets the images were tagged with (``StoredTagSet``: name, labels, model,
        rule, how many images scored and tags kept)."""
        return self._parts.catalog(create=False).tag_sets()

    def tag_counts(self) -> list[tuple[str, int]]:
        """Each tag with how many images have it, most first."""
        return self._parts.catalog(create=False).tag_counts()

    def remove_tags(self, name: str) -> int:
        """Drop the tag set ``name`` and its tags; returns how many tags went.

        Raises:
            ConfigError: no tag set has that name.
        """
        from vtsearch.errors import ConfigError

        with self._parts.write_lock():
            catalog, _ = self._parts.bound(create=False)
            if name not in {s.name for s in catalog.tag_sets()}:
                raise ConfigError(f"no tag set named {name!r}; `vtsearch tag --list` shows them")
            return catalog.remove_tag_set(name)
