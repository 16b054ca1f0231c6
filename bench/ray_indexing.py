"""Indexing on Ray against indexing here: the same Flickr8k photos, the default model, one
machine.

``vtsearch index`` (``Engine.index``) into two fresh collections: once in this process, once
with ``ray="auto"`` on a local cluster of this machine's cores (``ray.init``), where Ray Data
actors decode and embed and this process commits. Printed: images/s of each (the Ray run with
and without its fixed start-up), and the largest difference between the two collections' vectors
(the paths must match row for row).

Each engine first indexes one photo (model and collection made; on Ray, the fixed cost of every
run: the actors start and load the model), then the photos are timed. On one machine Ray can
only add overhead; the figure says how much of a node's throughput the cluster path keeps, which
is what the scale plan (docs/scale.md) multiplies by the nodes.

    python bench/ray_indexing.py                 # 500 Flickr8k photos
    python bench/ray_indexing.py --limit 100     # a smoke run
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Timer, figure, flickr_images, machine, save_figures


def vectors_by_path(folder: Path) -> dict[str, np.ndarray]:
    from vtsearch.storage.catalog import Catalog

    cat = Catalog.open(folder)
    rows = cat.rows(r.id for r in cat.records().values())
    cat.close()
    return {r.path: np.frombuffer(r.vector, np.float32) for r in rows.values() if r.vector}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=500, help="Flickr8k photos")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import ray

    from vtsearch import Engine

    files = flickr_images(args.limit)
    cores = len(os.sched_getaffinity(0))
    print(f"machine: {machine()}; {len(files)} Flickr8k photos, vtsearch-lite, {cores} cores")
    with tempfile.TemporaryDirectory() as tmp:
        photos, first = Path(tmp) / "photos", Path(tmp) / "first"
        photos.mkdir()
        first.mkdir()
        for f in files:
            os.symlink(f, photos / f.name)
            f.read_bytes()  # the file cache warm for both runs alike
        # One photo first, in a folder of its own: the engine loads the model and the re-ranker
        # and creates the collection; on Ray a run of one photo is the fixed cost of a run (the
        # actors start and load the model), which the whole run minus it leaves out.
        os.symlink(flickr_images(args.limit + 1)[-1], first / "first.jpg")
        here_eng = Engine(Path(tmp) / "here")
        with Timer() as here_start:
            here_eng.index(first)
        with Timer() as here_t:
            here = here_eng.index(photos)
        with Timer() as init_t:
            ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False)
        ray_eng = Engine(Path(tmp) / "ray")
        with Timer() as ray_start:
            ray_eng.index(first, ray="auto")
        with Timer() as ray_t:
            on_ray = ray_eng.index(photos, ray="auto")
        a, b = vectors_by_path(Path(tmp) / "here"), vectors_by_path(Path(tmp) / "ray")
        ray.shutdown()
    assert sorted(a) == sorted(b), "the two runs indexed different files"
    diff = max(float(np.abs(a[p] - b[p]).max()) for p in a)
    n = here.embedded
    assert on_ray.embedded == n
    warm_here = n / here_t.s  # the engine is warm: nothing fixed is left in this run
    warm_ray = n / max(ray_t.s - ray_start.s, 1e-9)
    print(f"here, whole run:  {n / here_t.s:6.1f} img/s ({here_t.s:.1f} s)")
    print(f"ray, whole run:   {n / ray_t.s:6.1f} img/s ({ray_t.s:.1f} s)")
    print(f"first run of one photo, here / ray: {here_start.s:.1f} / {ray_start.s:.1f} s")
    print(f"ray cluster start: {init_t.s:.1f} s (once per cluster, not per run)")
    print(f"past start-up, here: {warm_here:6.1f} img/s")
    print(f"past start-up, ray:  {warm_ray:6.1f} img/s ({100 * warm_ray / warm_here:.0f}% of here)")
    print(f"largest vector difference, ray vs here: {diff:.2e}")
    save_figures(
        "ray_indexing",
        [
            figure("indexing here past start-up", warm_here, "img/s"),
            figure("indexing on Ray past start-up", warm_ray, "img/s"),
            figure("start-up here (model load)", here_start.s, "s"),
            figure("start-up on Ray (actors, model loads)", ray_start.s, "s"),
            figure("largest vector difference", diff, "", "<= 1e-5", diff <= 1e-5),
        ],
    )


if __name__ == "__main__":
    main()
