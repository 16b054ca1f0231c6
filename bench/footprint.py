"""Bytes per image of a collection, on disk and in RAM: each vector index kind, the catalog (SQLite
and PostgreSQL), the region-token cache and the thumbnails; measured, then extrapolated linearly.

Vectors are seeded random unit vectors of the default model's image dimension (``vtsearch-lite``:
read from its weights file, 1920), with catalog ids 1..N. Everything is built by the product's own
code, then measured:

- Index kinds (``vtsearch.storage.rebuild.build`` with the factory's specs): ``flat``; ``hnsw``
  over float vectors (the factory's graph below ``SQ8_MIN``, and that of older collections);
  ``hnsw`` over 8-bit codes with float16 re-scoring (``hnsw_spec``, the factory's pick past
  ``FLAT_MAX``); ``ivfpq`` (``spec_for_kind``, the factory's pick when the vectors do not fit in
  memory). Per vector: the files ``VectorIndex.save`` writes, ``VectorIndex.memory_bytes()``, and
  the resident memory a fresh process gains loading the saved index (``VectorIndex.load``), and
  what its first query adds. The fixed part (a trained quantizer, headers: the index cloned and
  reset) is shown apart and left out of the per-vector figures, so that they extrapolate.
- The catalog: a real ``Catalog`` filled through ``write_batch`` (2,000 rows a commit) with
  camera-like rows (60-character paths, sizes, times, sha256, width, height, format, taken_at)
  and their float32 vectors; ``catalog.db`` after a checkpoint and close (its tables and indexes
  apart, from SQLite's ``dbstat``). On PostgreSQL (``--postgres``; a throw-away server from
  ``tests/pgserver.py``, on by default when ``initdb`` is found): ``pg_total_relation_size``
  of ``images`` (heap, TOAST, indexes) and the growth of ``pg_database_size``.
- The region-token cache: a real ``TokenCache`` of the shipped fusion scorer's token shape, filled
  with ``--token-n`` random images (default: N or 20,000, whichever is smaller), size on disk.
- Thumbnails: ``vtsearch.images.thumbnail`` of each photo in ``data/samples`` (and of the first
  ``--flickr`` Flickr8k photos when the data set is there), kept through ``ThumbCache``; bytes
  written and blocks the file system allocated. Thumbnails are made on first view, so this is the
  cost of a collection whose every image has been shown.

RAM is what stays resident while serving: the vector index. The catalog, tokens and thumbnails are
read from disk per query (the OS page cache keeps what it can).

    python bench/footprint.py                          # 100k x 1920 (12 min on 2 busy cores)
    python bench/footprint.py --n 20000 --dims 1920,1152
    python bench/footprint.py --kinds flat,ivfpq --no-postgres
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import FLICKR, REPO, Timer, figure, machine, peak_rss_mb, save_figures

#: What ``--kinds`` chooses from.
KINDS = ("flat", "hnsw-flat", "hnsw-sq8", "ivfpq")
#: The collection size the last column extrapolates to.
SCALE = 100_000_000
BATCH = 2_000
#: SQLite's names of the ``images`` table's indexes.
IMAGE_INDEXES = ("ix_images_", "sqlite_autoindex_images_")
GB = 1e9


def model_shapes() -> tuple[int, int, int]:
    """The default model's image vector size and the fusion scorer's token shape (N, C), read
    from the shipped weights' metadata (no model is loaded)."""
    from safetensors import safe_open

    from vtsearch.models.fusion import FusionConfig
    from vtsearch.models.lite import WEIGHTS_PATH
    from vtsearch.models.lite_config import LiteConfig
    from vtsearch.search.rerank import default_weights

    with safe_open(str(WEIGHTS_PATH), framework="np") as f:
        dim = LiteConfig.from_json((f.metadata() or {}).get("config", "{}")).dim
    with safe_open(str(default_weights("vtsearch-lite")), framework="np") as f:
        fusion = FusionConfig.from_json((f.metadata() or {}).get("config", "{}"))
    return dim, fusion.n_regions, fusion.region_dim


