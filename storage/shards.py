"""A collection's vector index split into shards that Ray actors hold and search in parallel.

Past one machine the index is IVF-PQ trained once on a sample of the catalog, then filled from
the catalog in chunks into ``n`` shards that share the trained parts (each a clone of the trained,
empty index), so neither the build nor any shard holds every float vector. Vector ``id`` lives in
shard ``id % n``: a catalog id never changes (a changed file gets a new one), so adds, removals
and filtered searches go to one known shard. Each shard is a ``VectorIndex`` file under
``<collection>/shards/``; the layout and its parameters are recorded in the catalog meta
(``shard_layout``).

A ``ShardActor`` loads one shard file and answers searches and changes; ``ShardedIndex`` is the
driver side: it starts (or, in the same Ray namespace, finds by name) the actors on the Ray
cluster the caller joined with ``ray.init``, sends every search to all of them at once and merges
their top-k. It offers what the query path uses of a ``VectorIndex`` (``search``, ``kind``,
``__len__``, ``sync``), so ``search.retrieve`` re-scores the merged IVF-PQ candidates exactly on
the catalog's vectors, as it does for one IVF-PQ index. Exact kinds (``flat``) shard too: their
merged top-k is the one index's.

Ray is imported inside functions: importing this module (or ``vtsearch --help``) never pays for it.
Shard files are read by the actors from their path, so on a cluster of several machines the
collection folder must be on a file system every node mounts.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from vtsearch.errors import ConfigError, ModelMismatchError, RayError, StorageError
from vtsearch.storage.index_kinds import IVFPQ_MIN, IndexSpec, load_faiss, spec_for_kind
from vtsearch.storage.vectors import VectorIndex

if TYPE_CHECKING:
    from vtsearch.storage.catalog import Catalog

#: Folder of the shard files inside a collection.
SHARDS = "shards"
#: The only assignment rule so far: written into the layout so a reader can refuse another.
RULE = "id % n_shards"


def layout_key(kind: str = "image") -> str:
    """The catalog meta key of the shard layout of the image (or text) index."""
    return "shard_layout" if kind == "image" else "text_shard_layout"


def shard_name(i: int, n: int, build: str = "") -> str:
    """File stem of shard ``i`` of ``n`` of one build (``VectorIndex.save`` adds ``.faiss`` and
    ``.json``). Each build has names of its own: a rebuild never writes over the files a
    running reader (or its actors) may still load or save."""
    return f"shard-{build}-{i:02d}of{n:02d}" if build else f"shard-{i:02d}of{n:02d}"


@dataclass(frozen=True)
class ShardLayout:
    """How a sharded index was built: recorded in the catalog meta and read back to open it.

    Example:
        >>> lay = ShardLayout(2, 64, IndexSpec("flat"), files=("a", "b"))
        >>> ShardLayout.from_json(lay.to_json()) == lay
        True
    """

    n_shards: int
    dim: int
    spec: IndexSpec
    #: Shard file stems under ``<collection>/shards``, shard ``i`` first.
    files: tuple[str, ...] = ()
    #: Vectors the quantizer and codebooks were trained on (0: an exact kind, or trained apart).
    trained_on: int = 0
    #: Vectors in the catalog when the shards were built.
    built_for: int = 0
    #: The catalog sequence number (and its mark) the build read.
    seq: int = 0
    mark: str | None = None
    rule: str = RULE
    kind: str = "image"

    @property
    def nlist(self) -> int:
        return self.spec.nlist

    @property
    def pq_m(self) -> int:
        return self.spec.pq_m

    @property
    def nprobe(self) -> int:
        return self.spec.nprobe

    def shard_of(self, ids: np.ndarray) -> np.ndarray:
        """The shard each catalog id belongs to."""
        return np.asarray(ids, dtype=np.int64) % self.n_shards

    def to_json(self) -> str:
        data = asdict(self)
        data["spec"] = json.loads(self.spec.to_json())
        data["files"] = list(self.files)
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ShardLayout:
        data = json.loads(text)
        known = {f.name for f in fields(cls)}
        data = {k: v for k, v in data.items() if k in known}
        data["spec"] = IndexSpec.from_json(json.dumps(data["spec"]))
        data["files"] = tuple(data.get("files", ()))
        return cls(**data)


def read_layout(catalog: Catalog, kind: str = "image") -> ShardLayout | None:
    """The shard layout recorded in ``catalog``, or None when its index was never sharded."""
    text = catalog.get_meta(layout_key(kind))
    return ShardLayout.from_json(text) if text else None


def shard_spec(count: int, dim: int) -> IndexSpec:
    """The kind a sharded index of ``count`` vectors gets by default: IVF-PQ with the lists and
    probes ``spec_for_kind`` picks, or exact search while there are too few vectors to train on."""
    if count < IVFPQ_MIN:
        return IndexSpec("flat", built_for=count)
    return spec_for_kind("ivfpq", count, dim)


def choose_spec(
    kind: str,
    count: int,
    dim: int,
    nlist: int | None = None,
    nprobe: int | None = None,
    pq_m: int | None = None,
) -> IndexSpec:
    """The shards' index spec: ``kind`` ``auto`` (:func:`shard_spec`), ``flat`` or ``ivfpq``
    (the factory's parameters for ``count`` vectors, each overridable)."""
    if kind == "auto":
        spec = shard_spec(count, dim)
    elif kind == "flat":
        spec = IndexSpec("flat")
    else:
        spec = spec_for_kind("ivfpq", count, dim)
    if spec.kind == "ivfpq":
        spec = replace(
            spec, nlist=nlist or spec.nlist, nprobe=nprobe or spec.nprobe, pq_m=pq_m or spec.pq_m
        )
        if dim % spec.pq_m:
            raise ConfigError(
                f"--pq-m {spec.pq_m} does not divide the vectors' {dim} dimensions; give a "
                f"divisor of {dim}"
            )
    return spec


def train_template(
    catalog: Catalog, dim: int, spec: IndexSpec, kind: str = "image"
) -> tuple[VectorIndex, int]:
    """An empty index of ``spec`` with its quantizer and codebooks trained on a catalog sample,
    as ``rebuild`` trains one index, and the number of vectors it was trained on.

    Every shard is a clone of it: shards that share the trained parts give each vector the same
    code, so their merged top-k is the one index's.
    """
    from vtsearch.storage.rebuild import training_sample

    template = VectorIndex(dim, spec)
    if template.is_trained:
        return template, 0
    sample = training_sample(catalog, kind, spec)
    if len(sample) < spec.train_min():
        raise ConfigError(
            f"{len(sample)} vectors are too few to train a {spec.kind} index on; "
            "shard a flat index instead"
        )
    template.train(sample)
    return template, len(sample)


def build_shards(
    catalog: Catalog,
    folder: Path,
    n_shards: int,
    spec: IndexSpec | None = None,
    kind: str = "image",
    trained: VectorIndex | None = None,
) -> ShardLayout:
    """Build ``n_shards`` shard files of the catalog's vectors and record their layout.

    The quantizer and codebooks are trained once on a catalog sample (or taken from ``trained``,
    an index trained by :func:`train_template`); the vectors then stream from the catalog in
    chunks into clones of that trained, empty index, vector ``id`` into shard ``id % n_shards``.
    Peak memory is the shards' codes plus one chunk of float vectors (an exact kind holds its
    floats: that is what it is). Each shard is saved atomically under ``folder / "shards"``; the
    layout goes into the catalog meta last, so a reader never opens a half-written set. Shard
    files of an earlier layout that the new one does not name are deleted.

    Args:
        catalog: The collection's catalog (its ``dim`` meta gives the dimension).
        folder: The collection folder.
        n_shards: How many shards (one Ray actor each).
        spec: The index kind and parameters (default: :func:`shard_spec` for the catalog's size).
        kind: ``"image"`` or ``"text"``.
        trained: A trained empty index of ``spec`` to clone instead of training one.

    Returns:
        The layout recorded in the catalog.

    Raises:
        ConfigError: ``n_shards`` below 1, or too few vectors to train ``spec`` on.
        ModelMismatchError: ``trained`` is of another dimension than the catalog.

    Example:
        >>> layout = build_shards(catalog, folder, 2)  # doctest: +SKIP
        >>> layout.files  # doctest: +SKIP
        ('shard-00of02', 'shard-01of02')
    """
    from vtsearch.storage.rebuild import iter_catalog_vectors

    if n_shards < 1:
        raise ConfigError(f"a sharded index needs at least one shard, not {n_shards}")
    dim = int(catalog.get_meta("dim") or 0)
    if not dim:
        raise ConfigError("the catalog holds no vectors yet; index a folder first")
    if trained is not None and trained.dim != dim:
        raise ModelMismatchError(
            f"the trained index has dimension {trained.dim}, the catalog's vectors {dim}"
        )
    # Trained first, on a count read apart: the stream below holds a read transaction open from
    # its start, so it starts only when it is consumed at once.
    spec = (
        trained.spec if trained is not None else spec or shard_spec(_live_count(catalog, kind), dim)
    )
    trained_on = 0
    if trained is None:
        trained, trained_on = train_template(catalog, dim, spec, kind)
    faiss = load_faiss()
    seq, count, batches = iter_catalog_vectors(catalog, kind)
    try:
        spec = replace(spec, built_for=count)
        mark = catalog.mark_at(seq)
        shards = [
            VectorIndex(dim, spec, faiss.clone_index(trained.index), seq=seq, mark=mark)
            for _ in range(n_shards)
        ]
        for ids, vecs in batches:
            route = ids % n_shards
            for s, shard in enumerate(shards):
                pick = route == s
                if pick.any():
                    shard.index.add_with_ids(np.ascontiguousarray(vecs[pick]), ids[pick])
    finally:
        batches.close()
    target = folder / SHARDS
    build = secrets.token_hex(4)
    names = tuple(shard_name(i, n_shards, build) for i in range(n_shards))
    for shard, name in zip(shards, names, strict=True):
        shard.save(target, name)
    layout = ShardLayout(n_shards, dim, spec, names, trained_on, count, seq, mark, kind=kind)
    catalog.set_meta(layout_key(kind), layout.to_json())
    for old in target.glob("shard-*of*.*"):
        if old.name.split(".")[0] not in names:
            old.unlink(missing_ok=True)
    return layout


def _live_count(catalog: Catalog, kind: str) -> int:
    """Live vectors of ``kind`` in the catalog."""
    from sqlalchemy import func, select
    from sqlalchemy.orm import Session

    from vtsearch.storage.rebuild import _tables

    row, live, _ = _tables(kind)
    with Session(catalog.engine) as s:
        return int(s.scalar(select(func.count()).select_from(row).where(live)) or 0)


def open_if_sharded(folder: Path, catalog: Catalog, kind: str = "image") -> ShardedIndex | None:
    """The sharded index of the collection in ``folder`` when its catalog records a shard
    layout and this process joined a Ray cluster (``ray.init``); None otherwise, and the query
    path uses the collection's own ``VectorIndex``.

    Errors of a recorded layout (a missing shard file, another dimension) are raised, not
    papered over: they name the fix.
    """
    if read_layout(catalog, kind) is None:
        return None
    try:
        import ray
    except ImportError:
        return None
    if not ray.is_initialized():
        return None
    index = ShardedIndex.open(folder, catalog, kind)
    index.sync(catalog, kind)
    return index


def _ray():
    """The ``ray`` module, joined to a cluster; a typed error names the fix otherwise."""
    try:
        import ray
    except ImportError as e:
        raise RayError(
            "a sharded index needs Ray: pip install 'ray>=2.9' (then ray.init() or ray start)"
        ) from e
    if not ray.is_initialized():
        raise RayError(
            "no Ray cluster: call ray.init() (or ray.init(address='auto') to join a running "
            "one) before opening a sharded index"
        )
    return ray


class _Shard:
    """One shard file, loaded and served; the body of the Ray actor ``ShardActor``.

    Kept a plain class so it can be tested and used without Ray (``ShardActor`` wraps it).
    """

    def __init__(self, folder: str, name: str, dim: int, threads: int = 1) -> None:
        faiss = load_faiss()
        # Several actors share a machine's cores: one OpenMP thread each, the actors run in
        # parallel (a few queries on many threads are slower anyway, see VectorIndex.search).
        faiss.omp_set_num_threads(threads)
        self.folder, self.name = Path(folder), name
        path = self.folder / f"{name}.faiss"
        if not (path.exists() and (self.folder / f"{name}.json").exists()):
            raise StorageError(f"shard file {path} is missing; rebuild the shards")
        self.vi = VectorIndex.load(self.folder, dim, name=name)

    def state(self) -> tuple[int, str | None, int]:
        """``(seq, mark, count)``: what the driver needs to sync and size the index."""
        return self.vi.seq, self.vi.mark, len(self.vi)

    def count(self) -> int:
        return len(self.vi)

    def search(
        self,
        queries: np.ndarray,
        k: int,
        nprobe: int | None = None,
        ids: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``VectorIndex.search`` of this shard; ``nprobe`` (IVF-PQ) replaces the probes of
        the layout from now on (the driver's ``ShardedIndex.nprobe``)."""
        if nprobe and self.vi.kind == "ivfpq" and self.vi.spec.nprobe != nprobe:
            self.vi.spec = replace(self.vi.spec, nprobe=int(nprobe))
        return self.vi.search(queries, k, ids=ids)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> int:
        self.vi.add(ids, vectors)
        return len(self.vi)

    def remove(self, ids: np.ndarray) -> int:
        self.vi.remove(ids)
        return len(self.vi)

    def apply(
        self, seq: int, mark: str | None, ids: np.ndarray, vectors: np.ndarray, removed: np.ndarray
    ) -> tuple[int, str | None, int]:
        """Apply catalog changes up to ``seq`` (removals first: a replaced id is re-added).
        Changes up to a number this shard already reflects are skipped: two drivers attached
        to the same actors may sync in either order, and an older snapshot must not undo a
        newer one."""
        if seq <= self.vi.seq:
            return self.state()
        self.vi.remove(removed)
        self.vi.add(ids, vectors)
        self.vi.seq, self.vi.mark = seq, mark
        return self.state()

    def save(self) -> None:
        """Write the shard back to its file (atomically, with its sequence number)."""
        self.vi.save(self.folder, self.name)


def _check_shard_file(target: Path, name: str, dim: int) -> None:
    """Refuse a missing shard file, or one of another dimension, before an actor loads it (an
    actor that fails to start reports only a generic error)."""
    path, meta = target / f"{name}.faiss", target / f"{name}.json"
    if not (path.exists() and meta.exists()):
        raise StorageError(
            f"shard file {path} is missing; rebuild the shards (vtsearch shards build)"
        )
    try:
        got = int(json.loads(meta.read_text()).get("dim", 0))
    except (OSError, ValueError) as e:
        raise StorageError(f"shard file {meta} cannot be read ({e}); rebuild the shards") from e
    if got != dim:
        raise ModelMismatchError(
            f"shard file {path} holds {got}-d vectors, the layout {dim}-d ones; rebuild the shards"
        )


_actor_class = None


def shard_actor_class():
    """The Ray actor class ``ShardActor`` (made on first use, so importing this module does not
    import Ray). Its methods are ``_Shard``'s: ``search(queries, k, nprobe=None, ids=None)``,
    ``add(ids, vectors)``, ``remove(ids)``, ``count()``, ``apply(...)``, ``state()``, ``save()``."""
    global _actor_class
    if _actor_class is None:
        ray = _ray()
        _actor_class = ray.remote(_Shard)
    return _actor_class


def __getattr__(name: str):
    # ``from vtsearch.storage.shards import ShardActor`` works, and imports Ray only then.
    if name == "ShardActor":
        return shard_actor_class()
    raise AttributeError(name)


def merge_topk(
    parts: Iterable[tuple[np.ndarray, np.ndarray]], k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The best ``k`` of several shards' ``(scores, ids)`` per query, best first.

    Inner products, higher is better; empty slots (id -1) sort last. Fewer than ``k`` columns
    come back only when the shards returned fewer in all.

    Example:
        >>> a = (np.array([[0.9, 0.1]]), np.array([[4, 2]]))
        >>> b = (np.array([[0.5, 0.0]]), np.array([[3, -1]]))
        >>> merge_topk([a, b], 3)[1].tolist()
        [[4, 3, 2]]
    """
    parts = list(parts)
    scores = np.concatenate([p[0] for p in parts], axis=1)
    ids = np.concatenate([p[1] for p in parts], axis=1)
    k = min(k, ids.shape[1])
    ranked = np.where(ids >= 0, scores, -np.inf)
    if k < ids.shape[1]:
        top = np.argpartition(-ranked, k - 1, axis=1)[:, :k]
    else:
        top = np.broadcast_to(np.arange(ids.shape[1]), ids.shape)
    order = np.take_along_axis(top, np.argsort(-np.take_along_axis(ranked, top, 1), 1), 1)
    return (
        np.take_along_axis(scores, order, 1).astype(np.float32),
        np.take_along_axis(ids, order, 1).astype(np.int64),
    )


class ShardedIndex:
    """The driver side of a sharded index: a ``VectorIndex`` stand-in whose shards are actors.

    Searches go to every shard at once and their top-k are merged here. For IVF-PQ the merged
    scores are the shards' approximate ones; ``kind`` is ``"ivfpq"``, so the query path
    (``search.retrieve``) asks for ``search_depth`` candidates and re-scores them exactly
    on the catalog's vectors, as for one IVF-PQ index. A filtered search (``ids=``) sends each
    shard only the ids it holds (``id % n``), and each searches among them with its own id
    selector (``VectorIndex.search(ids=...)``): ``k`` results whenever ``k`` members are held.

    Example:
        >>> import ray; ray.init(num_cpus=2)  # doctest: +SKIP
        >>> index = ShardedIndex.open(folder, catalog)  # doctest: +SKIP
        >>> scores, ids = index.search(queries, 10)  # doctest: +SKIP
    """

    def __init__(
        self,
        layout: ShardLayout,
        actors: list,
        folder: Path,
        owned: bool,
        catalog: Catalog | None = None,
    ) -> None:
        self.layout = layout
        self._catalog = catalog
        self.folder = folder
        self.actors = actors
        self._owned = owned
        self._lock = threading.Lock()
        ray = _ray()
        states = ray.get([a.state.remote() for a in actors])
        # The least recent shard decides where a sync replays from: replaying changes a shard
        # already holds is harmless (adds replace, removals of absent ids are ignored).
        oldest = min(range(len(states)), key=lambda i: states[i][0])
        self.seq, self.mark = states[oldest][0], states[oldest][1]
        self._counts = [s[2] for s in states]
        #: Lists each IVF-PQ shard probes per query (None: the layout's ``nprobe``).
        self.nprobe: int | None = None

    @classmethod
    def open(
        cls,
        folder: Path,
        catalog: Catalog,
        kind: str = "image",
        namespace: str | None = None,
        actor_options: dict | None = None,
    ) -> ShardedIndex:
        """Start (or find, by name) one actor per shard of the layout recorded in ``catalog``.

        The caller has joined a Ray cluster (``ray.init``). Actors are named after the collection
        folder and shard file, so another open in the same Ray namespace (the same job, or a
        ``namespace`` given to both) finds the running ones; ones this call started are ended by
        :meth:`close`.

        Raises:
            RayError: Ray is not installed, or no cluster was joined.
            StorageError: no shard layout in the catalog, or a shard file is missing.
            ModelMismatchError: the layout's dimension is not the catalog's.
        """
        ray = _ray()
        layout = read_layout(catalog, kind)
        if layout is None:
            raise StorageError(
                f"the catalog in {folder} records no shard layout; build the shards first "
                "(vtsearch shards build)"
            )
        dim = int(catalog.get_meta("dim") or 0)
        if dim and layout.dim != dim:
            raise ModelMismatchError(
                f"the shards hold {layout.dim}-d vectors, the catalog {dim}-d ones; "
                "rebuild the shards (vtsearch shards build)"
            )
        if layout.rule != RULE:
            raise StorageError(f"unknown shard assignment {layout.rule!r}; rebuild the shards")
        target = Path(folder) / SHARDS
        for name in layout.files:
            _check_shard_file(target, name, layout.dim)
        actor = shard_actor_class()
        tag = f"{Path(folder).resolve()}:{kind}"
        options = dict(actor_options or {})
        if namespace is not None:
            options["namespace"] = namespace
        actors, started = [], False
        for name in layout.files:
            actor_name = f"vtsearch-shard:{tag}:{name}"
            try:
                actors.append(ray.get_actor(actor_name, namespace=namespace))
                continue
            except ValueError:
                pass
            actors.append(
                actor.options(name=actor_name, get_if_exists=True, **options).remote(
                    str(target), name, layout.dim
                )
            )
            started = True
        try:
            return cls(layout, actors, Path(folder), owned=started, catalog=catalog)
        except ray.exceptions.RayActorError as e:
            for a in actors:
                ray.kill(a)
            cause = e.cause if isinstance(getattr(e, "cause", None), Exception) else e
            if isinstance(cause, StorageError | ModelMismatchError):
                raise cause from None
            raise StorageError(f"a shard of {folder} failed to load: {cause}") from e

    # -- what the query path uses of a VectorIndex ---------------------------------------------
    @property
    def spec(self) -> IndexSpec:
        return self.layout.spec

    @property
    def kind(self) -> str:
        return self.layout.spec.kind

    @property
    def dim(self) -> int:
        return self.layout.dim

    @property
    def approximate(self) -> bool:
        return self.kind != "flat"

    @property
    def n_shards(self) -> int:
        return self.layout.n_shards

    def __len__(self) -> int:
        # Kept from the last sync, not asked of the actors: the query path reads it per query.
        return sum(self._counts)

    def search(
        self, queries: np.ndarray, k: int, ids: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` ``(scores, ids)`` per query over all shards (see ``VectorIndex.search``).

        With ``ids`` (catalog ids), only those are searched: each shard gets its own members.
        """
        ray = _ray()
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if ids is None:
            k = max(1, min(k, max(len(self), 1)))
            calls = [a.search.remote(q, k, self.nprobe) for a in self.actors]
        else:
            ids = np.asarray(ids, dtype=np.int64)
            route = self.layout.shard_of(ids)
            calls = [
                a.search.remote(q, k, self.nprobe, ids[route == s])
                for s, a in enumerate(self.actors)
            ]
        return merge_topk(ray.get(calls), k)

    def sync(self, catalog: Catalog, kind: str = "image") -> None:
        """Apply every catalog change newer than the shards' sequence number.

        Added vectors go to shard ``id % n``, removed ids to the shard that holds them. Shards of
        another history than the catalog's (a restored catalog) are not rebuilt here (that is a
        full build): a ``StorageError`` names the fix.
        """
        if catalog.head() == (self.seq, self.mark):
            return
        with self._lock:
            head = catalog.head()
            if head == (self.seq, self.mark):
                return
            if self.seq and self.mark is not None and catalog.mark_at(self.seq) != self.mark:
                raise StorageError(
                    f"the shards in {self.folder / SHARDS} were built from another catalog "
                    "history (a restored backup?); rebuild them (vtsearch shards build)"
                )
            seq, mark, added, removed = catalog.changes_marked(self.seq, kind)
            add_ids = np.array([a[0] for a in added], dtype=np.int64)
            vecs = (
                np.stack([np.frombuffer(a[2], dtype=np.float32) for a in added])
                if added
                else np.zeros((0, self.dim), np.float32)
            )
            gone = np.array([r[0] for r in removed], dtype=np.int64)
            to, out = self.layout.shard_of(add_ids), self.layout.shard_of(gone)
            ray = _ray()
            states = ray.get(
                [
                    a.apply.remote(seq, mark, add_ids[to == s], vecs[to == s], gone[out == s])
                    for s, a in enumerate(self.actors)
                ]
            )
            self._counts = [st[2] for st in states]
            self.seq, self.mark = seq, mark

    def count(self) -> int:
        """Vectors held, asked of the actors (``len`` is the count of the last sync)."""
        self._counts = _ray().get([a.count.remote() for a in self.actors])
        return sum(self._counts)

    def save(self, folder: Path | None = None, name: str | None = None) -> None:
        """Each actor writes its shard back to its own file (after syncs: a restart replays
        less), unless the catalog now records another build (a newer ``shards build``): these
        shards are out of date and their files no longer the layout's. ``folder`` and ``name``
        are ignored: they make it a drop-in for ``VectorIndex.save(folder)``."""
        current = read_layout(self._catalog, self.layout.kind) if self._catalog else None
        if current is None or current.files != self.layout.files:
            return
        _ray().get([a.save.remote() for a in self.actors])

    def close(self) -> None:
        """End the actors this index started (attached ones are left to their owner)."""
        if self._owned:
            ray = _ray()
            for a in self.actors:
                ray.kill(a)
        self.actors = []
