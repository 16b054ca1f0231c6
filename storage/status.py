"""What a collection holds: model, counts, folders, failed files, size on disk."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from vtsearch.storage.catalog import Catalog
from vtsearch.storage.records import is_under


@dataclass
class CollectionStatus:
    path: str
    model_id: str | None
    dim: int | None
    index_kind: str | None
    counts: dict[str, int]
    failed: list[tuple[str, str]] = field(default_factory=list)
    bytes_on_disk: int = 0
    #: The indexed folders: ``(path, exists, images catalogued under it)``.
    roots: list[tuple[str, bool, int]] = field(default_factory=list)
    #: Opened read-only (this user may not write the collection).
    readonly: bool = False
    #: Where the catalog is: the SQLite file, or the PostgreSQL URL without its password.
    catalog: str = ""

    @property
    def indexed(self) -> int:
        return self.counts.get("indexed", 0)


def collection_status(folder: Path, catalog: Catalog) -> CollectionStatus:
    """The status of the collection in ``folder``."""
    meta = catalog.meta()
    return CollectionStatus(
        path=str(folder),
        model_id=meta.get("model_id"),
        dim=int(meta["dim"]) if "dim" in meta else None,
        index_kind=meta.get("index_kind"),
        counts={**catalog.counts(), "texts": catalog.text_count()},
        failed=catalog.failures(),
        bytes_on_disk=sum(f.stat().st_size for f in folder.iterdir() if f.is_file()),
        roots=_roots(catalog),
        readonly=catalog.readonly,
        catalog=catalog.location,
    )


def _roots(catalog: Catalog) -> list[tuple[str, bool, int]]:
    """Each root, whether it exists, and its rows: the paths read once, not once per root."""
    roots = catalog.roots()
    counts = dict.fromkeys(roots, 0)
    for path in catalog.records():
        for r in roots:
            if is_under(path, r):
                counts[r] += 1
                break
    return [(r, Path(r).is_dir(), counts[r]) for r in roots]
