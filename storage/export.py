"""A collection's rows for other tools: one Parquet file, or NumPy arrays beside a Parquet table.

Layouts (``vtsearch export OUT --format ...``):

- ``parquet``: ``OUT`` is one Parquet file, a row per image in id order, row groups of a few
  thousand rows. Columns: ``id`` (int64, the catalog id, the FAISS id), ``path`` (string, as
  stored: absolute), ``path_bytes`` (binary: the name's raw bytes when it is not valid UTF-8, in
  which case ``path`` shows the odd bytes escaped as ``\\xe9``; null otherwise), ``root`` (the
  indexed folder holding it), ``size`` (bytes), ``mtime`` (timestamp[us, UTC]), ``width``,
  ``height``, ``format`` (as Pillow names it), ``taken_at`` (EXIF time, timestamp[us] in the
  camera's local time), ``sha256``, ``status`` ("indexed", or "failed" with
  ``include_failed``), ``error`` (why a failed file failed), ``tags`` (list<string>: the
  zero-shot tags of ``vtsearch tag``, most similar first; empty when none) and ``vector``
  (fixed_size_list<float32>[dim], null for a failed file). The schema's metadata key
  ``vtsearch`` holds JSON: the model id, its revision, the dimension and this layout's version.
- ``npy``: ``OUT`` is a folder holding ``vectors.npy`` (float32 [N, dim]; NaN rows for failed
  files), ``ids.npy`` (int64 [N]) and ``meta.parquet`` (every column above but ``vector``);
  row ``i`` of each is the same image.

Rows are read in chunks from one snapshot of the catalog (one read transaction), so an indexer
may commit meanwhile and the export still shows one moment; memory stays bounded by a chunk
whatever the collection's size. The output is written under a temporary name beside ``OUT`` and
renamed into place: a failed or killed export leaves no half-written ``OUT``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sqlalchemy import Connection, func, select
from sqlalchemy.engine import Engine

from vtsearch.errors import ConfigError, StorageError
from vtsearch.storage.catalog import Catalog
from vtsearch.storage.catalog_tags import LIKELY_FIRST
from vtsearch.storage.files import create_temp, os_errors
from vtsearch.storage.records import root_of
from vtsearch.storage.schema import ImageRow, Root, Tag

FORMATS = ("parquet", "npy")
#: Version of the layouts above, in the ``vtsearch`` metadata.
LAYOUT_VERSION = 1
#: Vector bytes per chunk (and Parquet row group), and the fewest rows in one.
CHUNK_BYTES = 32 << 20
MIN_CHUNK_ROWS = 256


@dataclass
class ExportReport:
    path: str
    format: str
    rows: int
    #: Size of what was written.
    bytes: int
    seconds: float


def export_collection(
    catalog: Catalog, out: Path, format: str = "parquet", include_failed: bool = False
) -> ExportReport:
    """Write the catalog's images to ``out`` in ``format`` (see the module's docstring).

    Raises:
        ConfigError: an unknown format, ``out`` a folder for Parquet, or an npy ``out`` that
            exists and is not an empty folder.
        StorageError: ``out`` cannot be written (a permission, a full disk, no such folder),
            or a stored vector is damaged (``vtsearch check --repair`` mends it).
    """
    t0 = time.perf_counter()
    if format not in FORMATS:
        raise ConfigError(f"unknown export format {format!r}; use one of: {', '.join(FORMATS)}")
    if format == "parquet" and out.is_dir():
        raise ConfigError(
            f"{out} is a folder; give the Parquet file's name, e.g. {out}/all.parquet"
        )
    if format == "npy" and out.exists() and not (out.is_dir() and not any(out.iterdir())):
        raise ConfigError(
            f"{out} exists; an npy export writes a new folder (or fills an empty one): "
            "give another name or remove it"
        )
    meta = catalog.meta()
    dim = int(meta.get("dim") or 0)
    info = {
        "model_id": meta.get("model_id"),
        "model_revision": meta.get("model_revision"),
        "dim": dim,
        "layout": LAYOUT_VERSION,
    }
    with _snapshot(catalog.engine) as con:
        chunks = _chunks(con, dim, include_failed)
        if format == "parquet":
            rows = _write_parquet(out, chunks, dim, info)
        else:
            n = con.scalar(
                select(func.count()).select_from(ImageRow).where(_wanted(include_failed))
            )
            rows = _write_npy(out, chunks, dim, info, int(n or 0))
    size = sum(f.stat().st_size for f in out.iterdir()) if out.is_dir() else out.stat().st_size
    return ExportReport(str(out), format, rows, size, time.perf_counter() - t0)


@contextmanager
def _snapshot(engine: Engine) -> Iterator[Connection]:
    """A connection whose reads all see one moment of the catalog."""
    with engine.connect() as con:
        if engine.dialect.name == "sqlite":
            # pysqlite opens no transaction for a SELECT: open one, so every chunk reads the
            # same WAL snapshot.
            con = con.execution_options(isolation_level="AUTOCOMMIT")
            con.exec_driver_sql("BEGIN")
            try:
                yield con
            finally:
                con.exec_driver_sql("ROLLBACK")
        else:
            con = con.execution_options(isolation_level="REPEATABLE READ")
            with con.begin():
                yield con


def _wanted(include_failed: bool):
    return ImageRow.status.in_(("indexed", "failed") if include_failed else ("indexed",))


#: The columns read per image, in order.
_COLUMNS = (
    ImageRow.id,
    ImageRow.path,
    ImageRow.size,
    ImageRow.mtime_ns,
    ImageRow.width,
    ImageRow.height,
    ImageRow.format,
    ImageRow.taken_at,
    ImageRow.sha256,
    ImageRow.status,
    ImageRow.error,
    ImageRow.vector,
)


def _chunks(con: Connection, dim: int, include_failed: bool) -> Iterator[tuple[dict, np.ndarray]]:
    """``(columns, vectors [n, dim] float32, NaN rows for failed files)`` per chunk, by id."""
    roots = [r for r in con.scalars(select(Root.path))]
    step = max(MIN_CHUNK_ROWS, CHUNK_BYTES // max(4 * dim, 1))
    last = 0
    while True:
        got = con.execute(
            select(*_COLUMNS)
            .where(_wanted(include_failed), ImageRow.id > last)
            .order_by(ImageRow.id)
            .limit(step)
        ).all()
        if not got:
            return
        last = int(got[-1].id)
        vectors = np.full((len(got), dim), np.nan, dtype=np.float32)
        for i, r in enumerate(got):
            if r.vector is None:
                continue
            if len(r.vector) != 4 * dim:
                raise StorageError(
                    f"image {r.id} ({_text(r.path)}) has a damaged stored vector "
                    f"({len(r.vector)} bytes, not {4 * dim}); run `vtsearch check --repair`, "
                    "then index again"
                )
            vectors[i] = np.frombuffer(r.vector, dtype=np.float32)
        paths = [r.path for r in got]
        cols = {
            "id": [r.id for r in got],
            "path": [_text(p) for p in paths],
            "path_bytes": [None if _is_utf8(p) else os.fsencode(p) for p in paths],
            "root": [_text(x) if (x := root_of(p, roots)) else None for p in paths],
            "size": [r.size for r in got],
            "mtime": [
                r.mtime_ns // 1000 if r.mtime_ns is not None and r.mtime_ns >= 0 else None
                for r in got
            ],
            "width": [r.width for r in got],
            "height": [r.height for r in got],
            "format": [r.format for r in got],
            "taken_at": [r.taken_at for r in got],
            "sha256": [r.sha256 for r in got],
            "status": [r.status for r in got],
            "error": [r.error for r in got],
        }
        tags: dict[int, list[str]] = {}
        for image_id, label in con.execute(
            select(Tag.image_id, Tag.label)
            .where(Tag.image_id >= cols["id"][0], Tag.image_id <= last)
            .order_by(Tag.image_id, *LIKELY_FIRST)
        ):
            tags.setdefault(image_id, []).append(label)
        # One label kept by two tag sets is one tag.
        cols["tags"] = [list(dict.fromkeys(tags.get(i, []))) for i in cols["id"]]
        yield cols, vectors


def _is_utf8(path: str) -> bool:
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _text(path: str) -> str:
    """A path as valid UTF-8 text: bytes that are not are shown escaped (``\\xe9``)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _schema(dim: int, info: dict, with_vector: bool):
    import pyarrow as pa

    fields = [
        pa.field("id", pa.int64(), nullable=False),
        pa.field("path", pa.string(), nullable=False),
        pa.field("path_bytes", pa.binary()),
        pa.field("root", pa.string()),
        pa.field("size", pa.int64()),
        pa.field("mtime", pa.timestamp("us", tz="UTC")),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("format", pa.string()),
        pa.field("taken_at", pa.timestamp("us")),
        pa.field("sha256", pa.string()),
        pa.field("status", pa.string(), nullable=False),
        pa.field("error", pa.string()),
        pa.field("tags", pa.list_(pa.string()), nullable=False),
    ]
    if with_vector:
        fields.append(pa.field("vector", pa.list_(pa.float32(), dim)))
    return pa.schema(fields, metadata={"vtsearch": json.dumps(info)})


