"""On-disk cache of each image's region tokens, for re-ranking without decoding again.

One memory-mapped file with a fixed-size record per catalog id (ids are never reused, so the slot
of an id is simply ``id``). A record holds ``N x C`` int8 values and one fp16 scale per token
(symmetric per-token quantisation); a zero scale marks an empty slot. Records are written before
the catalog commits the batch, so a committed row always has its tokens; a crash can only leave
orphan records, which are harmless and dropped by ``compact``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

TOKENS_FILE = "tokens.bin"
TOKENS_META = "tokens.json"


class TokenCache:
    """Region tokens by catalog id.

    Example:
        >>> import tempfile
        >>> cache = TokenCache(Path(tempfile.mkdtemp()), n_tokens=4, dim=8)
        >>> cache.put(np.array([3]), np.ones((1, 4, 8), dtype=np.float32))
        >>> cache.get(np.array([3]))[0].shape
        (4, 8)
    """

    def __init__(self, folder: Path, n_tokens: int, dim: int, revision: str = "") -> None:
        self.folder = folder
        self.n_tokens, self.dim, self.revision = n_tokens, dim, revision
        self.record = n_tokens * dim + 2 * n_tokens
        self.path = folder / TOKENS_FILE
        meta_path = folder / TOKENS_META
        meta = {"n_tokens": n_tokens, "dim": dim, "format": "int8+fp16-scale", "revision": revision}
        if meta_path.exists() and json.loads(meta_path.read_text()) != meta:
            # Another shape or reducer (another scorer): start over; tokens are derivable.
            self.path.unlink(missing_ok=True)
        folder.mkdir(parents=True, exist_ok=True)
        meta_path.write_text(json.dumps(meta))
        self.path.touch(exist_ok=True)

    @classmethod
    def open_existing(cls, folder: Path) -> TokenCache | None:
        meta_path = folder / TOKENS_META
        if not meta_path.exists():
            return None
        meta = json.loads(meta_path.read_text())
        return cls(folder, int(meta["n_tokens"]), int(meta["dim"]), meta.get("revision", ""))

    @property
    def bytes_per_image(self) -> int:
        return self.record

    def _slots(self) -> int:
        return os.path.getsize(self.path) // self.record

    def _map(self, mode: str) -> np.memmap | None:
        n = self._slots()
        if n == 0:
            return None
        return np.memmap(self.path, dtype=np.uint8, mode=mode, shape=(n, self.record))

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
            with open(self.path, "r+b") as f:
                f.truncate(need * self.record)
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
        mm = self._map("r+")
        if mm is None:
            return
        for i in np.asarray(ids, dtype=np.int64):
            if i < mm.shape[0]:
                mm[i] = 0
        mm.flush()
