"""The FastAPI application of `vtsearch serve`: one ``Engine``, the API routes, the page.

Example:
    >>> from vtsearch import Engine
    >>> from fastapi.testclient import TestClient
    >>> app = create_app(Engine("/tmp/photos-index"))  # doctest: +SKIP
    >>> TestClient(app).get("/api/search", params={"q": "a cat"}).json()  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles

import vtsearch
from vtsearch.api import Engine
from vtsearch.server import errors
from vtsearch.server.jobs import IndexJob
from vtsearch.server.routes import MAX_UPLOAD_BYTES, router
from vtsearch.server.routes_dupes import router as dupes_router
from vtsearch.server.security import BodyLimit, SameSiteOnly, SecurityHeaders, TokenAuth

STATIC = Path(__file__).resolve().parent / "static"
#: Room for the multipart framing and the form's other fields around a largest upload.
BODY_LIMIT = MAX_UPLOAD_BYTES + 2**20

log = logging.getLogger("vtsearch.server")


def create_app(
    engine: Engine,
    *,
    token: str | None = None,
    folder: Path | None = None,
    cors: str | None = None,
    warm: bool = False,
    hosts: frozenset[str] | None = None,
) -> FastAPI:
    """The server's application around one loaded ``engine``.

    Args:
        engine: the collection every route searches (one per process, shared by all threads).
        token: when set, every request must carry it (see ``TokenAuth``).
        folder: what ``POST /api/index`` re-indexes; None: re-indexing is refused (409).
        cors: an origin allowed to call the API from another site's page; none by default.
        warm: load the model and the re-ranker in the background as the server starts, so the
            first query does not wait for them.
        hosts: the only Host headers answered (None: any); `vtsearch serve` without a token
            allows this machine's own names only (see ``SameSiteOnly``).
    """
    job = IndexJob(engine, folder)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if warm:
            threading.Thread(target=_warm_up, args=(engine,), daemon=True).start()
        yield
        job.stop()  # what the run embedded so far is committed; the next run resumes

    app = FastAPI(
        title="vtsearch",
        version=vtsearch.__version__,
        summary="Search a photo collection by words or by example.",
        lifespan=lifespan,
        # FastAPI's viewers load their scripts from a CDN: /docs is served from the copy of
        # Swagger UI that fastapi-offline installs instead, so it works offline.
        docs_url=None,
        redoc_url=None,
    )
    app.state.engine = engine
    app.state.index_job = job
    errors.install(app)
    app.include_router(router)
    app.include_router(dupes_router)

    @app.get("/", include_in_schema=False)
    def index_page() -> FileResponse:
        return FileResponse(
            STATIC / "index.html", media_type="text/html", headers={"cache-control": "no-cache"}
        )

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        # The page names its icon (none); a browser still asks here, e.g. after an answer
        # that was not the page. No content, rather than a 404 in its console.
        return Response(status_code=204, headers={"cache-control": "max-age=86400"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    _offline_docs(app)

    # The last added runs first: headers on every answer, then CORS (its preflights carry no
    # token), the token, and the body limit closest to the routes.
    app.add_middleware(BodyLimit, limit=BODY_LIMIT)
    if token:
        app.add_middleware(TokenAuth, token=token)
    if cors:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=[cors],
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization"],
            allow_credentials=True,
        )
    app.add_middleware(SameSiteOnly, hosts=hosts, cors=cors)
    app.add_middleware(SecurityHeaders)
    return app


def _offline_docs(app: FastAPI) -> None:
    """The OpenAPI viewer at /docs, its scripts and styles served by this server."""
    import fastapi_offline
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.responses import HTMLResponse

    assets = Path(fastapi_offline.__file__).resolve().parent / "static"
    app.mount("/docs-assets", StaticFiles(directory=assets), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="vtsearch API",
            swagger_js_url="/docs-assets/swagger-ui-bundle.js",
            swagger_css_url="/docs-assets/swagger-ui.css",
            swagger_favicon_url="/favicon.ico",
        )


def _warm_up(engine: Engine) -> None:
    """Load the model, the index and the re-ranker with one query (an empty or missing
    collection simply has nothing to load yet)."""
    try:
        engine.search(text="a photo", k=1)
    except Exception as e:  # never fatal: the first real query will say what is wrong
        log.debug("warm-up query failed: %s", e)
