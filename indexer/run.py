"""A whole index run over a collection: one folder or every recorded root, with the FAISS file
saved from time to time; and dropping a root. The caller holds the collection's write lock."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from vtsearch import config
from vtsearch.errors import CollectionNotFoundError, ConfigError, RootError
from vtsearch.indexer.pipeline import (
    IndexReport,
    Progress,
    TokenSink,
    delete_deferred,
    index_folder,
    reconcile_tokens,
)
from vtsearch.indexer.scan import HashProgress
from vtsearch.models.base import Embedder
from vtsearch.storage.catalog import Catalog
from vtsearch.storage.thumbs import ThumbCache
from vtsearch.storage.tokens import TokenCache
from vtsearch.storage.vectors import IMAGES, VectorIndex


def _on_gpu(device: object) -> bool:
    return getattr(device, "type", str(device)) == "cuda"


def default_batch_size(device: object) -> int:
    """Images per forward pass: small on a CPU, where activations that fit the caches count most
    (Lite0 alone on 2 cores, `python bench/indexing.py`: 127 img/s at batch 6, 116 at 4, 118 at
    8, 73 at 16; the whole pipeline ran 98 img/s at batch 6, 66 at batch 8 the run before), large
    on a GPU."""
    return 64 if _on_gpu(device) else 6


def default_workers(device: object) -> int:
    """Decoders: on a CPU, threads that take turns with the model, one per core; with a GPU,
    worker processes that decode ahead of it, all cores but the one feeding the GPU, at most 8
    (each holds its own prefetched batches)."""
    # The cores this process may run on (a container or taskset may allow fewer than exist).
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores = cores or 1
    return max(1, min(8, cores - 1)) if _on_gpu(device) else cores


def save_spacing(checkpoint_seconds: float, vectors: int) -> float:
    """Seconds between saves of the FAISS file. A save rewrites the whole file (4.9 GB at 1M HNSW
    vectors): saves space out as the index grows, so they stay a small share of the work."""
    return checkpoint_seconds * max(1.0, vectors / 100_000)


def index_roots(
    roots: list[Path] | None,
    catalog: Catalog,
    vindex: VectorIndex,
    embedder: Embedder,
    *,
    save: Callable[[], None],
    checkpoint_seconds: float,
    save_at_end: bool = True,
    tokens: TokenSink | None = None,
    extensions: Iterable[str],
    max_bytes: int,
    batch_size: int | None = None,
    workers: int | None = None,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
    hash_progress: HashProgress | None = None,
    ray_address: str | None = None,
    listing: list[str] | None = None,
) -> IndexReport:
    """Index ``roots`` (None: every root the catalog records), then ``save`` the FAISS file
    (unless not ``save_at_end``; it is saved during a long run in any case).

    With ``roots`` None, a root that no longer exists (or looks empty) is reported in
    ``missing_roots`` and keeps its rows; one that no longer exists and holds none is forgotten
    (``dropped_roots``). An explicit root that looks empty raises :class:`RootError`.
    ``listing``: the files of the one root given (a manifest) instead of a walk of it.
    """
    refresh = roots is None
    todo = [Path(r) for r in catalog.roots()] if refresh else list(roots or [])
    last_save = time.monotonic()

    def checkpoint(done: int, total: int) -> None:
        nonlocal last_save
        if time.monotonic() - last_save > save_spacing(checkpoint_seconds, len(vindex)):
            save()
            last_save = time.monotonic()
        if progress:
            progress(done, total)

    report = IndexReport()
    deferred: list[tuple[int, str]] = []
    for root in todo:
        if refresh and not root.is_dir():
            if catalog.count_under(str(root)):
                report.missing_roots.append(str(root))
            else:
                catalog.forget_root(str(root))
                report.dropped_roots.append(str(root))
            continue
        try:
            part = index_folder(
                root,
                catalog,
                vindex,
                embedder,
                extensions=extensions,
                max_bytes=max_bytes,
                # On Ray, the actors' device decides (``ray_embed``).
                batch_size=batch_size
                or (None if ray_address else default_batch_size(embedder.device)),
                workers=default_workers(embedder.device) if workers is None else workers,
                progress=checkpoint,
                should_stop=should_stop,
                tokens=tokens,
                hash_progress=hash_progress,
                deferred_deletes=deferred if refresh else None,
                ray_address=ray_address,
                listing=listing,
            )
        except RootError:
            if not refresh:
                raise
            report.missing_roots.append(str(root))
            continue
        report.merge(part)
        if report.interrupted:
            break
    if deferred and not report.interrupted:  # an interrupted refresh leaves them to the next
        report.deleted += delete_deferred(catalog, vindex, tokens, deferred)
    if save_at_end:
        save()
    return report


def roots_to_index(folder: str | Path | None) -> list[Path] | None:
    """``[folder]``, or None (refresh every root) without one.

    Raises:
        CollectionNotFoundError: ``folder`` is not a folder.
    """
    if folder is None:
        return None
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise CollectionNotFoundError(f"{root} is not a folder")
    return [root]


def index_collection(
    folder: Path,
    roots: list[Path] | None,
    catalog: Catalog,
    vindex: VectorIndex,
    embedder: Embedder,
    **options,
) -> IndexReport:
    """:func:`index_roots` over the collection in ``folder`` (the caller holds its write lock),
    saving its FAISS file there; then the cached thumbnails of rows that went are dropped.
    ``options``: those of :func:`index_roots`, and ``lazy_save``: save the FAISS file at the end
    only when the run changed vectors and the file is older than :func:`save_spacing` (a watch's
    many small runs; readers replay the catalog changes a saved file lacks, so this only bounds
    their work).

    Raises:
        ConfigError: no ``roots`` given and the collection records none.
    """
    if roots is None and not catalog.roots():
        raise ConfigError(
            f"no folders are recorded in {folder} yet (collections made before "
            "vtsearch recorded them); index one: vtsearch index FOLDER"
        )
    if catalog.get_meta("index_kind") is None:
        catalog.set_meta("index_kind", vindex.kind)
    options.setdefault("checkpoint_seconds", config.checkpoint_seconds())
    lazy = options.pop("lazy_save", False)
    save = lambda: vindex.save(folder)  # noqa: E731
    report = index_roots(
        roots, catalog, vindex, embedder, save=save, save_at_end=not lazy, **options
    )
    if lazy and _changed_vectors(report):
        saved = folder / f"{IMAGES}.faiss"
        age = time.time() - saved.stat().st_mtime if saved.exists() else float("inf")
        if age > save_spacing(options["checkpoint_seconds"], len(vindex)):
            save()
    ThumbCache(folder).prune(catalog.indexed_ids)
    return report


def _changed_vectors(report: IndexReport) -> bool:
    """Whether a run may have added or removed vectors (a move or a touch changes none)."""
    return bool(report.embedded or report.copied or report.deleted or report.failed)


def resolve_root(catalog: Catalog, folder: str | Path) -> str:
    """The recorded root ``folder`` names (as given, or with links resolved).

    Raises:
        RootError: it is not one of the collection's roots.
    """
    path = str(Path(folder).expanduser().absolute())
    known = catalog.roots()
    for candidate in (path, str(Path(path).resolve())):
        if candidate in known:
            return candidate
    raise RootError(f"{folder} is not an indexed folder ({', '.join(known) or 'none recorded'})")


def forget_root(catalog: Catalog, vindex: VectorIndex, folder: Path, root: str) -> int:
    """Drop ``root`` and its rows, their vectors and tokens; returns how many rows went."""
    n = catalog.forget_root(root)
    cache = TokenCache.open_existing(folder)
    if cache is not None:
        reconcile_tokens(catalog, cache)
    vindex.sync(catalog)
    vindex.save(folder)
    ThumbCache(folder).prune(catalog.indexed_ids)
    return n