def unit_vectors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.empty((n, dim), dtype=np.float32)
    for i in range(0, n, 20_000):
        part = rng.standard_normal((min(20_000, n - i), dim), dtype=np.float32)
        part /= np.linalg.norm(part, axis=1, keepdims=True)
        x[i : i + len(part)] = part
    return x


def files_bytes(paths) -> tuple[int, int]:
    """Bytes written and bytes allocated on disk (file-system blocks) of ``paths``."""
    size = blocks = 0
    for p in paths:
        st = os.stat(p)
        size += st.st_size
        blocks += st.st_blocks * 512
    return size, blocks


@dataclass
class Part:
    """One component's cost per image (NaN: not resident / not measured)."""

    name: str
    disk: float
    ram: float = float("nan")
    note: str = ""

    def line(self) -> str:
        def col(v: float, w: int, scale: float = 1.0, fmt: str = ",.0f") -> str:
            return f"{'-':>{w}}" if np.isnan(v) else f"{v * scale:>{w}{fmt}}"

        return (
            f"{self.name:<42}{col(self.disk, 12)}{col(self.ram, 12)}"
            f"{col(self.disk, 13, SCALE / GB, ',.1f')}{col(self.ram, 12, SCALE / GB, ',.1f')}"
            f"  {self.note}"
        )


PARTS_HEADER = (
    f"{'component':<42}{'disk B/img':>12}{'RAM B/img':>12}"
    f"{'disk GB':>13}{'RAM GB':>12}\n"
    f"{'':<66}{f'-- at {SCALE:,} images --':>25}"
)

_RSS_PROBE = """
import json, sys
from pathlib import Path
import numpy as np
import faiss
from vtsearch.storage.vectors import VectorIndex

def rss(field="VmRSS"):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024

before = rss()
vi = VectorIndex.load(Path(sys.argv[1]), int(sys.argv[2]))
loaded = rss()
q = np.random.default_rng(1).standard_normal((1, vi.dim), dtype=np.float32)
vi.search(q / np.linalg.norm(q), 10)
print(json.dumps({"n": len(vi), "before": before, "loaded": loaded, "queried": rss(),
                  "peak": rss("VmHWM")}))
"""


