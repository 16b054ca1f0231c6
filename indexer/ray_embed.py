"""Decoding and embedding on a Ray cluster (``vtsearch index --ray``), with Ray Data.

The driver scans, diffs against the catalog and commits exactly as a local run does
(``pipeline.index_folder``); only the decode and the forward passes move: the files to embed
become a dataset that ``map_batches`` sends through a pool of actors, each holding the model
once (one GPU each where the cluster has GPUs, else a share of the CPUs). Batches come back as
they finish, in any order, each row carrying its place in the plan, and the driver commits them
in groups as it does locally: a run killed at any point (driver or worker) has committed what it
committed, and the next run embeds only the rest. Ray restarts a killed worker and gives its
batch to another try; if the cluster cannot finish, the run stops with a typed error and keeps
what was committed. The cluster must see the image files at the same paths (shared storage).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import datetime

import numpy as np

from vtsearch.errors import RayError
from vtsearch.indexer.decode import Decoded, ImageFiles, collate
from vtsearch.models.base import Embedder

#: What ``--ray`` takes besides a cluster address: the cluster this machine is part of, or a new
#: one started here for this run.
AUTO, LOCAL = "auto", "local"
#: CPU cores per actor on a cluster without GPUs: a forward pass scales to a few cores, and
#: several actors fill a node better than one wide one.
CPUS_PER_ACTOR = 2


def connect(address: str) -> None:
    """Join the Ray cluster at ``address`` (``auto``, ``local``, or ``ray://host:port`` or
    ``host:port``), unless this process already has.

    Raises:
        RayError: Ray is not installed, or no cluster answers at ``address``.
    """
    try:
        import ray
    except ImportError as e:
        raise RayError("Ray is not installed: pip install 'ray[data]'") from e
    if ray.is_initialized():
        return
    kwargs = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING}
    try:
        if address == LOCAL:
            ray.init(**kwargs)
        else:
            ray.init(address=address, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as e:
        hint = "start one with `ray start --head`" if address == AUTO else "check the address"
        raise RayError(f"cannot reach a Ray cluster at {address!r} ({e}); {hint}") from e


class EmbedActor:
    """One Ray Data actor: the model, loaded once, decodes and embeds batches of files."""

    def __init__(
        self,
        model_id: str,
        device: str,
        reduce: Callable | None,
        threads: int,
        token_shape: tuple[int, int] | None = None,
    ) -> None:
        import torch

        from vtsearch.models.registry import load_embedder

        torch.set_num_threads(threads)
        self.embedder = load_embedder(model_id, device)
        self.reduce = reduce
        #: Every batch's tokens column has this shape per row, one that failed whole included:
        #: Ray Data joins batches into blocks, which need one shape.
        self.token_shape = token_shape

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        files = ImageFiles([str(p) for p in batch["path"]], self.embedder.transform)
        decoded = [files[i] for i in range(len(files))]
        pixels, _ = collate(decoded)
        n, good = len(decoded), [k for k, d in enumerate(decoded) if d.pixels is not None]
        vectors = np.zeros((n, self.embedder.dim), dtype=np.float32)
        out: dict[str, np.ndarray] = {"index": np.asarray(batch["index"], dtype=np.int64)}
        tokens = None
        if self.reduce is not None:
            tokens = np.zeros((n, *(self.token_shape or ())), dtype=np.float32)
        if pixels is not None:
            with torch.inference_mode():
                emb = self.embedder.encode_images(pixels.to(self.embedder.device))
                vectors[good] = emb.vectors.float().cpu().numpy()
                if tokens is not None:
                    tokens[good] = self.reduce(emb.tokens)
        out["vector"] = vectors
        if tokens is not None:
            out["tokens"] = tokens
        out["error"] = np.array([d.error or "" for d in decoded], dtype=object)
        out["width"] = np.array([d.width or 0 for d in decoded], dtype=np.int64)
        out["height"] = np.array([d.height or 0 for d in decoded], dtype=np.int64)
        out["format"] = np.array([d.format or "" for d in decoded], dtype=object)
        out["taken_at"] = np.array(
            [d.taken_at.isoformat() if d.taken_at else "" for d in decoded], dtype=object
        )
        return out


def ray_embedded(
    paths: list[str],
    embedder: Embedder,
    reduce: Callable | None,
    batch_size: int | None,
    address: str,
    token_shape: tuple[int, int] | None = None,
) -> Iterator[tuple[list[Decoded], np.ndarray | None, np.ndarray | None]]:
    """``(decoded files, vectors of the good ones, their region tokens)`` per finished batch,
    what ``pipeline._Group.add`` takes; ``Decoded.index`` is the file's place in ``paths``.
    ``token_shape``: ``(tokens, dim)`` of an image's reduced region tokens, with ``reduce``.

    Raises:
        RayError: the cluster cannot be reached, or failed the work (after Ray's own retries).
    """
    if not paths:
        return  # nothing to embed: no cluster work (nor a connection) needed
    connect(address)
    import ray
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    resources = ray.cluster_resources()
    gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 1))
    if gpus:
        device, per_actor, actors = "cuda", {"num_gpus": 1}, gpus
        batch_size = batch_size or 64
    else:
        threads = max(1, min(CPUS_PER_ACTOR, cpus))
        device, per_actor, actors = "cpu", {"num_cpus": threads}, max(1, cpus // threads)
        batch_size = batch_size or 6
    threads = per_actor.get("num_cpus", 1)
    items = [{"index": i, "path": p} for i, p in enumerate(paths)]
    blocks = max(1, min(len(items) // batch_size, 4 * actors * 8))
    ds = ray.data.from_items(items, override_num_blocks=blocks).map_batches(
        EmbedActor,
        fn_constructor_args=(embedder.model_id, device, reduce, threads, token_shape),
        batch_size=batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=actors),
        **per_actor,
    )
    try:
        for out in ds.iter_batches(batch_size=None, batch_format="numpy"):
            yield _unpack(out, reduce is not None)
    except ray.exceptions.RayError as e:
        raise RayError(f"the Ray cluster failed the embedding: {e}".splitlines()[0]) from e


def _unpack(
    out: dict[str, np.ndarray], with_tokens: bool
) -> tuple[list[Decoded], np.ndarray | None, np.ndarray | None]:
    errors = [str(e) or None for e in out["error"]]
    good = np.array([e is None for e in errors], dtype=bool)
    decoded = [
        Decoded(
            int(i),
            None,
            int(w) or None,
            int(h) or None,
            str(f) or None,
            datetime.fromisoformat(str(t)) if t else None,
            err,
        )
        for i, w, h, f, t, err in zip(
            out["index"], out["width"], out["height"], out["format"], out["taken_at"], errors,
            strict=True,
        )
    ]  # fmt: skip
    if not good.any():
        return decoded, None, None
    vectors = np.ascontiguousarray(out["vector"][good], dtype=np.float32)
    tokens = np.ascontiguousarray(out["tokens"][good]) if with_tokens else None
    return decoded, vectors, tokens
