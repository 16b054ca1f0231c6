"""The HTTP API's routes: thin, each one call into the ``Engine`` the app holds.

Search routes are plain ``def``: FastAPI runs them in its thread pool, and one ``Engine`` serves
searches from many threads at once, also while the server re-indexes.
"""

from __future__ import annotations

import hashlib
import mimetypes
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, Response

from vtsearch.api import Engine
from vtsearch.errors import CollectionNotFoundError, ImageTooLargeError, QueryError
from vtsearch.search.results import relative_path
from vtsearch.server import models
from vtsearch.server.jobs import IndexJob
from vtsearch.server.models import clean, finite
from vtsearch.storage.filters import FORMATS, ORIENTATIONS, Filters

#: Most results one request may ask for, and the deepest page.
MAX_K = 200
MAX_OFFSET = 10_000
#: Largest query image an upload may carry.
MAX_UPLOAD_BYTES = 20 * 2**20
MAX_QUERY_CHARS = 1000
#: Thumbnails never change (an id is never reused): browsers keep them.
#: Browsers keep thumbnails but ask again (a 304 when unchanged): an id names other content
#: after the catalog was restored from a backup.
THUMB_CACHE = "private, no-cache"
#: Ids are SQLite integers.
MAX_ID = 2**62

_FORMATS = {
    "JPEG": "image/jpeg",
    "MPO": "image/jpeg",
    "PNG": "image/png",
    "WEBP": "image/webp",
    "GIF": "image/gif",
    "BMP": "image/bmp",
    "TIFF": "image/tiff",
    "HEIF": "image/heif",
    "AVIF": "image/avif",
}

router = APIRouter(prefix="/api")
_errors = {
    400: {"model": models.Error, "description": "a bad parameter"},
    404: {"model": models.Error, "description": "no such image (or route)"},
    422: {"model": models.Error, "description": "a malformed request"},
}


def get_engine(request: Request) -> Engine:
    """The one ``Engine`` of this server process (``create_app``)."""
    return request.app.state.engine


def get_job(request: Request) -> IndexJob:
    return request.app.state.index_job


EngineDep = Annotated[Engine, Depends(get_engine)]
JobDep = Annotated[IndexJob, Depends(get_job)]
ImageId = Annotated[int, PathParam(ge=1, le=MAX_ID, description="catalog id of an image")]
K = Annotated[int, Query(ge=1, le=MAX_K, description="how many results")]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="results to skip")]
Text = Annotated[str, Query(min_length=1, max_length=MAX_QUERY_CHARS)]
Date = Annotated[
    str | None,
    Query(
        max_length=40,
        description="YYYY-MM-DD (or YYYY, YYYY-MM, an ISO date and time): the EXIF time taken, "
        "else the file's modification time; after is inclusive, before exclusive",
    ),
]


def search_filters(
    folders: Annotated[
        list[str] | None,
        Query(
            alias="in",
            description="only images in this folder (repeatable: any of them); a relative "
            "folder is looked for inside every indexed folder",
        ),
    ] = None,
    glob: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=MAX_QUERY_CHARS,
            description="a shell pattern on the file name (without /) or the whole path",
        ),
    ] = None,
    after: Date = None,
    before: Date = None,
    orientation: Annotated[
        str | None, Query(description=f"one of {', '.join(ORIENTATIONS)}")
    ] = None,
    min_width: Annotated[int | None, Query(ge=1, le=MAX_ID, description="pixels")] = None,
    min_height: Annotated[int | None, Query(ge=1, le=MAX_ID, description="pixels")] = None,
    file_type: Annotated[
        list[str] | None,
        Query(description=f"file formats, any of ({', '.join(sorted(FORMATS))})"),
    ] = None,
    tag: Annotated[
        list[str] | None,
        Query(description="zero-shot tags (`vtsearch tag`), repeatable: all of them"),
    ] = None,
    min_score: Annotated[
        float | None,
        Query(allow_inf_nan=False, description="the lowest final score a result may have"),
    ] = None,
) -> Filters:
    """The search filters of a request's query string (a bad value: 400 with the reason)."""
    if folders and any(len(f) > MAX_QUERY_CHARS for f in folders):
        raise QueryError(f"a folder (in) may be {MAX_QUERY_CHARS} characters at most")
    if tag and any(len(t) > MAX_QUERY_CHARS for t in tag):
        raise QueryError(f"a tag may be {MAX_QUERY_CHARS} characters at most")
    return Filters(
        folders=tuple(folders or ()),
        glob=glob,
        after=after or None,
        before=before or None,
        orientation=orientation or None,
        min_width=min_width,
        min_height=min_height,
        formats=tuple(file_type or ()),
        tags=tuple(tag or ()),
        min_score=min_score,
    )


