"""The collection's text set (captions, labels) that images are matched against: embed and add."""

from __future__ import annotations

from collections.abc import Sequence

from vtsearch.models.base import Embedder
from vtsearch.storage.catalog import Catalog


def add_texts(
    catalog: Catalog, embedder: Embedder, texts: Sequence[str], source: str | None, batch: int
) -> int:
    """Embed and store the texts not stored yet (stripped, blank and repeated ones skipped);
    returns how many were new."""
    seen: set[str] = set()
    fresh = [t for t in (x.strip() for x in texts) if t and not (t in seen or seen.add(t))]
    known = catalog.known_texts(fresh)  # one lookup, not one per text
    fresh = [t for t in fresh if t not in known]
    for i in range(0, len(fresh), batch):
        chunk = fresh[i : i + batch]
        # As captions: image -> text and text -> text scores then share one scale.
        vecs = embedder.encode_as(chunk, label=False).vectors.float().cpu().numpy()
        catalog.add_texts(chunk, vecs, source)
    return len(fresh)
