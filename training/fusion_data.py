"""Training data of the fusion scorer: region tokens of images and token states of captions,
extracted once from the frozen towers and kept as memory-mapped arrays."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from vtsearch.indexer.decode import ImageFiles
from vtsearch.models.towers import ImageTower, TextTower, lite_transform

#: Caption token states are padded or cut to this many tokens (Flickr8k captions: 95% <= 24).
MAX_TEXT_TOKENS = 32


def extract_regions(
    paths: Sequence[str], out_dir: Path, batch_size: int = 64, workers: int = 2
) -> tuple[np.ndarray, np.ndarray]:
    """Raw 7x7x1280 region maps and the 14x14x112 map of the block before, fp16, memory-mapped.

    Resumable: a ``.done`` count beside the arrays records how many images are written.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    n = len(paths)
    coarse = np.lib.format.open_memmap(
        out_dir / "regions7.npy",
        mode="r+" if (out_dir / "regions7.npy").exists() else "w+",
        dtype=np.float16,
        shape=(n, 49, 1280),
    )
    fine = np.lib.format.open_memmap(
        out_dir / "regions14.npy",
        mode="r+" if (out_dir / "regions14.npy").exists() else "w+",
        dtype=np.float16,
        shape=(n, 196, 112),
    )
    done_file = out_dir / "regions.done"
    start = int(done_file.read_text()) if done_file.exists() else 0
    if start >= n:
        return coarse, fine
    tower = ImageTower().eval()
    grabbed: list[torch.Tensor] = []
    hook = tower.net.blocks[4].register_forward_hook(lambda _m, _i, o: grabbed.append(o))
    loader = DataLoader(
        ImageFiles(list(paths[start:]), lite_transform()),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=lambda b: b,
    )
    pos = start
    with torch.inference_mode():
        for items in loader:
            if any(d.pixels is None for d in items):
                bad = [paths[start + d.index] for d in items if d.pixels is None]
                raise RuntimeError(f"cannot decode training images: {bad[:3]}")
            grabbed.clear()
            _, regions, _ = tower(torch.stack([d.pixels for d in items]))
            b = len(items)
            coarse[pos : pos + b] = regions.half().numpy()
            fine[pos : pos + b] = grabbed[0].flatten(2).transpose(1, 2).half().numpy()
            pos += b
            if pos % (batch_size * 8) < b or pos == n:
                coarse.flush()
                fine.flush()
                done_file.write_text(str(pos))
    hook.remove()
    return coarse, fine


def extract_text_states(
    texts: Sequence[str], out_dir: Path, batch_size: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """MiniLM token states ``[M, 32, 384]`` fp16 and their lengths, memory-mapped."""
    out_dir.mkdir(parents=True, exist_ok=True)
    states_path, lens_path = out_dir / "text_states.npy", out_dir / "text_lens.npy"
    if states_path.exists() and lens_path.exists():
        return np.load(states_path, mmap_mode="r"), np.load(lens_path)
    tower = TextTower().eval()
    states = np.lib.format.open_memmap(
        states_path.with_suffix(".tmp.npy"),
        mode="w+",
        dtype=np.float16,
        shape=(len(texts), MAX_TEXT_TOKENS, 384),
    )
    lens = np.zeros(len(texts), dtype=np.int16)
    with torch.inference_mode():
        for i in range(0, len(texts), batch_size):
            _, st, mask = tower(texts[i : i + batch_size])
            t = min(st.shape[1], MAX_TEXT_TOKENS)
            states[i : i + len(st), :t] = st[:, :t].half().numpy()
            lens[i : i + len(st)] = mask.sum(1).clamp(max=MAX_TEXT_TOKENS).numpy()
    states.flush()
    del states
    states_path.with_suffix(".tmp.npy").replace(states_path)
    np.save(lens_path, lens)
    return np.load(states_path, mmap_mode="r"), lens