FiltersDep = Annotated[Filters, Depends(search_filters)]


def result(r, score: bool = True) -> dict:
    """A library result (or image record) as the API's ``Result`` fields."""
    fields = dict.fromkeys(("score", "bi_score", "rerank_score", "prior"))
    if score:
        fields.update({name: finite(getattr(r, name)) for name in fields})
    return {
        "id": r.id,
        "path": relative_path(r.path, r.root),
        "root": clean(r.root) if r.root is not None else None,
        **fields,
        "width": r.width,
        "height": r.height,
        "taken_at": r.taken_at.isoformat() if r.taken_at else None,
        "thumb": f"/api/images/{r.id}/thumb",
        "file": f"/api/images/{r.id}/file",
    }


def page(query: str | None, k: int, offset: int, hits: list) -> models.SearchResults:
    """One page of ``k`` results; ``hits`` holds one more when there are more."""
    return models.SearchResults(
        query=clean(query) if query is not None else None,
        k=k,
        offset=offset,
        results=[models.Result(**result(h)) for h in hits[:k]],
        has_more=len(hits) > k,
    )


@router.get("/status", response_model=models.Status)
def status(engine: EngineDep, job: JobDep) -> models.Status:
    """The collection: model, counts, folders; whether explain and re-indexing work here."""
    try:
        st = engine.status()
    except CollectionNotFoundError:  # nothing indexed yet: an empty collection
        st = None
    readonly = bool(st and st.readonly)
    return models.Status(
        path=clean(str(engine.path)),
        model_id=(st and st.model_id) or engine.model_id,
        index_kind=st.index_kind if st else None,
        indexed=st.indexed if st else 0,
        failed=st.counts.get("failed", 0) if st else 0,
        texts=st.counts.get("texts", 0) if st else 0,
        readonly=readonly,
        roots=[
            models.Root(path=clean(p), exists=e, images=n) for p, e, n in (st.roots if st else [])
        ],
        fusion=engine.can_explain(),
        can_index=job.folder is not None and not readonly,
    )


@router.get("/search", response_model=models.SearchResults, responses=_errors)
def search(
    engine: EngineDep,
    q: Text,
    filters: FiltersDep,
    k: K = 20,
    offset: Offset = 0,
    rerank: bool = True,
) -> models.SearchResults:
    """Images for a text query (the weighted ``+``/``-`` syntax of `vtsearch query`), among
    those the filters let through (``k`` whenever ``k`` images match)."""
    hits = engine.search(text=q, k=k + 1, offset=offset, rerank=rerank, filters=filters)
    return page(q, k, offset, hits)


@router.post(
    "/search",
    response_model=models.SearchResults,
    responses={**_errors, 413: {"model": models.Error}, 415: {"model": models.Error}},
)
def search_image(
    engine: EngineDep,
    filters: FiltersDep,
    image: Annotated[UploadFile | None, File(description="a query image (20 MB at most)")] = None,
    q: Annotated[str | None, Form(min_length=1, max_length=MAX_QUERY_CHARS)] = None,
    k: Annotated[int, Form(ge=1, le=MAX_K)] = 20,
    offset: Annotated[int, Form(ge=0, le=MAX_OFFSET)] = 0,
    rerank: Annotated[bool, Form()] = True,
) -> models.SearchResults:
    """Images like an uploaded picture, optionally with a text query as well; the filters of
    ``GET /api/search`` go in the query string."""
    data = None
    if image is not None:
        data = image.file.read(MAX_UPLOAD_BYTES + 1)
        if len(data) > MAX_UPLOAD_BYTES:
            raise ImageTooLargeError(
                f"the image is larger than the limit of {MAX_UPLOAD_BYTES // 2**20} MB"
            )
        if not data:
            raise QueryError("the uploaded image is empty")
    if data is None and q is None:
        raise QueryError("give an image (a file field named 'image'), a text (q), or both")
    hits = engine.search(text=q, image=data, k=k + 1, offset=offset, rerank=rerank, filters=filters)
    return page(q, k, offset, hits)