def _table(schema, cols: dict, vectors: np.ndarray | None):
    import pyarrow as pa

    n = len(cols["id"])
    arrays = [pa.array(cols[f.name], type=f.type) for f in schema if f.name in cols]
    if vectors is not None:
        missing = np.isnan(vectors[:, 0]) if vectors.shape[1] else np.zeros(n, dtype=bool)
        values = pa.array(np.nan_to_num(vectors, nan=0.0).reshape(-1), type=pa.float32())
        mask = pa.array(missing) if missing.any() else None
        arrays.append(pa.FixedSizeListArray.from_arrays(values, vectors.shape[1], mask=mask))
    return pa.Table.from_arrays(arrays, schema=schema)


def _write_parquet(out: Path, chunks: Iterator, dim: int, info: dict) -> int:
    import pyarrow.parquet as pq

    schema = _schema(dim, info, with_vector=True)
    with _writing(out):
        tmp = create_temp(out.parent, f".{out.name}.", ".partial")
        try:
            rows = 0
            with open(tmp, "wb") as f, pq.ParquetWriter(f, schema) as writer:
                for cols, vectors in chunks:
                    writer.write_table(_table(schema, cols, vectors))
                    rows += len(cols["id"])
            os.replace(tmp, out)
        finally:
            tmp.unlink(missing_ok=True)
    return rows


