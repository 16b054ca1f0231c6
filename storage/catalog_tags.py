"""Zero-shot tags as part of the catalog: named label sets, which images each set has scored,
and the labels kept per image (mixed into ``Catalog``)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from vtsearch.storage.schema import ImageRow, Meta, Tag, Tagged, TagSet
from vtsearch.storage.sqlite import writes


@dataclass(frozen=True)
class StoredTagSet:
    name: str
    labels: list[str]
    signature: str
    model: str
    threshold: float | None
    top_k: int
    images: int  # how many images it has scored
    tags: int  # how many labels it kept


@dataclass(frozen=True)
class StoredTag:
    label: str
    score: float
    confidence: float | None
    set_name: str


class TagRows:
    """Catalog methods for zero-shot tags."""

    def tags_version(self) -> str:
        """Changes whenever a tag is written or dropped (what a memo of tag filters keys on)."""
        with Session(self.engine) as s:
            row = s.get(Meta, TAGS_VERSION)
            return row.value if row else "0"

    def tag_sets(self) -> list[StoredTagSet]:
        with Session(self.engine) as s:
            scored = dict(
                s.execute(select(Tagged.set_name, func.count()).group_by(Tagged.set_name)).all()
            )
            kept = dict(s.execute(select(Tag.set_name, func.count()).group_by(Tag.set_name)).all())
            return [
                StoredTagSet(
                    r.name,
                    json.loads(r.labels),
                    r.signature,
                    r.model,
                    r.threshold,
                    r.top_k,
                    scored.get(r.name, 0),
                    kept.get(r.name, 0),
                )
                for r in s.scalars(select(TagSet).order_by(TagSet.name))
            ]

    @writes
    def start_tag_set(
        self,
        name: str,
        labels: list[str],
        signature: str,
        model: str,
        threshold: float | None,
        top_k: int,
    ) -> bool:
        """Record the set ``name``; one recorded with another signature loses its tags (they were
        scored by other labels, prompts, model or rule). Returns whether that happened."""
        with Session(self.engine) as s, s.begin():
            row = s.get(TagSet, name)
            replaced = row is not None and row.signature != signature
            if replaced:
                s.execute(delete(Tag).where(Tag.set_name == name))
                s.execute(delete(Tagged).where(Tagged.set_name == name))
                _bump(s)
            s.merge(
                TagSet(
                    name=name,
                    labels=json.dumps(labels),
                    signature=signature,
                    model=model,
                    threshold=threshold,
                    top_k=top_k,
                    updated_at=time.time(),
                )
            )
            return replaced

    def count_untagged(self, name: str) -> int:
        with Session(self.engine) as s:
            return s.scalar(select(func.count()).select_from(ImageRow).where(*_untagged(name)))

    def untagged_vectors(
        self, name: str, chunk: int = 4096
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(ids, vectors)`` of the indexed images set ``name`` has not scored, a chunk at a
        time in id order; safe to write tags between chunks (each read starts past the last)."""
        last = 0
        while True:
            with Session(self.engine) as s:
                rows = s.execute(
                    select(ImageRow.id, ImageRow.vector)
                    .where(*_untagged(name), ImageRow.id > last)
                    .order_by(ImageRow.id)
                    .limit(chunk)
                ).all()
            if not rows:
                return
            last = rows[-1][0]
            ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            yield ids, np.stack([np.frombuffer(r[1], dtype=np.float32) for r in rows])

    @writes
    def write_tags(
        self, name: str, scored: Iterable[int], tags: list[tuple[int, str, float, float | None]]
    ) -> None:
        """Mark ``scored`` images as tagged by set ``name`` with their kept labels
        ``(image_id, label, score, confidence)``, in one transaction; an image deleted meanwhile
        is left out."""
        scored = [int(i) for i in scored]
        with Session(self.engine) as s, s.begin():
            alive = set(s.scalars(select(ImageRow.id).where(ImageRow.id.in_(scored))))
            if alive:
                s.execute(
                    Tagged.__table__.insert(),
                    [{"set_name": name, "image_id": i} for i in scored if i in alive],
                )
            rows = [
                {
                    "set_name": name,
                    "image_id": int(i),
                    "label": label,
                    "key": label.casefold(),
                    "score": float(score),
                    "confidence": None if conf is None else float(conf),
                }
                for i, label, score, conf in tags
                if i in alive
            ]
            if rows:
                s.execute(Tag.__table__.insert(), rows)
                _bump(s)

    def tags_of(self, ids: Iterable[int]) -> dict[int, list[StoredTag]]:
        """The kept labels of each image, most likely first (by confidence, else similarity);
        images without any are absent."""
        ids = list(ids)
        out: dict[int, list[StoredTag]] = {}
        with Session(self.engine) as s:
            for i in range(0, len(ids), 500):
                for r in s.execute(
                    select(Tag.image_id, Tag.label, Tag.score, Tag.confidence, Tag.set_name)
                    .where(Tag.image_id.in_(ids[i : i + 500]))
                    .order_by(Tag.image_id, *LIKELY_FIRST)
                ):
                    out.setdefault(r[0], []).append(StoredTag(r[1], r[2], r[3], r[4]))
        return out

    def tag_counts(self) -> list[tuple[str, int]]:
        """Each kept label (case as first written) with how many images have it, most first."""
        with Session(self.engine) as s:
            rows = s.execute(
                select(func.min(Tag.label), func.count(func.distinct(Tag.image_id)))
                .group_by(Tag.key)
                .order_by(func.count(func.distinct(Tag.image_id)).desc(), func.min(Tag.label))
            ).all()
        return [(r[0], r[1]) for r in rows]

    @writes
    def remove_tag_set(self, name: str) -> int:
        """Drop the set ``name`` and its tags; returns how many tags went."""
        with Session(self.engine) as s, s.begin():
            n = s.execute(delete(Tag).where(Tag.set_name == name)).rowcount
            s.execute(delete(Tagged).where(Tagged.set_name == name))
            s.execute(delete(TagSet).where(TagSet.name == name))
            _bump(s)
            return n


TAGS_VERSION = "tags_version"
#: Tags of one image, most likely first: by calibrated confidence when there is one.
LIKELY_FIRST = (func.coalesce(Tag.confidence, -1.0).desc(), Tag.score.desc())


def _bump(s: Session) -> None:
    row = s.get(Meta, TAGS_VERSION)
    s.merge(Meta(key=TAGS_VERSION, value=str(int(row.value) + 1 if row else 1)))


def drop_tags(s: Session, ids: list[int]) -> None:
    """Forget the tags of rows being deleted or re-embedded (a changed file's new version gets a
    new id and is tagged afresh). Deleted rows leave every filter anyway, so only a re-embedded
    row's lost tags need a new tags version."""
    for i in range(0, len(ids), 500):
        chunk = ids[i : i + 500]
        s.execute(delete(Tag).where(Tag.image_id.in_(chunk)))
        s.execute(delete(Tagged).where(Tagged.image_id.in_(chunk)))


def _untagged(name: str) -> list:
    return [
        ImageRow.status == "indexed",
        ImageRow.vector.is_not(None),
        ~select(Tagged.image_id)
        .where(Tagged.set_name == name, Tagged.image_id == ImageRow.id)
        .exists(),
    ]
