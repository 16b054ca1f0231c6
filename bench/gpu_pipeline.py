"""The indexing pipeline on one GPU: batched GPU JPEG decode, resize on the GPU, bf16 autocast,
channels-last, large batches, writes overlapped in a thread, FAISS on the GPU where installed.

Prints images/s end to end and where the time goes:

  read     file bytes + SHA-256 (thread pool; overlapped with the GPU work in the timed run)
  decode   ``torchvision.io.decode_jpeg(..., device="cuda")`` on a list of files (nvJPEG)
  resize   shorter side to 224 (bicubic, antialiased) + centre crop + normalise, on the GPU
  model    EfficientNet-Lite0 + vtsearch-lite heads under bf16 autocast, channels-last
  transfer vectors device -> host
  write    SQLite catalog rows + FAISS add (in a writer thread in the timed run)

The timed run overlaps the stages; a second, instrumented run synchronises the device after each
stage to attribute the time. ``--dry`` runs everything on the CPU with a tiny set (for the tests).

    python bench/gpu_pipeline.py --synthetic 4000 --batch 512      # on a GPU machine
    python bench/gpu_pipeline.py --dry                             # anywhere, in seconds
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import queue
import sys
import tempfile
import threading
import time
import warnings
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

# torchvision 0.29 marks its decoders deprecated in favour of TorchCodec; they still work, and
# nvJPEG batch decode is what this bench measures.
warnings.filterwarnings(
    "ignore", message=".*decoding and encoding capabilities", category=DeprecationWarning
)


def _make_jpeg(job: tuple[str, int, int, int]) -> None:
    from PIL import Image

    path, seed, w, h = job
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(2, h // 32), max(2, w // 32), 3), dtype=np.uint8)
    img = np.asarray(Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC), np.int16)
    img = img + rng.normal(0, 6, img.shape).astype(np.int16)  # sensor-like noise
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path, "JPEG", quality=90)


def synthetic_set(folder: Path, n: int, size: tuple[int, int]) -> list[Path]:
    """``n`` distinct JPEGs of ``size`` (cached: existing files are kept)."""
    from multiprocessing import Pool

    folder.mkdir(parents=True, exist_ok=True)
    files = [folder / f"syn_{i:06d}.jpg" for i in range(n)]
    todo = [(str(f), i, *size) for i, f in enumerate(files) if not f.exists()]
    if len(todo) < 64:
        for job in todo:
            _make_jpeg(job)
    elif todo:
        with Pool(min(16, os.cpu_count() or 1)) as pool:
            pool.map(_make_jpeg, todo, chunksize=16)
    return files


def _read(path: Path) -> tuple[bytes, str, os.stat_result]:
    data = path.read_bytes()
    return data, hashlib.sha256(data).hexdigest(), path.stat()


class Stages:
    """Seconds per stage; with ``sync`` the device is synchronised before each stage ends."""

    def __init__(self, device, sync: bool) -> None:
        self.device, self.sync, self.s = device, sync, defaultdict(float)

    def __call__(self, name: str):
        stages = self

        class _Stage:
            def __enter__(self):
                self.t0 = time.perf_counter()

            def __exit__(self, *exc):
                if stages.sync and stages.device.type == "cuda":
                    import torch

                    torch.cuda.synchronize(stages.device)
                stages.s[name] += time.perf_counter() - self.t0

        return _Stage()


def gpu_preprocess(images: list, size: int, mean, std, device):
    """Decoded uint8 ``[3, H, W]`` images -> a normalised ``[B, 3, size, size]`` batch.

    Images of one shape are resized together; the shorter side goes to ``size`` (bicubic,
    antialiased, like the CPU path's PIL resize), then the centre is cropped.
    """
    import torch
    import torch.nn.functional as F

    out = torch.empty((len(images), 3, size, size), device=device, dtype=torch.float32)
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, im in enumerate(images):
        groups[tuple(im.shape[-2:])].append(i)
    for (h, w), idx in groups.items():
        x = torch.stack([images[i] for i in idx]).float()
        scale = size / min(h, w)
        nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
        x = F.interpolate(x, size=(nh, nw), mode="bicubic", antialias=True, align_corners=False)
        top, left = (nh - size) // 2, (nw - size) // 2
        out[idx] = x[:, :, top : top + size, left : left + size]
    mean_t = torch.tensor(mean, device=device).view(1, 3, 1, 1) * 255.0
    std_t = torch.tensor(std, device=device).view(1, 3, 1, 1) * 255.0
    return ((out.clamp_(0, 255) - mean_t) / std_t).contiguous(memory_format=torch.channels_last)


def embed(emb, x, bf16: bool):
    """Unit vectors of a preprocessed batch: the tower under bf16 autocast, the heads in fp32."""
    import torch

    with torch.inference_mode():
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
            pooled, _tokens, logits = emb.image_tower(x)
        return emb.heads.image_vectors(pooled.float(), logits.float())


class Writer:
    """Catalog rows and FAISS adds, in a background thread when ``threaded``.

    With a GPU build of FAISS the vectors go to a GPU flat index (copied back to the CPU and
    saved at the end); otherwise to the CPU ``VectorIndex``.
    """

    def __init__(self, folder: Path, dim: int, model_id: str, threaded: bool, gpu_faiss: bool):
        from vtsearch.storage.catalog import Catalog
        from vtsearch.storage.vectors import VectorIndex

        self.folder = folder
        self.catalog = Catalog.open(folder)
        self.catalog.bind_model(model_id, dim)
        self.vindex = VectorIndex(dim)
        self.faiss_device = "cpu"
        if gpu_faiss:
            import faiss

            if hasattr(faiss, "StandardGpuResources"):
                self.res = faiss.StandardGpuResources()
                self.gpu_flat = faiss.GpuIndexFlatIP(self.res, dim)
                self.vindex.index = faiss.IndexIDMap2(self.gpu_flat)
                self.faiss_device = "gpu"
        self.q: queue.Queue = queue.Queue(maxsize=4)
        self.error: BaseException | None = None
        self.seconds = 0.0
        self.thread = threading.Thread(target=self._loop, daemon=True) if threaded else None
        if self.thread:
            self.thread.start()

    def _write(self, rows: list, vectors: np.ndarray) -> None:
        from vtsearch.storage.catalog import NewImage

        t0 = time.perf_counter()
        items = [
            NewImage(str(p), st.st_size, st.st_mtime_ns, digest, vector=v)
            for (p, digest, st), v in zip(rows, vectors, strict=True)
        ]
        written = self.catalog.write_batch(items)
        ids = np.array([i for i, _ in written], dtype=np.int64)
        self.vindex.index.add_with_ids(vectors, ids)  # new rows: nothing to replace
        self.seconds += time.perf_counter() - t0

    def _loop(self) -> None:
        while (job := self.q.get()) is not None:
            try:
                self._write(*job)
            except BaseException as e:  # surfaced by close()
                self.error = e

    def put(self, rows: list, vectors: np.ndarray) -> None:
        if self.thread:
            self.q.put((rows, vectors))
        else:
            self._write(rows, vectors)

    def close(self) -> int:
        if self.thread:
            self.q.put(None)
            self.thread.join()
        if self.error:
            raise self.error
        seq = int(self.catalog.get_meta("seq") or 0)
        if self.faiss_device == "gpu":
            import faiss

            try:
                self.vindex.index = faiss.index_gpu_to_cpu(self.vindex.index)
            except RuntimeError:  # an older FAISS that cannot clone the id map: read back
                from vtsearch.storage.rebuild import rebuild

                self.vindex = rebuild(self.catalog, self.vindex.dim)
        self.vindex.seq = seq
        self.vindex.save(self.folder)
        self.catalog.close()
        return len(self.vindex)


def run(files: list[Path], emb, device, batch: int, bf16: bool, sync: bool, out: Path) -> dict:
    """One pass over ``files``; returns images/s and the seconds per stage."""
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    from vtsearch.models.towers import IMAGE_SIZE, LITE_MEAN, LITE_STD

    stages = Stages(device, sync)
    writer = Writer(out, emb.dim, emb.model_id, threaded=not sync, gpu_faiss=device.type == "cuda")
    batches = [files[i : i + batch] for i in range(0, len(files), batch)]
    pool = ThreadPoolExecutor(max_workers=min(32, (os.cpu_count() or 1) * 2))

    def read(paths):
        return list(pool.map(_read, paths))

    t0 = time.perf_counter()
    pending = pool.submit(read, batches[0]) if batches else None
    for b, paths in enumerate(batches):
        with stages("read"):
            got = pending.result()
        pending = pool.submit(read, batches[b + 1]) if b + 1 < len(batches) else None
        with stages("decode"):
            data = [torch.frombuffer(bytearray(d), dtype=torch.uint8) for d, _, _ in got]
            images = decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
        with stages("resize"):
            x = gpu_preprocess(images, IMAGE_SIZE, LITE_MEAN, LITE_STD, device)
        with stages("model"):
            vectors = embed(emb, x, bf16)
        with stages("transfer"):
            host = vectors.float().cpu().numpy()
        with stages("write" if sync else "write queue"):
            rows = [(p, digest, st) for p, (_, digest, st) in zip(paths, got, strict=True)]
            writer.put(rows, host)
    with stages("write" if sync else "write drain"):
        n = writer.close()
    seconds = time.perf_counter() - t0
    pool.shutdown()
    if not sync:
        stages.s["write (in thread)"] = writer.seconds
    return {
        "images": n,
        "seconds": seconds,
        "rate": n / seconds,
        "stages": dict(stages.s),
        "faiss": writer.faiss_device,
    }


def agreement(files: list[Path], emb, device, bf16: bool) -> float:
    """Smallest cosine between this path's vectors and the CPU pipeline's for ``files``."""
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    from vtsearch.images import load_image
    from vtsearch.models.towers import IMAGE_SIZE, LITE_MEAN, LITE_STD

    data = [torch.frombuffer(bytearray(f.read_bytes()), dtype=torch.uint8) for f in files]
    x = gpu_preprocess(
        decode_jpeg(data, mode=ImageReadMode.RGB, device=device),
        IMAGE_SIZE,
        LITE_MEAN,
        LITE_STD,
        device,
    )
    fast = embed(emb, x, bf16).float().cpu()
    ref = torch.stack([emb.transform(load_image(str(f), 256).image) for f in files])
    slow = emb.encode_images(ref.to(device)).vectors.float().cpu()
    return float((fast * slow).sum(-1).min())


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--synthetic", type=int, default=4000, help="JPEGs to make (default 4000)")
    ap.add_argument("--size", default="640x480", help="their size, WxH (default 640x480)")
    ap.add_argument("--images", type=Path, default=None, help="a folder of JPEGs instead")
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--device", default=None, help="default: cuda when present")
    ap.add_argument("--no-bf16", action="store_true")
    ap.add_argument("--compile", action="store_true", help="torch.compile the image tower")
    ap.add_argument("--dry", action="store_true", help="CPU, 24 small images: a smoke test")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    import torch

    from vtsearch.models.lite import load_lite

    if args.dry:
        args.device, args.synthetic, args.size, args.batch = "cpu", 8, "120x80", 4
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    bf16 = device.type == "cuda" and not args.no_bf16
    w, h = (int(v) for v in args.size.lower().split("x"))
    work = Path(tempfile.mkdtemp(prefix="vtsearch-gpu-"))
    if args.images:
        files = sorted(p for p in args.images.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg"))
    else:
        t0 = time.perf_counter()
        files = synthetic_set(work / "images", args.synthetic, (w, h))
        print(f"made {len(files)} JPEGs of {w}x{h} in {time.perf_counter() - t0:.1f} s")

    emb = load_lite(device=device)  # its image tower is channels-last
    if args.compile:
        emb.image_tower = torch.compile(emb.image_tower)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device {name}; batch {args.batch}; bf16 {bf16}; channels-last; {len(files)} images")

    # Warm-up: nvJPEG handles, cuDNN algorithm choice, compile, allocator.
    run(files[: args.batch], emb, device, args.batch, bf16, True, work / "warm")
    timed = run(files, emb, device, args.batch, bf16, False, work / "timed")
    split = run(files, emb, device, args.batch, bf16, True, work / "split")
    cosine = agreement(files[:8], emb, device, bf16)
    total = sum(split["stages"].values())
    print(
        f"\nend to end (stages overlapped): {timed['rate']:.0f} images/s (FAISS {timed['faiss']})"
    )
    print(f"instrumented (device synced per stage): {split['rate']:.0f} images/s")
    print(f"{'stage':<12}{'s':>8}{'share':>8}{'ms/batch':>10}")
    nb = max(1, -(-len(files) // args.batch))
    for stage, s in split["stages"].items():
        print(f"{stage:<12}{s:>8.2f}{s / total:>8.0%}{1000 * s / nb:>10.1f}")
    print(f"vectors vs the CPU pipeline's (PIL decode + resize): min cosine {cosine:.4f}")
    if device.type == "cuda":
        print(f"peak device memory {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB")
    result = {
        "device": name,
        "batch": args.batch,
        "bf16": bf16,
        "timed": timed,
        "split": split,
        "min_cosine_vs_cpu": cosine,
    }
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    import shutil

    shutil.rmtree(work, ignore_errors=True)
    return result


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