def _write_npy(out: Path, chunks: Iterator, dim: int, info: dict, n: int) -> int:
    """Arrays written front to back (no memory map: a full disk is then an error, not a
    SIGBUS), the table beside them; all in a temporary folder renamed to ``out`` at the end."""
    import pyarrow.parquet as pq

    schema = _schema(dim, info, with_vector=False)
    tmp = out.parent / f".{out.name}.{secrets.token_hex(8)}.partial"
    with _writing(out):
        tmp.mkdir()
        try:
            rows = 0
            with (
                open(tmp / "vectors.npy", "wb") as fv,
                open(tmp / "ids.npy", "wb") as fi,
                pq.ParquetWriter(tmp / "meta.parquet", schema) as writer,
            ):
                _npy_header(fv, np.float32, (n, dim))
                _npy_header(fi, np.int64, (n,))
                for cols, vectors in chunks:
                    fv.write(np.ascontiguousarray(vectors, dtype="<f4").tobytes())
                    fi.write(np.asarray(cols["id"], dtype="<i8").tobytes())
                    writer.write_table(_table(schema, cols, None))
                    rows += len(cols["id"])
            if rows != n:  # cannot happen within one snapshot; never leave arrays that lie
                raise StorageError(f"export of {n} rows read {rows}; run it again")
            try:
                os.replace(tmp, out)  # onto nothing, or onto an empty folder
            except OSError as e:
                raise ConfigError(f"{out} exists and is not empty: give another name") from e
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return rows


@contextmanager
def _writing(out: Path) -> Iterator[None]:
    """Any OS error while writing ``out`` as a one-line :class:`StorageError` naming it."""
    try:
        with os_errors(out, "write"):
            yield
    except OSError as e:
        raise StorageError(f"cannot write {out}: {e.strerror or e}") from e


def _npy_header(f, dtype, shape: tuple[int, ...]) -> None:
    header = {
        "descr": np.lib.format.dtype_to_descr(np.dtype(dtype).newbyteorder("<")),
        "fortran_order": False,
        "shape": shape,
    }
    np.lib.format.write_array_header_1_0(f, header)