def load_rss(folder: Path, dim: int) -> dict:
    """Resident memory of a fresh process before and after loading the saved index and after
    one query (faiss and vtsearch already imported in ``before``)."""
    done = subprocess.run(
        [sys.executable, "-c", _RSS_PROBE, str(folder), str(dim)],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def spec_of(kind: str, n: int, dim: int):
    """The spec the product builds for ``kind`` (see the module docstring)."""
    from vtsearch.storage.index_kinds import hnsw_spec, spec_for_kind

    if kind == "flat":
        return spec_for_kind("flat", n, dim)
    if kind == "hnsw-flat":
        return replace(hnsw_spec(0), built_for=n)  # the factory's graph over float vectors
    if kind == "hnsw-sq8":
        return hnsw_spec(n)
    return spec_for_kind("ivfpq", n, dim, memory_bytes=1)  # vectors that do not fit


def describe(spec) -> str:
    if spec.kind == "hnsw":
        extra = f", refine {spec.refine}" if spec.quantised_graph else ""
        return f"M {spec.m}, efC {spec.ef_construction}, {spec.codec}{extra}"
    if spec.kind == "ivfpq":
        return f"{spec.nlist} lists, PQ{spec.pq_m}x8"
    return "exact"


def measure_index(kind: str, x: np.ndarray, ids: np.ndarray, tmp: Path) -> dict:
    import faiss

    from vtsearch.storage.rebuild import build
    from vtsearch.storage.vectors import VectorIndex

    n, dim = x.shape
    spec = spec_of(kind, n, dim)
    with Timer() as t:
        vi = build(spec, dim, ids, x)
    mem = vi.memory_bytes()
    empty = faiss.clone_index(vi.index)
    empty.reset()  # trained parts (quantizer, codebooks, 8-bit ranges) and headers stay
    fixed = VectorIndex(dim, spec, empty).memory_bytes()
    del empty
    folder = tmp / f"index-{kind}"
    vi.save(folder)
    del vi
    gc.collect()
    written = [folder / f for f in os.listdir(folder)]
    disk, alloc = files_bytes(written)
    rss = load_rss(folder, dim)
    assert rss["n"] == n, rss
    shutil.rmtree(folder)
    return {
        "kind": kind,
        "spec": describe(spec),
        "build_s": t.s,
        "fixed": fixed,
        "file": (disk - fixed) / n,
        "alloc": (alloc - fixed) / n,
        "mem": (mem - fixed) / n,
        "rss_load": (rss["loaded"] - rss["before"] - fixed) / n,
        "query_mb": (rss["queried"] - rss["loaded"]) / 2**20,
        "rss_peak": (rss["peak"] - rss["before"] - fixed) / n,
        "model": spec.bytes_per_vector(dim),
    }


INDEX_HEADER = (
    f"{'kind':<10}{'spec':<30}{'build s':>8}{'fixed MB':>9}{'file':>8}{'memory_':>9}"
    f"{'RSS load':>9}{'peak':>8}{'model':>8}{'query MB':>9}"
)


def index_line(r: dict) -> str:
    return (
        f"{r['kind']:<10}{r['spec']:<30}{r['build_s']:>8.1f}{r['fixed'] / 2**20:>9.1f}"
        f"{r['file']:>8.0f}{r['mem']:>9.0f}{r['rss_load']:>9.0f}{r['rss_peak']:>8.0f}"
        f"{r['model']:>8.0f}{r['query_mb']:>9.1f}"
    )


def camera_rows(x: np.ndarray, start: int):
    """Camera-like ``NewImage`` records for vectors ``x`` (row ``i`` is file ``start + i``)."""
    from vtsearch.storage.records import NewImage

    rng = np.random.default_rng(start)
    t0 = datetime(2015, 1, 1)
    out = []
    for j, v in enumerate(x):
        i = start + j
        taken = t0 + timedelta(seconds=int(rng.integers(0, 10 * 365 * 86400)))
        path = f"/home/alice/Pictures/{taken:%Y}/{taken:%Y-%m-%d} Holiday/IMG_{i:08d}.JPG"
        mtime = int(taken.timestamp() * 1e9) + int(rng.integers(0, 10**9))
        out.append(
            NewImage(
                path=path,
                size=int(rng.integers(1_500_000, 8_000_000)),
                mtime_ns=mtime,
                sha256=hashlib.sha256(i.to_bytes(8, "little")).hexdigest(),
                vector=v,
                width=4032,
                height=3024,
                format="JPEG",
                taken_at=taken,
                ctime_ns=mtime + 1_000,
                inode=10_000_000 + i,
            )
        )
    return out


def fill(catalog, x: np.ndarray, dim: int) -> float:
    """Write every vector of ``x`` as a row, ``BATCH`` rows a commit; returns the seconds."""
    catalog.bind_model("vtsearch-lite", dim)
    with Timer() as t:
        for i in range(0, len(x), BATCH):
            catalog.write_batch(camera_rows(x[i : i + BATCH], i))
    return t.s


def catalog_sqlite(x: np.ndarray, tmp: Path) -> dict:
    import sqlite3

    from vtsearch.storage.catalog import Catalog

    n, dim = x.shape
    folder = tmp / "catalog-sqlite"
    cat = Catalog.open(folder)
    seconds = fill(cat, x, dim)
    with cat.engine.connect() as con:
        con.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    cat.close()
    files = [p for p in folder.iterdir() if p.name.startswith("catalog.db")]
    disk, _ = files_bytes(files)
    con = sqlite3.connect(folder / "catalog.db")
    parts = dict(con.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name").fetchall())
    con.close()
    shutil.rmtree(folder)
    return {
        "seconds": seconds,
        "disk": disk / n,
        "files": ", ".join(sorted(p.name for p in files)),
        "parts": {
            k: v / n for k, v in parts.items() if k == "images" or k.startswith(IMAGE_INDEXES)
        },
        "other": sum(
            v for k, v in parts.items() if not (k == "images" or k.startswith(IMAGE_INDEXES))
        )
        / n,
    }


def postgres_available() -> str | None:
    """Why the PostgreSQL part cannot run, or None."""
    sys.path.insert(0, str(REPO / "tests"))
    try:
        import psycopg  # noqa: F401
        from pgserver import bin_dir
    except ImportError as e:
        return f"{e.name} not importable"
    if bin_dir() is None:
        return "no initdb/pg_ctl found (install postgresql)"
    return None


def catalog_postgres(x: np.ndarray, tmp: Path) -> dict:
    from pgserver import PgServer
    from sqlalchemy import text

    from vtsearch.storage.catalog import Catalog

    n, dim = x.shape
    server = PgServer()
    server.start()
    try:
        cat = Catalog.open(tmp / "catalog-pg", url=server.database("footprint"))
        size_sql = text("SELECT pg_database_size(current_database())")
        with cat.engine.connect() as con:
            empty = con.execute(size_sql).scalar()
        seconds = fill(cat, x, dim)
        with cat.engine.connect() as con:
            con.execute(text("CHECKPOINT"))
            got = tuple(
                con.execute(
                    text(
                        "SELECT pg_total_relation_size('images'), pg_relation_size('images'), "
                        "pg_total_relation_size(reltoastrelid), pg_indexes_size('images'), "
                        "pg_database_size(current_database()) FROM pg_class "
                        "WHERE relname = 'images'"
                    )
                ).one()
            )
        cat.close()
    finally:
        server.stop()
    total, heap, toast, indexes, database = got
    return {
        "seconds": seconds,
        "total": total / n,
        "heap": heap / n,
        "toast": toast / n,
        "indexes": indexes / n,
        "database": (database - empty) / n,
    }


def token_cache(n: int, shape: tuple[int, int], tmp: Path) -> dict:
    from vtsearch.storage.tokens import TOKENS_FILE, TokenCache

    folder = tmp / "tokens"
    cache = TokenCache(folder, *shape, revision="footprint")
    rng = np.random.default_rng(0)
    with Timer() as t:
        for i in range(1, n + 1, BATCH):
            ids = np.arange(i, min(i + BATCH, n + 1))
            tokens = rng.standard_normal((len(ids), *shape), dtype=np.float32)
            cache.put(ids, tokens / np.linalg.norm(tokens, axis=2, keepdims=True))
    disk, alloc = files_bytes(folder.iterdir())
    body, _ = files_bytes([folder / TOKENS_FILE])
    shutil.rmtree(folder)
    # Ids start at 1: slot 0 is allocated too (as in a collection).
    return {"n": n, "seconds": t.s, "disk": disk / n, "alloc": alloc / n, "record": body / (n + 1)}


def thumbnails(flickr: int, tmp: Path) -> dict:
    from vtsearch.images import THUMB_SIZE, thumbnail
    from vtsearch.storage.thumbs import ThumbCache

    sets = {"data/samples": sorted(p for p in (REPO / "data" / "samples").iterdir())}
    if flickr and (FLICKR / "images").is_dir():
        sets["flickr8k"] = sorted((FLICKR / "images").iterdir())[:flickr]
    out = {}
    for name, files in sets.items():
        folder = tmp / f"thumbs-{name.replace('/', '-')}"
        folder.mkdir()  # the collection folder
        cache = ThumbCache(folder)
        made = 0
        for i, f in enumerate(files):
            try:
                data = thumbnail(str(f))
            except Exception:  # captions.txt, LICENSES.md
                continue
            assert cache.put(i + 1, hashlib.sha256(data).hexdigest(), data)
            made += 1
        disk, alloc = files_bytes(cache.dir.iterdir())
        shutil.rmtree(folder)
        out[name] = {"n": made, "disk": disk / made, "alloc": alloc / made}
    out["size"] = THUMB_SIZE
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000, help="images/vectors (default 100k)")
    ap.add_argument(
        "--dims",
        default="model",
        help="comma-separated vector sizes of the index runs; 'model' is the default model's "
        "(the catalog is measured at the first)",
    )
    ap.add_argument("--kinds", default=",".join(KINDS), help=f"of {','.join(KINDS)}")
    ap.add_argument("--token-n", type=int, default=None, help="token cache images (<= 20k)")
    ap.add_argument(
        "--postgres",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also measure the catalog on PostgreSQL (default: when initdb is found)",
    )
    ap.add_argument("--flickr", type=int, default=300, help="Flickr8k photos for thumbnails")
    ap.add_argument("--tmp", type=Path, default=None, help="scratch folder (default: /tmp)")
    ap.add_argument("--json", type=Path, default=None, help="figures file for bench/summary.py")
    args = ap.parse_args()
    kinds = args.kinds.split(",")
    if set(kinds) - set(KINDS):
        ap.error(f"unknown kind(s) {', '.join(sorted(set(kinds) - set(KINDS)))}")

    import faiss

    model_dim, n_regions, region_dim = model_shapes()
    dims = [model_dim if d == "model" else int(d) for d in args.dims.split(",")]
    n = args.n
    ids = np.arange(1, n + 1, dtype=np.int64)
    why_not_pg = postgres_available()
    if args.postgres is None:
        args.postgres = why_not_pg is None
    print(
        f"machine: {machine()}; faiss {faiss.__version__}; {n:,} random unit vectors; "
        f"vtsearch-lite: {model_dim}-d image vectors, region tokens {n_regions} x {region_dim}"
    )
    tmp = Path(tempfile.mkdtemp(prefix="vtsearch-footprint-", dir=args.tmp))
    parts: list[Part] = []
    figures = []
    tag = f"{n // 1000}k"
    try:
        for d_i, dim in enumerate(dims):
            with Timer() as t:
                x = unit_vectors(n, dim)
            print(f"\n== vector indexes: {n:,} x {dim} (data {t.s:.1f} s) ==")
            print(
                "bytes per vector past the fixed part: file = what VectorIndex.save writes, "
                "memory_ = VectorIndex.memory_bytes(),\nRSS load = resident growth of a fresh "
                "process loading the file, peak = its high-water mark during the load, model = "
                "IndexSpec.bytes_per_vector\n(the factory's estimate); query MB = what the first "
                "query then adds (in all, not per vector)"
            )
            print(INDEX_HEADER)
            for kind in kinds:
                r = measure_index(kind, x, ids, tmp)
                print(index_line(r), flush=True)
                if d_i == 0:
                    parts.append(
                        Part(
                            f"index {kind} ({dim}-d)",
                            r["file"],
                            r["rss_load"],
                            f"build {r['build_s']:.0f} s at {tag}; fixed "
                            f"{r['fixed'] / 2**20:.1f} MB apart",
                        )
                    )
                figures.append(
                    figure(f"index {kind} {dim}-d @{tag}: RAM", r["rss_load"], "B/vector")
                )
                figures.append(figure(f"index {kind} {dim}-d @{tag}: file", r["file"], "B/vector"))
                gc.collect()
            if d_i == 0:
                print(f"\n== catalog (SQLite): {n:,} rows, {BATCH:,} a commit ==")
                c = catalog_sqlite(x, tmp)
                print(
                    f"{c['disk']:,.0f} B/image ({c['files']}; vector {4 * dim:,} B); "
                    f"written in {c['seconds']:.1f} s ({n / c['seconds']:,.0f} rows/s)"
                )
                for name, b in sorted(c["parts"].items(), key=lambda kv: -kv[1]):
                    print(f"  {name:<34}{b:>9,.0f} B/image")
                print(f"  {'other tables (meta, tags, ...)':<34}{c['other']:>9,.0f} B/image")
                parts.append(Part("catalog, SQLite (vector in row)", c["disk"], note="on disk"))
                figures.append(figure(f"catalog SQLite @{tag}", c["disk"], "B/image"))
                if args.postgres:
                    print(f"\n== catalog (PostgreSQL): {n:,} rows, {BATCH:,} a commit ==")
                    if why_not_pg:
                        print(f"skipped: {why_not_pg}")
                    else:
                        p = catalog_postgres(x, tmp)
                        print(
                            f"images: {p['total']:,.0f} B/image = heap {p['heap']:,.0f} + TOAST "
                            f"{p['toast']:,.0f} + indexes {p['indexes']:,.0f}; database growth "
                            f"{p['database']:,.0f} B/image; written in {p['seconds']:.1f} s"
                        )
                        parts.append(
                            Part(
                                "catalog, PostgreSQL (images)",
                                p["total"],
                                note=f"database growth {p['database']:,.0f} B/image",
                            )
                        )
                        figures.append(figure(f"catalog PostgreSQL @{tag}", p["total"], "B/image"))
                else:
                    print(f"\n(PostgreSQL catalog skipped: {why_not_pg or '--no-postgres'})")
            del x
            gc.collect()

        token_n = args.token_n or min(n, 20_000)
        print(f"\n== region-token cache: {token_n:,} images of {n_regions} x {region_dim} ==")
        tk = token_cache(token_n, (n_regions, region_dim), tmp)
        print(
            f"{tk['disk']:,.0f} B/image on disk ({tk['alloc']:,.0f} allocated; a record is "
            f"{tk['record']:,.0f} B: int8 tokens + an fp16 scale each); written in "
            f"{tk['seconds']:.1f} s"
        )
        parts.append(
            Part("region-token cache", tk["disk"], note=f"memory-mapped; measured at {token_n:,}")
        )
        figures.append(figure("token cache", tk["disk"], "B/image"))

        th = thumbnails(args.flickr, tmp)
        print(f"\n== thumbnails (longest side {th.pop('size')}) ==")
        for name, v in th.items():
            print(
                f"{name}: {v['n']} photos, {v['disk']:,.0f} B/image written, "
                f"{v['alloc']:,.0f} B/image allocated"
            )
        name, v = ("flickr8k", th["flickr8k"]) if "flickr8k" in th else next(iter(th.items()))
        parts.append(
            Part("thumbnails (every image viewed)", v["alloc"], note=f"{name}, blocks allocated")
        )
        figures.append(figure(f"thumbnail ({name})", v["alloc"], "B/image"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(
        f"\n== per image: measured at {tag}; the last two columns are EXTRAPOLATED (linear, "
        f"x {SCALE:,}; GB = 1e9 B) =="
    )
    print(PARTS_HEADER)
    for p in parts:
        print(p.line())
    by_name = {p.name.split(" (")[0]: p for p in parts}
    base = [p for p in parts if not p.name.startswith("index") and "PostgreSQL" not in p.name]
    for kind in ("hnsw-sq8", "ivfpq"):
        index = by_name.get(f"index {kind}")
        if index is None:
            continue
        total = Part(
            f"total: SQLite, tokens, thumbs, {kind}",
            sum(p.disk for p in [*base, index]),
            index.ram,
        )
        print(total.line())
    print(f"\npeak RSS: {peak_rss_mb():,.0f} MB")
    save_figures("footprint", figures, args.json)


if __name__ == "__main__":
    main()
