"""Integrity check of a collection: the catalog against the FAISS indexes and the token cache.

The catalog (SQLite) is the record: each indexed row holds its vector. The FAISS files and the
token cache are derived from it, so whatever is wrong with them can be rebuilt: ``repair`` rewrites
a FAISS file from the catalog's vectors, drops token records no row points at, and queues rows
that lost their vector or tokens for the next ``index`` run (they are embedded again from their
files). Only damage to the catalog itself cannot be repaired here.

Example:
    >>> from vtsearch import Engine
    >>> report = Engine("./my-index").check()  # doctest: +SKIP
    >>> report.ok, [str(p) for p in report.problems]  # doctest: +SKIP
    (True, [])
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vtsearch.storage.catalog import Catalog

#: Prefixes of the temporary files an interrupted save can leave behind.
TEMP_PREFIXES = (".vectors-", ".texts-", ".tokens-")
#: How many ids a problem lists at most.
SHOWN_IDS = 20
#: The error recorded on a row whose stored vector was found damaged.
LOST_VECTOR = "stored vector was damaged; it is embedded again on the next index run"


@dataclass
class Problem:
    """One disagreement, and whether ``repair`` fixed it."""

    #: "catalog", "vectors", "texts" or "tokens".
    part: str
    what: str
    #: Some of the catalog ids concerned (at most ``SHOWN_IDS``).
    ids: list[int] = field(default_factory=list)
    #: What repair did about it; None when not repaired (or not asked to).
    repaired: str | None = None

    def __str__(self) -> str:
        shown = f" (ids {', '.join(map(str, self.ids))})" if self.ids else ""
        done = f" -> repaired: {self.repaired}" if self.repaired else ""
        return f"{self.part}: {self.what}{shown}{done}"


@dataclass
class CheckReport:
    """What ``check_collection`` found; ``ok`` when nothing is left wrong."""

    path: str
    #: Catalog rows with status "indexed".
    indexed: int = 0
    #: Vectors in the image index after replaying newer catalog changes.
    vectors: int = 0
    #: Filled token records, or None when the collection has no token cache.
    tokens: int | None = None
    problems: list[Problem] = field(default_factory=list)
    #: Facts worth knowing that are not problems (a stale FAISS file, rows queued for re-index).
    notes: list[str] = field(default_factory=list)
    repair: bool = False

    @property
    def ok(self) -> bool:
        """True when no problem is left (none found, or every one repaired)."""
        return all(p.repaired for p in self.problems)

    def to_dict(self) -> dict:
        return {
            "path": self.path,
            "ok": self.ok,
            "indexed": self.indexed,
            "vectors": self.vectors,
            "tokens": self.tokens,
            "problems": [
                {"part": p.part, "what": p.what, "ids": p.ids, "repaired": p.repaired}
                for p in self.problems
            ],
            "notes": self.notes,
        }


def leftover_files(folder: Path) -> list[Path]:
    """Temporary files of saves that were interrupted (a killed run leaves them)."""
    if not folder.is_dir():
        return []
    return sorted(f for f in folder.iterdir() if f.name.startswith(TEMP_PREFIXES))


def remove_leftovers(folder: Path) -> list[Path]:
    """Delete ``leftover_files``. Call it only while holding the collection's write lock: a save
    in progress looks the same."""
    gone = leftover_files(folder)
    for f in gone:
        f.unlink(missing_ok=True)
    return gone


def check_collection(folder: Path, catalog: Catalog, repair: bool = False) -> CheckReport:
    """Check (and with ``repair``, fix) one collection; hold its write lock while calling this.

    Returns a report; never raises for what it finds. Damage to the catalog database itself is
    reported, not repaired.
    """
    report = CheckReport(path=str(folder), repair=repair)
    bad = catalog.integrity_problems()
    if bad:
        report.problems.append(
            Problem(
                "catalog",
                "SQLite integrity check failed: " + "; ".join(bad[:5]) + ". "
                "Restore catalog.db from a backup, or re-index into a new collection",
            )
        )
        return report
    dups = catalog.duplicate_paths()
    if dups:
        report.problems.append(
            Problem("catalog", f"{len(dups)} paths have more than one row, e.g. {dups[0]!r}")
        )
    dim = int(catalog.get_meta("dim") or 0)
    live, pending = _live_rows(catalog, dim, report, repair)
    report.indexed = len(live)
    if pending:
        report.notes.append(
            f"{len(pending)} rows are queued to be embedded again on the next index run"
        )
    for f in leftover_files(folder):
        if repair:
            f.unlink(missing_ok=True)
            report.notes.append(f"removed a leftover temporary file: {f.name}")
        else:
            report.notes.append(f"leftover temporary file of an interrupted save: {f.name}")
    if dim:
        report.vectors = _check_index(folder, catalog, dim, "image", live, report, repair)
        if catalog.text_count() or (folder / "texts.faiss").exists():
            _check_index(folder, catalog, dim, "text", None, report, repair)
    _check_tokens(folder, catalog, live, pending, report, repair)
    return report


def _live_rows(
    catalog: Catalog, dim: int, report: CheckReport, repair: bool
) -> tuple[set[int], set[int]]:
    """Ids of indexed rows with a sound vector, and of rows queued for re-embedding."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from vtsearch.storage.schema import ImageRow

    live, damaged = set(), []
    for row_id, blob in catalog.live_vectors():
        whole = blob is not None and len(blob) % 4 == 0 and len(blob) == 4 * (dim or len(blob) // 4)
        vec = np.frombuffer(blob, dtype=np.float32) if whole and blob else None
        if vec is None or not np.isfinite(vec).all():
            damaged.append(row_id)
        else:
            live.add(row_id)
    if damaged:
        problem = Problem(
            "catalog",
            f"{len(damaged)} indexed rows have a missing or damaged vector",
            damaged[:SHOWN_IDS],
        )
        if repair:
            catalog.mark_for_reindex(damaged, LOST_VECTOR)
            problem.repaired = "their files are embedded again on the next index run"
        report.problems.append(problem)
    with Session(catalog.engine) as s:
        pending = set(s.scalars(select(ImageRow.id).where(ImageRow.mtime_ns == -1)))
    return live, pending


def _check_index(
    folder: Path,
    catalog: Catalog,
    dim: int,
    kind: str,
    live: set[int] | None,
    report: CheckReport,
    repair: bool,
) -> int:
    """Check one FAISS file (``vectors`` for images, ``texts``); returns its vector count."""
    from vtsearch.storage.vectors import IMAGES, VectorIndex, index_ids

    name = IMAGES if kind == "image" else "texts"
    part = "vectors" if kind == "image" else "texts"
    path, meta_path = folder / f"{name}.faiss", folder / f"{name}.json"
    catalog_seq = catalog.current_seq()
    if live is None:
        _, added, _ = catalog.changes_since(0, kind)
        live = {int(a[0]) for a in added}
    found: list[str] = []
    vindex = None
    if not (path.exists() and meta_path.exists()):
        if live:
            found.append(f"{name}.faiss is missing; every query rebuilds it from the catalog")
    else:
        try:
            saved_dim = int(json.loads(meta_path.read_text()).get("dim", dim))
            vindex = VectorIndex.load(folder, dim, name=name)
        except Exception as e:
            found.append(f"{name}.faiss cannot be read ({type(e).__name__}: {e})")
        else:
            if saved_dim != dim or vindex.index.d != dim:
                found.append(f"{name}.faiss has dimension {saved_dim}, not the catalog's {dim}")
                vindex = None
            elif vindex.seq > catalog_seq:
                found.append(
                    f"{name}.faiss claims catalog change {vindex.seq}, but the catalog is at "
                    f"{catalog_seq} (restored from a backup?): it holds vectors the catalog lost"
                )
                vindex = None
            elif vindex.mark is not None and catalog.mark_at(vindex.seq) != vindex.mark:
                found.append(
                    f"{name}.faiss reflects another history of the catalog than this one "
                    "(restored from a backup?): readers rebuild it"
                )
                vindex = None
            elif vindex.seq < catalog_seq:
                report.notes.append(
                    f"{name}.faiss is {catalog_seq - vindex.seq} catalog changes behind; "
                    "readers replay them (saved again at the end of each index run)"
                )
    count = len(live)
    if vindex is not None:
        vindex.sync(catalog, kind)
        ids = index_ids(vindex)
        uniq, counts = np.unique(ids, return_counts=True)
        have = set(uniq.tolist())
        extra, missing = sorted(have - live), sorted(live - have)
        twice = uniq[counts > 1].tolist()
        if extra:
            found.append(f"{len(extra)} vectors in {name}.faiss have no catalog row")
        if missing:
            found.append(f"{len(missing)} catalog rows have no vector in {name}.faiss")
        if twice:
            found.append(f"{len(twice)} ids are stored more than once in {name}.faiss")
        differ = _differing(vindex, catalog, kind, have & live)
        if differ:
            found.append(f"{len(differ)} vectors in {name}.faiss differ from the catalog's")
        ids_shown = (extra + missing + twice + differ)[:SHOWN_IDS]
        count = len(ids)
    else:
        ids_shown = []
    if found:
        problem = Problem(part, "; ".join(found), ids_shown)
        if repair:
            _rebuild(folder, catalog, dim, kind, name, vindex)
            problem.repaired = f"{name}.faiss rebuilt from the catalog's vectors"
            count = len(live)
        report.problems.append(problem)
    return count


def _differing(vindex, catalog: Catalog, kind: str, ids: set[int]) -> list[int]:
    """Ids whose stored vector differs from the catalog's (kinds that keep vectors only)."""
    tolerance = getattr(vindex, "reconstruct_tolerance", 1e-5)
    if tolerance == float("inf") or not ids:
        return []
    _, added, _ = catalog.changes_since(0, kind)
    out = []
    for row_id, _, blob in added:
        if row_id in ids:
            want = np.frombuffer(blob, dtype=np.float32)
            if not np.allclose(vindex.reconstruct(row_id), want, atol=tolerance):
                out.append(int(row_id))
    return out


def _rebuild(folder: Path, catalog: Catalog, dim: int, kind: str, name: str, old) -> None:
    """A fresh FAISS file from the catalog, of the old index's kind where it could be read."""
    from vtsearch.storage.rebuild import rebuild
    from vtsearch.storage.vectors import VectorIndex

    try:
        fresh = rebuild(catalog, dim, getattr(old, "spec", None), kind=kind)
    except ValueError:  # too few vectors to train the old kind on
        fresh = VectorIndex(dim)
        fresh.sync(catalog, kind)
    fresh.save(folder, name)


def _check_tokens(
    folder: Path,
    catalog: Catalog,
    live: set[int],
    pending: set[int],
    report: CheckReport,
    repair: bool,
) -> None:
    from vtsearch.storage.tokens import TOKENS_FILE, TOKENS_META, TokenCache

    meta_path = folder / TOKENS_META
    if not meta_path.exists():
        return
    cache = TokenCache.open_existing(folder)
    if cache is None:
        problem = Problem("tokens", f"{TOKENS_META} cannot be read")
        if repair:
            (folder / TOKENS_FILE).unlink(missing_ok=True)
            meta_path.unlink(missing_ok=True)
            catalog.mark_for_reindex(sorted(live - pending))
            problem.repaired = (
                "token cache removed; its rows are embedded again on the next index run"
            )
        report.problems.append(problem)
        return
    if cache.is_torn():
        problem = Problem("tokens", f"{TOKENS_FILE} ends in a partly written record")
        if repair:
            cache.truncate(catalog.max_image_id() + 1)
            problem.repaired = "the partial record was cut off"
        report.problems.append(problem)
    filled = set(cache.filled().tolist())
    report.tokens = len(filled)
    orphans = sorted(filled - live)
    if orphans:
        problem = Problem(
            "tokens", f"{len(orphans)} token records belong to no indexed row", orphans[:SHOWN_IDS]
        )
        if repair:
            cache.remove(np.array(orphans, dtype=np.int64))
            report.tokens -= len(orphans)
            problem.repaired = "dropped"
        report.problems.append(problem)
    lacking = sorted(live - filled - pending)
    if lacking:
        problem = Problem(
            "tokens",
            f"{len(lacking)} indexed rows have no region tokens (re-ranking decodes them again)",
            lacking[:SHOWN_IDS],
        )
        if repair:
            catalog.mark_for_reindex(lacking)
            problem.repaired = "their tokens are extracted again on the next index run"
        report.problems.append(problem)