@router.get("/similar/{image_id}", response_model=models.SearchResults, responses=_errors)
def similar(
    engine: EngineDep, image_id: ImageId, filters: FiltersDep, k: K = 20, offset: Offset = 0
) -> models.SearchResults:
    """More like this: images near an indexed one, the image itself left out, among those the
    filters of ``GET /api/search`` let through."""
    hits = engine.similar(image_id, k + 1, offset=offset, filters=filters)
    return page(None, k, offset, hits)


@router.get("/images/{image_id}", response_model=models.Image, responses=_errors)
def image(engine: EngineDep, image_id: ImageId) -> models.Image:
    """An indexed image's metadata."""
    info = engine.image(image_id)
    return models.Image(
        **result(info, score=False),
        format=info.format,
        bytes=info.bytes,
        name=clean(info.name),
        tags=[clean(t) for t in info.tags],
    )


@router.get("/tags", responses=_errors)
def tags(engine: EngineDep) -> models.Tags:
    """Every zero-shot tag (`vtsearch tag`) with how many images have it, most first."""
    counts = engine.tag_counts()
    return models.Tags(tags=[models.TagCount(tag=clean(t), images=n) for t, n in counts])


@router.get(
    "/images/{image_id}/thumb",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}}, **_errors},
)
def thumbnail(engine: EngineDep, image_id: ImageId, request: Request) -> Response:
    """A JPEG thumbnail, longest side 256 (made once, then served from the collection's cache)."""
    data = engine.thumbnail(image_id)
    etag = '"' + hashlib.blake2b(data, digest_size=8).hexdigest() + '"'
    headers = {"cache-control": THUMB_CACHE, "etag": etag}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(data, media_type="image/jpeg", headers=headers)


@router.get(
    "/images/{image_id}/file",
    response_class=FileResponse,
    responses={200: {"content": {"image/*": {}}}, **_errors},
)
def original(engine: EngineDep, image_id: ImageId) -> FileResponse:
    """The original file, found by id only; a file that is not a regular file inside its indexed
    folder (a link pointing out of it, say) is refused with 404."""
    info = engine.image(image_id)
    path = engine.image_file(image_id)
    media = _FORMATS.get((info.format or "").upper()) or mimetypes.guess_type(path.name)[0]
    return FileResponse(
        path,
        media_type=media or "application/octet-stream",
        headers={"cache-control": "private, no-cache"},
        content_disposition_type="inline",
    )


@router.get("/texts/search", response_model=models.TextResults, responses=_errors)
def texts(
    engine: EngineDep,
    id: Annotated[int | None, Query(ge=1, le=MAX_ID, description="an image's id")] = None,
    q: Annotated[str | None, Query(min_length=1, max_length=MAX_QUERY_CHARS)] = None,
    k: Annotated[int, Query(ge=1, le=MAX_K)] = 10,
) -> models.TextResults:
    """The collection's texts (captions, labels) for an indexed image (``id``), a text, or both."""
    if id is None and q is None:
        raise QueryError("give the id of an image (id), a text (q), or both")
    hits = engine.search_texts(text=q, image_id=id, k=k)
    return models.TextResults(
        results=[
            models.TextHit(
                id=t.id,
                text=t.text,
                score=finite(t.score),
                source=t.source,
                bi_score=finite(t.bi_score),
                rerank_score=finite(t.rerank_score),
                prior=finite(t.prior),
            )
            for t in hits
        ]
    )


@router.get("/explain", response_model=models.Explanation, responses=_errors)
def explain(
    engine: EngineDep,
    q: Text,
    id: Annotated[int, Query(ge=1, le=MAX_ID, description="an image's id")],
) -> models.Explanation:
    """Where each word of the query looks in the image, and how much it counts (the fusion
    scorer's attention over the 7x7 regions)."""
    ex = engine.explain(q, id)
    return models.Explanation(
        id=ex.id,
        query=clean(ex.query),
        term=clean(ex.term),
        grid=ex.grid,
        words=[
            models.Word(word=w.word, weight=w.weight, match=w.match, attention=w.attention)
            for w in ex.words
        ],
        attention=ex.attention,
        area=ex.area,
        score=ex.score,
        gain=ex.gain,
    )


@router.post("/index", status_code=202, response_model=models.IndexState, responses=_errors)
def start_index(job: JobDep) -> models.IndexState:
    """Re-index the server's --folder in the background (409 without one, or while a run goes)."""
    return job.start()


@router.get("/index", response_model=models.IndexState)
def index_state(job: JobDep) -> models.IndexState:
    """The background index run: idle, running (with its progress), done (its report), failed."""
    return job.state()
