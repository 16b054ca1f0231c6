"""The public engine: one collection folder, one model, index and search."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from vtsearch import config
from vtsearch.errors import (
    CollectionNotFoundError,
    CollectionPermissionError,
    ConfigError,
    IndexLockedError,
    QueryError,
    RootError,
    StorageError,
)

if TYPE_CHECKING:
    from PIL import Image

    from vtsearch.check import CheckReport
    from vtsearch.indexer.pipeline import IndexReport
    from vtsearch.models.base import Embedder
    from vtsearch.search.blip import BlipReranker
    from vtsearch.search.rerank import FusionReranker
    from vtsearch.search.results import Result, TextResult
    from vtsearch.storage.catalog import Catalog
    from vtsearch.storage.vectors import VectorIndex

LOCK_FILE = "index.lock"
TEXTS = "texts"
#: While indexing, the FAISS file is re-saved at most this often, so readers replay little
#: (``$VTSEARCH_CHECKPOINT_SECONDS`` overrides it).
CHECKPOINT_SECONDS = config.checkpoint_seconds()


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
    import os

    # The cores this process may run on (a container or taskset may allow fewer than exist).
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores = cores or 1
    return max(1, min(8, cores - 1)) if _on_gpu(device) else cores


#: Memoised image priors kept before the memo starts over (about 100 bytes each).
PRIOR_MEMO_MAX = 200_000


@dataclass
class CollectionStatus:
    path: str
    model_id: str | None
    dim: int | None
    index_kind: str | None
    counts: dict[str, int]
    failed: list[tuple[str, str]] = field(default_factory=list)
    bytes_on_disk: int = 0
    #: The indexed folders: ``(path, exists, images catalogued under it)``.
    roots: list[tuple[str, bool, int]] = field(default_factory=list)
    #: Opened read-only (this user may not write the collection).
    readonly: bool = False

    @property
    def indexed(self) -> int:
        return self.counts.get("indexed", 0)


class Engine:
    """A collection of images in one folder, searchable by text or by image.

    One engine may serve searches from many threads at once, also while one of them indexes.

    Args:
        path: the collection folder (created on first index); default ``$VTSEARCH_HOME/default``.
        model: embedding model name; default the collection's own model, else ``vtsearch-lite``.
        device: ``"cpu"``, ``"cuda"``...; default CUDA when present.
        embedder: an already loaded model to use (shared between engines); overrides ``model``.
        reranker: ``None`` (the model's fusion scorer if it ships one), ``"none"``, or the path of
            a fusion weights file.

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
        self._model_arg = embedder.model_id if embedder is not None else model
        self._device = device
        self._catalog: Catalog | None = None
        self._embedder: Embedder | None = embedder
        self._vindex: VectorIndex | None = None
        self._tindex: VectorIndex | None = None
        self._reranker_name = reranker
        self._model_checked = False
        self._reranker: FusionReranker | BlipReranker | bool | None = False  # False: not loaded
        self._prior_memo: dict[int, float] = {}
        # Guards the lazy loading of the parts above, so threads that start together share one
        # catalog, model and index instead of racing to make their own.
        self._init_lock = threading.RLock()

    # -- lazily opened parts ------------------------------------------------------------------
    def _open_catalog(self, create: bool) -> Catalog:
        with self._init_lock:
            return self._open_catalog_locked(create)

    def _open_catalog_locked(self, create: bool) -> Catalog:
        if self._catalog is None:
            from vtsearch.storage.catalog import Catalog

            if not create and not (self.path / "catalog.db").exists():
                raise CollectionNotFoundError(
                    f"no collection at {self.path}; index a folder first "
                    f"(vtsearch index FOLDER) or pass --db"
                )
            self._catalog = Catalog.open(self.path)
        return self._catalog

    @property
    def model_id(self) -> str:
        stored = self._catalog.get_meta("model_id") if self._catalog else None
        if self._model_arg:
            return self._model_arg
        return stored or config.model_name()

    def _load_embedder(self) -> Embedder:
        with self._init_lock:
            if self._embedder is None:
                from vtsearch.models.registry import load_embedder

                self._embedder = load_embedder(self.model_id, self._device)
            return self._embedder

    def _bound(self, create: bool) -> tuple[Catalog, Embedder]:
        with self._init_lock:
            return self._bound_locked(create)

    def _bound_locked(self, create: bool) -> tuple[Catalog, Embedder]:
        catalog = self._open_catalog(create)
        if self._model_arg is None and catalog.get_meta("model_id") is None:
            self._model_arg = config.model_name()
        embedder = self._load_embedder()
        if not self._model_checked and (create or catalog.get_meta("model_id") is not None):
            # Once per engine: the check reads the catalog's metadata, not needed on every query.
            # A query never binds a collection an indexer is still creating: it just finds nothing.
            catalog.bind_model(embedder.model_id, embedder.dim, embedder.revision)
            self._model_checked = True
        return catalog, embedder

    def _vectors(self, catalog: Catalog, dim: int) -> VectorIndex:
        from vtsearch.storage.vectors import VectorIndex

        with self._init_lock:
            if self._vindex is None:
                self._vindex = _load_or_empty(VectorIndex, self.path, dim)
            vindex = self._vindex
        vindex.sync(catalog)  # thread-safe, and a rebuild after a restore happens here
        return vindex

    def _text_vectors(self, catalog: Catalog, dim: int) -> VectorIndex:
        from vtsearch.storage.vectors import VectorIndex

        with self._init_lock:
            if self._tindex is None:
                self._tindex = _load_or_empty(VectorIndex, self.path, dim, name=TEXTS)
            tindex = self._tindex
        tindex.sync(catalog, "text")
        return tindex

    @contextmanager
    def _write_lock(self) -> Iterator[None]:
        """One writer per collection. The OS drops the lock when its process dies, so a killed
        indexer never leaves a stale lock behind."""
        from filelock import FileLock, Timeout

        lock_path = self.path / LOCK_FILE
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            lock = FileLock(str(lock_path))
            lock.acquire(timeout=0)
        except Timeout as e:
            raise IndexLockedError(
                f"another vtsearch process is writing to {self.path}; wait for it to finish"
            ) from e
        except PermissionError as e:
            raise CollectionPermissionError(
                f"cannot write to the collection {self.path} ({lock_path}: permission denied); "
                "searching it works read-only, index into a collection of your own with --db"
            ) from e
        try:
            yield
        finally:
            lock.release()

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

        Raises:
            RootError: ``folder`` looks empty while the collection holds images from it.
        """
        from vtsearch.indexer.pipeline import IndexReport, index_folder

        if folder is not None:
            roots = [Path(folder).expanduser()]
            if not roots[0].is_dir():
                raise CollectionNotFoundError(f"{roots[0]} is not a folder")
        elif not (self.path / "catalog.db").exists():
            raise CollectionNotFoundError(
                f"no collection at {self.path}; index a folder first (vtsearch index FOLDER)"
            )
        with self._write_lock():
            from vtsearch.check import remove_leftovers

            remove_leftovers(self.path)  # temp files of a save a killed run never finished
            catalog, embedder = self._bound(create=True)
            if folder is None:
                roots = [Path(r) for r in catalog.roots()]
                if not roots:
                    raise ConfigError(
                        f"no folders are recorded in {self.path} yet (collections made before "
                        "vtsearch recorded them); index one: vtsearch index FOLDER"
                    )
            vindex = self._vectors(catalog, embedder.dim)
            last_save = [time.monotonic()]

            def checkpoint(done: int, total: int) -> None:
                # A save rewrites the whole file (4.9 GB at 1M HNSW vectors): space saves out as
                # the index grows, so they stay a small share of the run.
                every = CHECKPOINT_SECONDS * max(1.0, len(vindex) / 100_000)
                if time.monotonic() - last_save[0] > every:
                    vindex.save(self.path)
                    last_save[0] = time.monotonic()
                if progress:
                    progress(done, total)

            if catalog.get_meta("index_kind") is None:
                catalog.set_meta("index_kind", vindex.kind)
            report = IndexReport()
            for root in roots:
                if folder is None and not root.is_dir():
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
                        batch_size=batch_size or default_batch_size(embedder.device),
                        workers=default_workers(embedder.device) if workers is None else workers,
                        progress=checkpoint,
                        should_stop=should_stop,
                        tokens=self._token_sink(),
                        hash_progress=hash_progress,
                    )
                except RootError:
                    if folder is not None:
                        raise
                    report.missing_roots.append(str(root))
                    continue
                report.merge(part)
                if report.interrupted:
                    break
            vindex.save(self.path)
            return report

    def _token_sink(self):
        """Where indexing puts region tokens: the fusion scorer's cache (other re-rankers read
        pixels, not cached tokens), or None."""
        from vtsearch.search.rerank import FusionReranker

        reranker = self._load_reranker()
        if not isinstance(reranker, FusionReranker):
            return None
        from vtsearch.indexer.pipeline import TokenSink
        from vtsearch.storage.tokens import TokenCache

        revision = reranker.token_revision
        found = TokenCache.open_existing(self.path)
        if (
            found is not None
            and (found.n_tokens, found.dim) == reranker.token_shape
            and reranker.reads_tokens_of(found.revision)
        ):
            revision = found.revision  # a cache of an older version keyed by the weights file
        return TokenSink(reranker.reduce, TokenCache(self.path, *reranker.token_shape, revision))

    def roots(self) -> list[str]:
        """The folders indexed into the collection."""
        return self._open_catalog(create=False).roots()

    def forget_root(self, folder: str | Path) -> int:
        """Drop an indexed folder and every image under it from the collection (the files stay
        where they are); returns how many images were dropped.

        Raises:
            RootError: ``folder`` is not one of the collection's folders.
        """
        catalog = self._open_catalog(create=False)
        path = str(Path(folder).expanduser().absolute())
        known = catalog.roots()
        if path not in known:
            resolved = str(Path(path).resolve())
            if resolved not in known:
                listed = ", ".join(known) or "none"
                raise RootError(f"{folder} is not an indexed folder of {self.path} ({listed})")
            path = resolved
        with self._write_lock():
            n = catalog.forget_root(path)
            from vtsearch.storage.tokens import TokenCache

            cache = TokenCache.open_existing(self.path)
            if cache is not None:
                from vtsearch.indexer.pipeline import reconcile_tokens

                reconcile_tokens(catalog, cache)
            vindex = self._vectors(catalog, int(catalog.get_meta("dim") or 0))
            vindex.save(self.path)
        return n

    def search(
        self,
        text: str | None = None,
        image: str | Path | Image.Image | None = None,
        k: int = 10,
        *,
        rerank: bool = True,
        rerank_k: int | None = None,
    ) -> list[Result]:
        """Images ranked by similarity to a text query, an example image, or both.

        Text may carry weighted terms (``"a beach - people + sunset^0.5"``, see ``parse_query``).
        With a text and a fusion scorer, the bi-encoder's top ``rerank_k`` are re-ranked by it.
        """
        from vtsearch.search.blip import BlipReranker
        from vtsearch.search.query import encode_query, try_read_image
        from vtsearch.search.retrieve import apply_rerank, retrieve_rows

        self._check_k(k)
        catalog, embedder = self._bound(create=False)
        q = encode_query(embedder, text, image)
        reranker = self._load_reranker() if rerank and q.text is not None else None
        depth = max(k, rerank_k or (reranker.default_k if reranker else k))
        hits, rows = retrieve_rows(q.vector, self._vectors(catalog, embedder.dim), catalog, depth)
        if reranker is None or not hits:
            return hits[:k]
        ids = [h.id for h in hits]
        if isinstance(reranker, BlipReranker):
            images = [try_read_image(h.path) for h in hits]
            return apply_rerank(hits, reranker.score_images(q.main_text, images), 1.0, k)
        fusion = None
        if reranker.mix["t2i"]:
            regions = self._region_tokens(reranker, embedder, ids)
            fusion = reranker.score_images(q.text, regions)
        priors = self._priors(reranker, ids, rows)
        return apply_rerank(hits, fusion, reranker.mix["t2i"], k, priors)

    @staticmethod
    def _check_k(k: int) -> None:
        if k < 1:
            raise QueryError(f"k must be at least 1, not {k}")

    def _load_reranker(self) -> FusionReranker | BlipReranker | None:
        with self._init_lock:
            if self._reranker is False:
                from vtsearch.models.registry import resolve_device
                from vtsearch.search.rerank import load_reranker

                device = str(resolve_device(self._device))
                self._reranker = load_reranker(self.model_id, self._reranker_name, device)
            return self._reranker  # type: ignore[return-value]

    def _priors(self, reranker: FusionReranker, ids: list[int], rows: dict) -> np.ndarray:
        """Query-bank priors of images, memoised: a row id always names the same vector (a
        changed file gets a new id), and hubs come back in query after query. ``rows``: the
        catalog rows the search read, which carry the vectors of the ids not memoised yet."""
        if len(self._prior_memo) > PRIOR_MEMO_MAX:
            self._prior_memo.clear()
        todo = [i for i in ids if i not in self._prior_memo]
        if todo:
            todo = [i for i in todo if i in rows and rows[i].vector]
            if todo:
                vecs = np.stack([np.frombuffer(rows[i].vector, dtype=np.float32) for i in todo])
                priors = reranker.prior("t2i", vecs).tolist()
                self._prior_memo.update(zip(todo, priors, strict=True))
        return np.array([self._prior_memo.get(i, 0.0) for i in ids], dtype=np.float32)

    def _region_tokens(
        self, reranker: FusionReranker, embedder: Embedder, ids: list[int]
    ) -> np.ndarray:
        """Cached tokens of ``ids``; images without them are decoded and encoded again."""
        import torch

        from vtsearch.search.query import try_read_image
        from vtsearch.storage.tokens import TokenCache

        cache = TokenCache.open_existing(self.path)
        if cache is not None and (
            (cache.n_tokens, cache.dim) != reranker.token_shape
            or not reranker.reads_tokens_of(cache.revision)
        ):
            cache = None
        got = cache.get(np.array(ids)) if cache is not None else [None] * len(ids)
        missing = [i for i, t in zip(ids, got, strict=True) if t is None]
        if missing:
            rows = self._catalog.rows(missing) if self._catalog else {}
            images = {i: try_read_image(rows[i].path) for i in missing if i in rows}
            # A row deleted or a file gone since the search: neutral (zero) tokens, no error.
            readable = [i for i in missing if images.get(i) is not None]
            blank = np.zeros(reranker.token_shape, dtype=np.float32)
            by_id = dict.fromkeys(missing, blank)
            if readable:
                pixels = torch.stack([embedder.transform(images[i]) for i in readable])
                fresh = reranker.reduce(embedder.encode_images(pixels.to(embedder.device)).tokens)
                by_id.update(zip(readable, fresh, strict=True))
            got = [t if t is not None else by_id[i] for i, t in zip(ids, got, strict=True)]
        return np.stack(got).astype(np.float32)

    def add_texts(
        self, texts: Sequence[str], source: str | None = None, batch_size: int = 256
    ) -> int:
        """Add texts (captions, labels) that images can be matched against; returns how many
        were new. Duplicates of stored texts are skipped."""
        with self._write_lock():
            catalog, embedder = self._bound(create=True)
            seen: set[str] = set()
            fresh = [t for t in (x.strip() for x in texts) if t and not (t in seen or seen.add(t))]
            known = catalog.known_texts(fresh)  # one lookup, not one per text
            fresh = [t for t in fresh if t not in known]
            for i in range(0, len(fresh), batch_size):
                chunk = fresh[i : i + batch_size]
                vecs = embedder.encode_texts(chunk).vectors.float().cpu().numpy()
                catalog.add_texts(chunk, vecs, source)
            tindex = self._text_vectors(catalog, embedder.dim)
            tindex.save(self.path, TEXTS)
            return len(fresh)

    def remove_texts(self, source: str | None = None) -> int:
        """Remove the texts added from ``source``, or all texts; returns how many."""
        with self._write_lock():
            catalog, embedder = self._bound(create=False)
            n = catalog.remove_texts(source)
            self._text_vectors(catalog, embedder.dim).save(self.path, TEXTS)
            return n

    def search_texts(
        self,
        image: str | Path | Image.Image | None = None,
        text: str | None = None,
        k: int = 10,
        *,
        rerank: bool = True,
        rerank_k: int | None = None,
    ) -> list[TextResult]:
        """The collection's texts ranked by similarity to an image (or a text, or both).

        With a query image and a fusion scorer, the top ``rerank_k`` texts are re-ranked by it.
        """
        from vtsearch.search.blip import BlipReranker
        from vtsearch.search.query import encode_query, read_image
        from vtsearch.search.results import TextResult
        from vtsearch.search.retrieve import apply_rerank, rescore, rescored, search_depth

        self._check_k(k)
        catalog, embedder = self._bound(create=False)
        q = encode_query(embedder, text, image)
        tindex = self._text_vectors(catalog, embedder.dim)
        if len(tindex) == 0:
            raise QueryError("the collection has no texts; add some with: vtsearch texts add FILE")
        reranker = self._load_reranker() if rerank and q.image_tokens is not None else None
        depth = max(k, rerank_k or (reranker.default_k if reranker else k))
        scores, ids = tindex.search(q.vector[None, :], search_depth(tindex, depth))
        found = [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0]
        # One read of the rows: with their vectors when they re-score the candidates or feed the
        # fusion scorer's prior.
        fusion_prior = reranker is not None and not isinstance(reranker, BlipReranker)
        rows = catalog.texts((i for i, _ in found), vectors=rescored(tindex) or fusion_prior)
        if rescored(tindex):
            found = rescore(found, {i: r.vector for i, r in rows.items()}, q.vector, depth)
        hits = [
            TextResult(i, rows[i].text, s, rows[i].source, bi_score=s)
            for i, s in found
            if i in rows
        ]
        if reranker is None or not hits:
            return hits[:k]
        if isinstance(reranker, BlipReranker):
            fusion = reranker.score_texts(read_image(image), [h.text for h in hits])
            return apply_rerank(hits, fusion, 1.0, k)
        prior = reranker.prior("i2t", np.stack([rows[h.id].vector for h in hits]))
        fusion = None
        if reranker.mix["i2t"]:  # 0: this direction re-ranks by the prior alone
            states = embedder.encode_texts([h.text for h in hits])
            fusion = reranker.score_texts(reranker.reduce(q.image_tokens), states)
        return apply_rerank(hits, fusion, reranker.mix["i2t"], k, prior)

    def check(self, repair: bool = False) -> CheckReport:
        """Verify that the catalog, the FAISS index and the token cache agree.

        With ``repair``, rebuild what is derivable (under the write lock): the FAISS file from the
        catalog's vectors, the token cache without records no row points at; rows that lost their
        vector or tokens are embedded again by the next ``index`` run. See ``vtsearch.check``.
        """
        from vtsearch.check import check_collection

        catalog = self._open_catalog(create=False)
        # Under the write lock even to look: a running indexer's half-done batch is no problem.
        with self._write_lock():
            report = check_collection(self.path, catalog, repair=repair)
        self._vindex = self._tindex = None  # reload what was rebuilt
        return report

    def status(self) -> CollectionStatus:
        """Model, counts, failed files and size on disk of the collection."""
        catalog = self._open_catalog(create=False)
        meta = catalog.meta()
        size = sum(f.stat().st_size for f in self.path.iterdir() if f.is_file())
        roots = [(r, Path(r).is_dir(), catalog.count_under(r)) for r in catalog.roots()]
        return CollectionStatus(
            path=str(self.path),
            model_id=meta.get("model_id"),
            dim=int(meta["dim"]) if "dim" in meta else None,
            index_kind=meta.get("index_kind"),
            counts={**catalog.counts(), "texts": catalog.text_count()},
            failed=catalog.failures(),
            bytes_on_disk=size,
            roots=roots,
            readonly=catalog.readonly,
        )

    def close(self) -> None:
        if self._catalog is not None:
            self._catalog.close()
            self._catalog = None

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _load_or_empty(cls: type[VectorIndex], folder: Path, dim: int, **kw) -> VectorIndex:
    """The saved FAISS index, or an empty one when the file is damaged: it is only a cache, and
    ``sync`` rebuilds it from the catalog. A file this user may not read is an error, not a
    reason to rebuild the index on every query."""
    try:
        return cls.load(folder, dim, **kw)
    except StorageError:
        raise
    except Exception:
        return cls(dim)
