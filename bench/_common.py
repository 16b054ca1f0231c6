"""Shared bits of the bench scripts: data paths, peak memory, timing, figures for the summary."""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FLICKR = REPO.parent / "shared" / "data" / "flickr8k"
#: Generated inputs (camera-size JPEGs, synthetic collections) kept between runs.
CACHE = REPO / ".cache" / "bench"
#: Each bench writes its headline figures here; ``bench/summary.py`` prints them as one table.
RESULTS = CACHE / "results"
_START = time.perf_counter()


def need_flickr() -> Path:
    """The Flickr8k folder, or exit with a message that says where it should be."""
    if not (FLICKR / "images").is_dir() or not (FLICKR / "splits").is_dir():
        sys.exit(
            f"Flickr8k not found at {FLICKR} (needs images/, splits/, captions.tsv); "
            "put the data set there or pass --images"
        )
    return FLICKR


def flickr_images(limit: int | None = None, split: str | None = None) -> list[Path]:
    """Flickr8k image paths: a split's in its file order, else every image sorted by name."""
    root = need_flickr()
    if split:
        names = (root / "splits" / f"{split}.txt").read_text().split()
        files = [root / "images" / n for n in names]
    else:
        files = sorted((root / "images").iterdir())
    return files[:limit] if limit else files


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB (``ru_maxrss`` is KB on Linux)."""
    scale = 1 / 1024 if sys.platform != "darwin" else 1 / (1024 * 1024)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{cpu}, {os.cpu_count()} cores, load {load:.1f}"


class Timer:
    """``with Timer() as t: ...`` then ``t.s`` seconds."""

    def __enter__(self) -> Timer:
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.s = time.perf_counter() - self.t0


def save_figures(bench: str, rows: list[dict], path: Path | None = None) -> Path:
    """Write ``rows`` (``{"figure", "value", "goal", "ok"}``) for the summary table."""
    out = path or RESULTS / f"{bench}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    data = {
        "bench": bench,
        "machine": machine(),
        "seconds": time.perf_counter() - _START,
        "rows": rows,
    }
    out.write_text(json.dumps(data, indent=1))
    return out


def figure(name: str, value: float, unit: str = "", goal: str = "", ok: bool | None = None) -> dict:
    return {"figure": name, "value": value, "unit": unit, "goal": goal, "ok": ok}


#: The zero-shot dev sets: flowers-dev and concepts-dev's four (see their READMEs).
ZEROSHOT_SETS = ("flowers-dev", "imagenette", "clothing", "trashnet", "food101-10")
#: The wording fixes concepts-dev's README gives for its protocol.
WORDING = {"longsleeve": "long-sleeve shirt", "outwear": "jacket"}


def zeroshot_sets() -> dict[str, Path]:
    """Each zero-shot dev set's folder (one subfolder per class); exits when one is missing."""
    data = REPO.parent / "shared" / "data"
    out = {
        name: data / name if name == "flowers-dev" else data / "concepts-dev" / name
        for name in ZEROSHOT_SETS
    }
    missing = [str(p) for p in out.values() if not p.is_dir()]
    if missing:
        sys.exit(f"missing data: {', '.join(missing)} (../shared/data, see its README)")
    return out


def label(class_folder: str) -> str:
    """A class folder's name as words: underscores as spaces, with the README's fixes."""
    return WORDING.get(class_folder, class_folder.replace("_", " "))


def zeroshot_collection(name: str, folder: Path, embedder):
    """An engine over the set ``name``, indexed once into ``.cache/bench`` per model revision."""
    from vtsearch import Engine

    eng = Engine(CACHE / f"tags-{name}-{embedder.revision}", embedder=embedder)
    eng.index(folder)
    return eng
