"""``GET /api/dupes``: groups of exact and near copies among the indexed images (see
``Engine.duplicates``), the file to keep first in each, with thumbnails to choose by."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel

from vtsearch.api import Engine
from vtsearch.search.results import relative_path
from vtsearch.server import models
from vtsearch.server.models import clean

router = APIRouter(prefix="/api")


def get_engine(request: Request) -> Engine:
    """The one ``Engine`` of this server process (``create_app``)."""
    return request.app.state.engine


EngineDep = Annotated[Engine, Depends(get_engine)]


class DupeFile(BaseModel):
    id: int
    #: Relative to ``root``, "/"-separated.
    path: str
    root: str | None
    #: Size of the file when it was indexed.
    bytes: int
    width: int | None
    height: int | None
    format: str | None
    #: ISO 8601 (EXIF time, no zone), or null.
    taken_at: str | None
    #: The one to keep: largest resolution, then largest file, then oldest.
    keep: bool
    #: Byte-identical to the one to keep.
    exact: bool
    #: Similarity to the one to keep, by the measure used (null when it cannot be computed).
    similarity: float | None
    thumb: str
    file: str


class DupeGroup(BaseModel):
    #: "exact" when every file is byte-identical to the kept one, else "near".
    kind: str
    files: list[DupeFile]


class Dupes(BaseModel):
    #: The similarity from which two images were taken for copies.
    threshold: float
    #: "regions" (the default model's region tokens), "vectors", or "exact" (exact_only).
    measure: str
    groups: list[DupeGroup]


@router.get(
    "/dupes",
    response_model=Dupes,
    responses={
        400: {"model": models.Error, "description": "a bad parameter"},
        404: {"model": models.Error, "description": "no collection"},
    },
)
def dupes(
    engine: EngineDep,
    threshold: Annotated[
        float | None,
        Query(gt=0, le=1, description="similarity from which two images are copies"),
    ] = None,
    exact_only: Annotated[bool, Query(description="byte-identical files only")] = False,
) -> Dupes:
    """Groups of duplicate photos (exact and near copies), the file to keep first in each."""
    found = engine.duplicates(threshold, exact_only=exact_only)
    return Dupes(
        threshold=found.threshold,
        measure=found.measure,
        groups=[
            DupeGroup(
                kind=g.kind,
                files=[
                    DupeFile(
                        id=f.id,
                        path=relative_path(f.path, f.root),
                        root=clean(f.root) if f.root is not None else None,
                        bytes=f.bytes,
                        width=f.width,
                        height=f.height,
                        format=f.format,
                        taken_at=f.taken_at.isoformat() if f.taken_at else None,
                        keep=f.keep,
                        exact=f.exact,
                        similarity=models.finite(f.similarity),
                        thumb=f"/api/images/{f.id}/thumb",
                        file=f"/api/images/{f.id}/file",
                    )
                    for f in g.files
                ],
            )
            for g in found
        ],
    )
