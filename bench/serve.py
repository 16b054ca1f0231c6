"""`vtsearch serve` over HTTP: warm text-query latency, and sustained throughput of concurrent
clients, also while an index run writes to the collection.

The collection: 10,000 images (every Flickr8k photo, the rest small generated photos), indexed
once with the default model and kept under .cache/bench. The server is the real one, started as
`vtsearch serve` in its own process; clients are threads with keep-alive HTTP connections
(httpx), each query a distinct Flickr8k dev caption, re-ranking on (the default).

    python bench/serve.py                  # 10,000 images, 200 warm queries, 8 x 2,000 load
    python bench/serve.py --quick          # 500 images, a smoke run
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
from _common import CACHE, FLICKR, figure, flickr_images, machine, save_figures
from PIL import Image

#: Photos added to the folder for the index run that writes during the second load test.
WRITE_IMAGES = 400


def build_folder(n: int) -> Path:
    """``n`` images: Flickr8k photos (symlinked), then generated ones to make up the number."""
    folder = CACHE / f"serve-photos-{n}"
    done = folder / ".complete"
    if done.exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "flickr").mkdir(parents=True)
    photos = flickr_images()[:n]
    for p in photos:
        (folder / "flickr" / p.name).symlink_to(p)
    made = folder / "made"
    made.mkdir()
    for i in range(n - len(photos)):
        _photo(made / f"g{i:05d}.jpg", i)
    done.write_text("ok")
    return folder


def _photo(path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    h, w = 240, 320
    yy, xx = np.mgrid[0:h, 0:w]
    base = rng.integers(0, 256, 3)
    arr = base + rng.integers(-40, 40, (h, w, 3)) + xx[..., None] * rng.integers(0, 2, 3) // 2
    arr = np.clip(arr + yy[..., None] // 3, 0, 255).astype(np.uint8)
    Image.fromarray(arr).save(path, quality=85)


def index_collection(folder: Path, db: Path) -> None:
    """Index ``folder`` (the first time, everything; later, only the removal of the photos a
    previous run's index-while-serving added)."""
    if not (db / ".complete").exists():
        shutil.rmtree(db, ignore_errors=True)
        print(f"indexing {folder} into {db} (once) ...", flush=True)
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "vtsearch.cli", "--db", str(db), "index", str(folder)],
        check=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    print(f"  indexed in {time.perf_counter() - t0:.0f} s", flush=True)
    (db / ".complete").write_text("ok")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(db: Path, folder: Path, port: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "vtsearch.cli", "--db", str(db), "serve", "--port", str(port)]
    proc = subprocess.Popen(
        [*cmd, "--folder", str(folder)],
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    import httpx

    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"the server exited: {proc.stderr.read()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/status", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    sys.exit("the server did not answer within 120 s")


def queries(n: int) -> list[str]:
    names = set((FLICKR / "splits" / "dev.txt").read_text().split())
    out: list[str] = []
    for line in (FLICKR / "captions.tsv").read_text().splitlines()[1:]:
        name, _, text = line.partition("\t")
        if name in names and text and text not in out:
            out.append(text)
        if len(out) >= n:
            break
    return out


def warm_latency(base: str, texts: list[str]) -> list[float]:
    """Milliseconds per query, one client, queries one after another."""
    import httpx

    out = []
    with httpx.Client(base_url=base, timeout=30) as c:
        for q in texts[:10]:
            c.get("/api/search", params={"q": q, "k": 20}).raise_for_status()
        for q in texts:
            t0 = time.perf_counter()
            r = c.get("/api/search", params={"q": q, "k": 20})
            out.append((time.perf_counter() - t0) * 1000)
            r.raise_for_status()
            assert len(r.json()["results"]) == 20
    return out


def load(base: str, texts: list[str], clients: int, requests: int) -> dict:
    """``clients`` threads share ``requests`` queries; throughput, latency and errors."""
    import httpx

    lock = threading.Lock()
    todo = iter(range(requests))
    times: list[float] = []
    errors: list[str] = []

    def client() -> None:
        with httpx.Client(base_url=base, timeout=60) as c:
            while True:
                with lock:
                    i = next(todo, None)
                if i is None:
                    return
                t0 = time.perf_counter()
                try:
                    r = c.get("/api/search", params={"q": texts[i % len(texts)], "k": 20})
                    ok = r.status_code == 200 and len(r.json()["results"]) > 0
                    why = f"{r.status_code}: {r.text[:200]}"
                except httpx.HTTPError as e:
                    ok, why = False, repr(e)
                ms = (time.perf_counter() - t0) * 1000
                with lock:
                    times.append(ms)
                    if not ok:
                        errors.append(why)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - t0
    return {
        "qps": len(times) / seconds,
        "median": statistics.median(times),
        "p95": float(np.percentile(times, 95)),
        "errors": errors,
        "seconds": seconds,
    }


def index_while(base: str, folder: Path, n_new: int) -> None:
    """Add ``n_new`` photos to the served folder and start ``POST /api/index``."""
    import httpx

    extra = folder / "written"
    shutil.rmtree(extra, ignore_errors=True)
    extra.mkdir()
    for i in range(n_new):
        _photo(extra / f"w{i:05d}.jpg", 1_000_000 + i)
    r = httpx.post(f"{base}/api/index", timeout=30)
    if r.status_code != 202:
        sys.exit(f"POST /api/index: {r.status_code} {r.text}")


def index_state(base: str) -> dict:
    import httpx

    return httpx.get(f"{base}/api/index", timeout=30).json()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=10_000, help="images in the collection")
    ap.add_argument("--warm", type=int, default=200, help="queries for the warm latency")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--quick", action="store_true", help="500 images, 50 + 8 x 200 queries")
    ap.add_argument("--json", type=Path, default=None, help="figures file for bench/summary.py")
    args = ap.parse_args()
    if args.quick:
        args.n, args.warm, args.requests = 500, 50, 200
    folder = build_folder(args.n)
    db = CACHE / f"serve-coll-{args.n}"
    shutil.rmtree(folder / "written", ignore_errors=True)
    index_collection(folder, db)
    texts = queries(max(args.warm, args.requests) + 10)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = start_server(db, folder, port)
    try:
        print(f"machine: {machine()}; server: vtsearch serve, {args.n:,} images, re-ranking on")
        warm = warm_latency(base, texts[: args.warm])
        med, p95 = statistics.median(warm), float(np.percentile(warm, 95))
        print(f"warm text query over HTTP: median {med:.1f} ms, p95 {p95:.1f} ms (goal 25 / 60)")
        quiet = load(base, texts, args.clients, args.requests)
        print(
            f"{args.clients} clients, {args.requests} requests: {quiet['qps']:.1f} queries/s, "
            f"median {quiet['median']:.1f} ms, p95 {quiet['p95']:.1f} ms, "
            f"{len(quiet['errors'])} errors (goal >= 50/s, 0 errors)"
        )
        index_while(base, folder, WRITE_IMAGES)
        busy = load(base, texts, args.clients, args.requests)
        state = index_state(base)
        print(
            f"the same while indexing {WRITE_IMAGES} new photos ({state['state']}, "
            f"{state.get('done')}/{state.get('total')} embedded when the load ended): "
            f"{busy['qps']:.1f} queries/s, median {busy['median']:.1f} ms, "
            f"p95 {busy['p95']:.1f} ms, {len(busy['errors'])} errors"
        )
        for e in (quiet["errors"] + busy["errors"])[:5]:
            print(f"  error: {e}")
        while index_state(base)["state"] == "running":
            time.sleep(1)
    finally:
        server.terminate()
        server.wait(timeout=60)
        shutil.rmtree(folder / "written", ignore_errors=True)
    save_figures(
        "serve",
        [
            figure("serve: warm query median", med, "ms", "<= 25", med <= 25),
            figure("serve: warm query p95", p95, "ms", "<= 60", p95 <= 60),
            figure("serve: 8 clients", quiet["qps"], "q/s", ">= 50", quiet["qps"] >= 50),
            figure("serve: 8 clients while indexing", busy["qps"], "q/s", "", None),
            figure("serve: errors", len(quiet["errors"]) + len(busy["errors"]), "", "0"),
        ],
        args.json,
    )


if __name__ == "__main__":
    main()
