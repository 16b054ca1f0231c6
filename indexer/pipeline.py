"""One indexing run: scan, diff, embed what changed, commit every few batches.

Commit order, so that a run killed at any instant (SIGKILL, power cut) leaves a collection that is
consistent and resumes without redoing committed work:

1. A group's region tokens go to the token cache (``TokenSink.writer``, flushed to disk). A group
   is the batches embedded since the last commit (``config.commit_images()`` images or more).
2. Its rows and vectors commit in one SQLite transaction (``Catalog.write_batch``). That commit is
   the only point at which the group becomes visible, to queries and to the next run.
3. The FAISS file is a derived cache, saved atomically from time to time with the catalog sequence
   number it reflects; whoever opens it replays the newer catalog changes.

A kill before step 2 leaves only token records no row points at; ``reconcile_tokens`` drops them
(and the records of rows removed just before a kill) at the start and end of every run.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from vtsearch import config
from vtsearch.errors import RootError
from vtsearch.indexer.decode import DecodeInTurns, decode_loader
from vtsearch.indexer.scan import (
    HashProgress,
    Plan,
    Stopped,
    plan_changes,
    scan_folder,
    stat_files,
)
from vtsearch.models.base import Embedder
from vtsearch.storage.catalog import Catalog, FileRecord, NewImage
from vtsearch.storage.tokens import TokenCache
from vtsearch.storage.vectors import VectorIndex


@dataclass
class IndexReport:
    """What a run did; ``failed`` lists ``(path, reason)`` for files that could not be indexed."""

    scanned: int = 0
    embedded: int = 0
    unchanged: int = 0
    relinked: int = 0
    copied: int = 0
    deleted: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    #: Files that could not be used this time while their row keeps its good vector (a
    #: permission, a vanishing network drive, a file being written): ``(path, reason)``.
    kept: list[tuple[str, str]] = field(default_factory=list)
    #: Indexed folders that no longer exist; their rows are kept until ``forget_root``.
    missing_roots: list[str] = field(default_factory=list)
    #: Indexed folders that no longer exist and held no rows, dropped from the collection.
    dropped_roots: list[str] = field(default_factory=list)
    seconds: float = 0.0
    interrupted: bool = False

    @property
    def images_per_second(self) -> float:
        return self.embedded / self.seconds if self.seconds > 0 else 0.0

    def merge(self, other: IndexReport) -> None:
        """Add another root's run to this report."""
        for name in ("scanned", "embedded", "unchanged", "relinked", "copied", "deleted"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name in ("failed", "kept", "missing_roots", "dropped_roots"):
            getattr(self, name).extend(getattr(other, name))
        self.seconds += other.seconds
        self.interrupted |= other.interrupted


class TokenSink:
    """Where region tokens go while indexing: a reducer to the cached form, and the cache."""

    def __init__(self, reduce: Callable[[torch.Tensor], np.ndarray], cache: TokenCache) -> None:
        self.reduce = reduce
        self.cache = cache

    def writer(self, region_tokens: np.ndarray | None) -> Callable[[list], None]:
        """A ``before_commit`` hook: tokens of the embedded rows in, slots of failed rows out."""

        def write(rows: list[tuple[int, np.ndarray | None]]) -> None:
            ok = np.array([i for i, v in rows if v is not None], dtype=np.int64)
            failed = np.array([i for i, v in rows if v is None], dtype=np.int64)
            if len(ok):
                assert region_tokens is not None and len(region_tokens) == len(ok)
                self.cache.put(ok, region_tokens)
            self.cache.remove(failed)

        return write

    def copier(self, sources: list[int | None]) -> Callable[[list], None]:
        """A ``before_commit`` hook for copied files: their tokens are their source's."""

        def write(rows: list[tuple[int, np.ndarray | None]]) -> None:
            for (row_id, _), src in zip(rows, sources, strict=True):
                got = self.cache.get(np.array([src])) if src is not None else [None]
                if got[0] is not None:
                    self.cache.put(np.array([row_id]), got[0][None])
                else:
                    # The id may be one of a batch that never committed: clear what it left.
                    self.cache.remove(np.array([row_id]))

        return write


def reconcile_tokens(catalog: Catalog, cache: TokenCache) -> None:
    """Drop token records that no live catalog row points at (left by a killed run)."""
    seq, dead = catalog.dead_since(cache.reconciled_seq)
    cache.reconcile(catalog.max_image_id(), np.array(dead, dtype=np.int64), seq)


def catch_up(catalog: Catalog, vindex: VectorIndex) -> None:
    """Bring the in-memory FAISS index up to the catalog (see ``VectorIndex.sync``: an index of
    another history than the catalog's, e.g. after a restore from a backup, is rebuilt)."""
    vindex.sync(catalog)


#: Called with (files done, files to embed) after each commit.
Progress = Callable[[int, int], None]


class _Group:
    """Embedded batches waiting for one catalog transaction."""

    def __init__(
        self,
        todo: list,
        catalog: Catalog,
        vindex: VectorIndex,
        tokens: TokenSink | None,
        report: IndexReport,
        progress: Progress | None,
        good_rows: set[int],
    ) -> None:
        self.todo, self.catalog, self.vindex, self.tokens = todo, catalog, vindex, tokens
        self.report, self.progress = report, progress
        #: Rows holding a good vector: a new version of their file that fails to decode (cut
        #: off while being copied, say) leaves them as they are, for the next run to retry.
        self.good_rows = good_rows
        self.items: list[NewImage] = []
        self.region_tokens: list[np.ndarray] = []
        self.done = 0

    @property
    def size(self) -> int:
        return len(self.items)

    def add(
        self, decoded: list, vectors: np.ndarray | None, region_tokens: np.ndarray | None
    ) -> None:
        v = 0
        for d in decoded:
            stat, digest, replace_id = self.todo[d.index]
            if d.error is not None and replace_id in self.good_rows:
                self.report.kept.append((stat.path, d.error))
                self.done += 1
                continue
            item = NewImage(
                stat.path,
                stat.size,
                stat.mtime_ns,
                digest,
                replace_id=replace_id,
                ctime_ns=stat.ctime_ns,
                inode=stat.inode,
            )
            if d.error is None and vectors is not None:
                item.vector = vectors[v]
                v += 1
                item.width, item.height, item.format, item.taken_at = (
                    d.width,
                    d.height,
                    d.format,
                    d.taken_at,
                )
            else:
                item.error = d.error
                self.report.failed.append((stat.path, d.error or "unknown error"))
            self.items.append(item)
        if region_tokens is not None:
            self.region_tokens.append(region_tokens)

    def commit(self) -> None:
        """One transaction for the group's rows, vectors and tokens; then the index and the
        progress follow."""
        hook = None
        if self.tokens is not None:
            hook = self.tokens.writer(
                np.concatenate(self.region_tokens) if self.region_tokens else None
            )
        self.catalog.write_batch(self.items, hook)
        self.vindex.sync(self.catalog)
        self.done += len(self.items)
        self.report.embedded += sum(1 for it in self.items if it.error is None)
        self.items, self.region_tokens = [], []
        if self.progress:
            self.progress(self.done, len(self.todo))


def index_folder(
    root: Path,
    catalog: Catalog,
    vindex: VectorIndex,
    embedder: Embedder,
    *,
    extensions: Iterable[str],
    max_bytes: int,
    batch_size: int = 32,
    workers: int = 2,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
    tokens: TokenSink | None = None,
    hash_progress: HashProgress | None = None,
    deferred_deletes: list[tuple[int, str]] | None = None,
    ray_address: str | None = None,
    listing: list[str] | None = None,
) -> IndexReport:
    """Bring the collection in line with ``root``; only new, changed, moved or deleted files cost.

    Every ``config.commit_images()`` images or so, what was embedded since the last commit commits
    in one transaction, so a run that is killed resumes where it stopped. ``should_stop`` is polled
    while scanning, hashing and between batches (for SIGINT); what was embedded before it said
    stop is committed, a plan cut short is dropped whole. With ``tokens``, each image's region
    tokens go to the token cache in the same step. ``hash_progress`` follows the reading of new
    and changed files (their content hashes) before any embedding. ``ray_address``: decode and
    embed on that Ray cluster (``ray_embed``) instead of here; everything else stays here.
    ``listing``: the files under ``root`` (a manifest, ``scan.read_manifest``) instead of a walk;
    only rows of listed files are then its business (nothing unlisted is deleted), and ``root``
    is not recorded as a folder to refresh.

    Raises:
        RootError: ``root`` holds no image files while the collection holds images from it (an
            unmounted drive looks like an empty folder); nothing is removed.
    """
    t0 = time.perf_counter()
    root = root.resolve()
    if tokens is not None:
        reconcile_tokens(catalog, tokens.cache)
    exts = {e.lower() for e in extensions}
    try:
        if listing is None:
            files, rejected = scan_folder(root, exts, max_bytes, should_stop)
        else:
            files, rejected = stat_files(listing, exts, max_bytes)
    except Stopped:
        return IndexReport(interrupted=True, seconds=time.perf_counter() - t0)
    # Only rows this scan could have seen are its business: other roots, and files of other
    # extensions under this one (``--ext png`` leaves the JPEGs alone), stay as they are.
    known = {
        p: r
        for p, r in catalog.records(under=str(root)).items()
        if os.path.splitext(p)[1].lower() in exts or p.endswith(os.sep)  # unlistable folders
    }
    if listing is not None:
        # A manifest speaks only for the files it lists: other lists (other shards of an
        # archive) share the folder, so what it does not name is left alone.
        listed = set(listing)
        known = {p: r for p, r in known.items() if p in listed}
    if not files and not rejected and known:
        raise RootError(
            f"{root} holds no image files, but the collection holds {len(known)} from it (an "
            "unmounted drive?); nothing was removed. If they are gone for good: "
            f"vtsearch roots remove {root}"
        )
    if listing is None:  # a manifest's folder is not walked by a refresh
        catalog.add_root(str(root))
    plan = plan_changes(
        files,
        known,
        rejected,
        root=str(root),
        elsewhere=catalog.indexed_by_hash,
        should_stop=should_stop,
        progress=hash_progress,
    )
    report = IndexReport(scanned=len(files) + len(rejected), unchanged=plan.unchanged)
    if plan.interrupted:
        report.interrupted = True
        report.seconds = time.perf_counter() - t0
        return report

    if deferred_deletes is not None:
        # Another root of this refresh may be where these files went: the caller deletes them
        # once every root was seen (``delete_deferred``), so a move between roots keeps its row.
        by_id = {r.id: p for p, r in known.items()}
        deferred_deletes.extend((i, by_id[i]) for i in plan.delete)
        plan.delete = []
    _apply_cheap_changes(plan, catalog, known, report, tokens)
    vindex.sync(catalog)

    todo = plan.embed
    if progress:
        progress(0, len(todo))
    paths = [f.path for f, _, _ in todo]
    reduce = tokens.reduce if tokens is not None else None
    if ray_address is not None:
        from vtsearch.indexer.ray_embed import ray_embedded

        shape = (tokens.cache.n_tokens, tokens.cache.dim) if tokens is not None else None
        batches = ray_embedded(paths, embedder, reduce, batch_size, ray_address, shape)
    else:
        batches = _embedded_here(paths, embedder, reduce, batch_size, workers)
    good = {r.id for r in known.values() if r.status == "indexed"}
    group = _Group(todo, catalog, vindex, tokens, report, progress, good)
    commit_every = config.commit_images()
    try:
        for decoded, vectors, region_tokens in batches:
            group.add(decoded, vectors, region_tokens)
            stop = bool(should_stop and should_stop())
            if group.size >= commit_every or stop:
                group.commit()
            if stop:
                report.interrupted = True
                break
    finally:
        batches.close()  # a Ray run stops its actors; a local one its decode threads
    if group.size:
        group.commit()

    if tokens is not None:
        reconcile_tokens(catalog, tokens.cache)
    report.seconds = time.perf_counter() - t0
    return report


def _embedded_here(
    paths: list[str],
    embedder: Embedder,
    reduce: Callable[[torch.Tensor], np.ndarray] | None,
    batch_size: int,
    workers: int,
) -> Iterator[tuple[list, np.ndarray | None, np.ndarray | None]]:
    """``(decoded files, vectors of the good ones, their region tokens)`` per batch, embedded
    in this process."""
    device = embedder.device
    if device.type == "cpu":
        loader: Iterable = DecodeInTurns(paths, embedder.transform, batch_size, workers)
    else:
        loader = decode_loader(paths, embedder.transform, batch_size, workers, pin_memory=True)
    for pixels, decoded in loader:
        vectors = region_tokens = None
        if pixels is not None:
            with torch.inference_mode():
                emb = embedder.encode_images(pixels.to(device, non_blocking=True))
                if reduce is not None:
                    region_tokens = reduce(emb.tokens)
            vectors = emb.vectors.float().cpu().numpy()
        if isinstance(loader, DecodeInTurns):
            loader.decode_next()  # torch is done with the cores until the next batch
        yield decoded, vectors, region_tokens


def delete_deferred(
    catalog: Catalog,
    vindex: VectorIndex,
    tokens: TokenSink | None,
    deferred: list[tuple[int, str]],
) -> int:
    """Delete the rows a refresh of several roots deferred, except those another root claimed
    since (moved there: their path changed). Returns how many went."""
    rows = catalog.rows(i for i, _ in deferred)
    gone = [i for i, path in deferred if i in rows and rows[i].path == path]
    catalog.remove(gone)
    if tokens is not None:
        tokens.cache.remove(np.array(gone, dtype=np.int64))
    vindex.sync(catalog)
    return len(gone)


def _apply_cheap_changes(
    plan: Plan,
    catalog: Catalog,
    known: dict[str, FileRecord],
    report: IndexReport,
    tokens: TokenSink | None,
) -> None:
    """Deletions, moves, copies and rejects: nothing here needs a decode."""
    catalog.remove(plan.delete)
    if tokens is not None:
        tokens.cache.remove(np.array(plan.delete, dtype=np.int64))
    report.deleted = len(plan.delete)
    catalog.touch(
        [
            (rid, f.path, f.size, f.mtime_ns, f.ctime_ns, f.inode)
            for rid, f in plan.relink + plan.refresh
        ]
    )
    report.relinked = len(plan.relink)
    report.kept.extend(plan.kept)
    if plan.copy:
        # A copy has its source's pixels: it shares its vector, size, format, time and tokens.
        items, sources = [], []
        for f, h in plan.copy:
            src = catalog.row_by_hash(h)
            if src is None:
                continue
            items.append(
                NewImage(
                    f.path,
                    f.size,
                    f.mtime_ns,
                    h,
                    vector=np.frombuffer(src.vector, dtype=np.float32).copy(),
                    width=src.width,
                    height=src.height,
                    format=src.format,
                    taken_at=src.taken_at,
                    ctime_ns=f.ctime_ns,
                    inode=f.inode,
                )
            )
            sources.append(src.id)
        catalog.write_batch(items, tokens.copier(sources) if tokens else None)
        report.copied = len(items)
    if plan.rejected:
        # Only files without a good row get here (see ``plan_changes``): a failed row is replaced.
        items = []
        for f, reason in plan.rejected:
            rec = known.get(f.path)
            items.append(
                NewImage(
                    f.path,
                    f.size,
                    f.mtime_ns,
                    None,
                    error=reason,
                    replace_id=rec.id if rec else None,
                    ctime_ns=f.ctime_ns,
                    inode=f.inode,
                )
            )
            report.failed.append((f.path, reason))
        catalog.write_batch(items, tokens.writer(None) if tokens else None)
