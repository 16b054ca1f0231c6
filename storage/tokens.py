"""On-disk cache of each image's region tokens, for re-ranking without decoding again.

One memory-mapped file with a fixed-size record per catalog id (ids are never reused, so the slot
of an id is simply ``id``). A record holds ``N x C`` int8 values and one fp16 scale per token
(symmetric per-token quantisation); a zero scale marks an empty slot. Records are written before
the catalog commits the batch, so a committed row always has its tokens; a crash can only leave
orphan records (of a batch that never committed, or of rows removed just before the kill). They
are harmless, and ``reconcile`` drops them: the indexer calls it under its lock at the start and
end of every run, from the catalog's tombstones and its highest id.

``tokens.json`` is replaced atomically and never written by readers, so a query running beside an
indexer never reads a half-written file.

The file grows on blocks allocated before it is mapped: a write through the map into a sparse
extension on a full disk is a SIGBUS that kills the process, an allocation is a
:class:`~vtsearch.errors.DiskFullError` that leaves the file as it was.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
from pathlib import Path

import numpy as np

from vtsearch.storage.files import create_temp, os_errors

TOKENS_FILE = "tokens.bin"
TOKENS_META = "tokens.json"


def _write_json_atomically(path: Path, value: dict) -> None:
    with os_errors(path, "write"):
        tmp = create_temp(path.parent, f".{path.stem}-")
        try:
            with open(tmp, "w") as f:
                json.dump(value, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


def _allocate(fd: int, offset: int, length: int) -> None:
    """Give ``length`` bytes from ``offset`` real disk blocks, extending the file.

    A sparse extension (``truncate``) would only fail when a write through the memory map finds
    the disk full, and that is a SIGBUS that kills the process; allocating first makes it an
    ``OSError`` here.
    """
    if hasattr(os, "posix_fallocate"):
        try:
            os.posix_fallocate(fd, offset, length)
            return
        except OSError as e:
            # A file system without fallocate (and no emulation in the C library): write zeros.
            if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                raise
    zeros = bytes(1 << 20)
    end = offset + length
    while offset < end:
        offset += os.pwrite(fd, zeros[: end - offset], offset)


class TokenCache:
    """Region tokens by catalog id.

    Example:
        >>> import tempfile
        >>> cache = TokenCache(Path(tempfile.mkdtemp()), n_tokens=4, dim=8)
        >>> cache.put(np.array([3]), np.ones((1, 4, 8), dtype=np.float32))
        >>> cache.get(np.array([3]))[0].shape
        (4, 8)
    """

    def __init__(
        self, folder: Path, n_tokens: int, dim: int, revision: str = "", *, create: bool = True
    ) -> None:
        self.folder = folder
        self.n_tokens, self.dim, self.revision = n_tokens, dim, revision
        self.record = n_tokens * dim + 2 * n_tokens
        self.path = folder / TOKENS_FILE
        self.meta_path = folder / TOKENS_META
        #: Catalog sequence number up to which removed rows have had their records dropped.
        self.reconciled_seq = 0
        if not create:
            return
        meta = self._shape_meta()
        stored = _read_meta(self.meta_path)
        if stored is not None and {k: stored.get(k) for k in meta} == meta:
            self.reconciled_seq = int(stored.get("reconciled_seq", 0))
        else:
            # Another shape or reducer (another scorer): start over; tokens are derivable.
            with os_errors(self.path, "write"):
                self.path.unlink(missing_ok=True)
            with os_errors(folder, "create"):
                folder.mkdir(parents=True, exist_ok=True)
            _write_json_atomically(self.meta_path, meta)
        with os_errors(self.path, "write"):
            self.path.touch(exist_ok=True)

    def _shape_meta(self) -> dict:
        return {
            "n_tokens": self.n_tokens,
            "dim": self.dim,
            "format": "int8+fp16-scale",
            "revision": self.revision,
        }

    @classmethod
    def open_existing(cls, folder: Path) -> TokenCache | None:
        """The cache in ``folder`` for reading, or None; opening it writes nothing."""
        meta = _read_meta(folder / TOKENS_META)
        if meta is None:
            return None
        cache = cls(
            folder, int(meta["n_tokens"]), int(meta["dim"]), meta.get("revision", ""), create=False
        )
        cache.reconciled_seq = int(meta.get("reconciled_seq", 0))
        return cache

    @property
    def bytes_per_image(self) -> int:
        return self.record

    def _slots(self) -> int:
        try:
            with os_errors(self.path, "read"):
                return os.path.getsize(self.path) // self.record
        except FileNotFoundError:
            return 0

    def _map(self, mode: str) -> np.memmap | None:
        n = self._slots()
        if n == 0:
            return None
        with os_errors(self.path, "read" if mode == "r" else "write"):
            return np.memmap(self.path, dtype=np.uint8, mode=mode, shape=(n, self.record))

    def _grow(self, slots: int) -> None:
        """Extend the file to ``slots`` records on real disk blocks; on failure (a full disk)
        the file keeps its old size, so a later run resumes from it."""
        with os_errors(self.path, "write"), open(self.path, "r+b") as f:
            old = os.fstat(f.fileno()).st_size
            size = slots * self.record
            with os_errors(self.path, "grow", needed=size - old):
                try:
                    _allocate(f.fileno(), old, size - old)
                except BaseException:
                    # Undo a partial allocation; the error that matters is the one above.
                    with contextlib.suppress(OSError):
                        f.truncate(old)
                    raise

    def put(self, ids: np.ndarray, tokens: np.ndarray) -> None:
        """Store ``tokens [B, N, C]`` (float) for ``ids``; durable when this returns."""
        ids = np.asarray(ids, dtype=np.int64)
        if len(ids) == 0:
            return
        tokens = np.asarray(tokens, dtype=np.float32).reshape(len(ids), self.n_tokens, self.dim)
        scale = np.abs(tokens).max(axis=2) / 127.0
        # The floor keeps a zero token's scale non-zero in fp16, so its slot still reads as full.
        scale = np.maximum(scale, 1e-4).astype(np.float16)
        q = np.rint(tokens / scale.astype(np.float32)[..., None])
        q = np.clip(q, -127, 127).astype(np.int8)
        need = int(ids.max()) + 1
        if need > self._slots():
            self._grow(need)
        mm = self._map("r+")
        assert mm is not None
        body = self.n_tokens * self.dim
        for row, i in enumerate(ids):
            mm[i, :body] = q[row].reshape(-1).view(np.uint8)
            mm[i, body:] = scale[row].view(np.uint8)
        mm.flush()
        del mm

    def get(self, ids: np.ndarray) -> list[np.ndarray | None]:
        """Tokens ``[N, C]`` float32 per id, or None where the cache has none."""
        mm = self._map("r")
        out: list[np.ndarray | None] = []
        body = self.n_tokens * self.dim
        for i in np.asarray(ids, dtype=np.int64):
            if mm is None or i >= mm.shape[0]:
                out.append(None)
                continue
            rec = np.asarray(mm[i])
            scale = rec[body:].view(np.float16).astype(np.float32)
            if not scale.any():
                out.append(None)
                continue
            q = rec[:body].view(np.int8).reshape(self.n_tokens, self.dim).astype(np.float32)
            out.append(q * scale[:, None])
        return out

    def remove(self, ids: np.ndarray) -> None:
        ids = np.asarray(ids, dtype=np.int64)
        if len(ids) == 0:
            return
        mm = self._map("r+")
        if mm is None:
            return
        for i in ids:
            if i < mm.shape[0]:
                mm[i] = 0
        mm.flush()

    def filled(self) -> np.ndarray:
        """Ids whose slot holds tokens (reads the scales only)."""
        mm = self._map("r")
        if mm is None:
            return np.zeros(0, dtype=np.int64)
        body = self.n_tokens * self.dim
        out = []
        for start in range(0, mm.shape[0], 4096):
            scales = np.asarray(mm[start : start + 4096, body:])
            out.append(start + np.flatnonzero(scales.any(axis=1)))
        return np.concatenate(out).astype(np.int64)

    def is_torn(self) -> bool:
        """True when the file does not hold a whole number of records (a cut-off extension)."""
        try:
            return os.path.getsize(self.path) % self.record != 0
        except FileNotFoundError:
            return False

    def truncate(self, slots: int) -> None:
        """Keep the first ``slots`` records: drops orphans past the catalog's highest id and a
        partly written last record."""
        try:
            size = os.path.getsize(self.path)
        except FileNotFoundError:
            return
        if size > slots * self.record or size % self.record:
            with os_errors(self.path, "write"), open(self.path, "r+b") as f:
                f.truncate(min(size - size % self.record, slots * self.record))
                f.flush()
                os.fsync(f.fileno())

    def reconcile(self, max_id: int, dead: np.ndarray, seq: int) -> None:
        """Drop records no catalog row can point at, then record ``seq`` as reconciled.

        ``max_id`` is the highest id the catalog ever committed (ids are never reused), ``dead``
        the ids removed since ``reconciled_seq`` that are not live again. Idempotent, so a crash
        in the middle only means doing it again.
        """
        self.truncate(max_id + 1)
        self.remove(dead)
        if seq != self.reconciled_seq:
            self.reconciled_seq = seq
            _write_json_atomically(self.meta_path, {**self._shape_meta(), "reconciled_seq": seq})


def _read_meta(path: Path) -> dict | None:
    with os_errors(path, "read"):
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except ValueError:
            # Unreadable (cut off by a crash in an older version): treat it as absent.
            return None
