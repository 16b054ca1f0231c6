"""Errors as JSON: ``{"error": "<one line>"}`` with a 4xx status for anything a request got wrong,
and ``{"error": "internal error"}`` (500, details only in the server's log) for the rest.

The library raises typed errors (``vtsearch.errors``); this is the one place that maps them to
HTTP statuses.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from vtsearch import errors
from vtsearch.server.models import clean

log = logging.getLogger("vtsearch.server")

#: Scope key set by the upload limit when a request body grows past it while being read.
TOO_LARGE = "vtsearch.body_too_large"

#: Library errors by HTTP status; the most specific class that matches wins (by the MRO).
STATUS: dict[type[errors.VtsearchError], int] = {
    errors.ImageTooLargeError: 413,
    errors.NotAnImageError: 415,
    errors.NoTextsError: 404,
    errors.QueryError: 400,
    errors.ConfigError: 400,
    errors.ImageNotFoundError: 404,
    errors.NoScorerError: 404,
    errors.CollectionNotFoundError: 404,
    errors.IndexLockedError: 409,
    errors.RootError: 409,
    errors.ModelMismatchError: 409,
    errors.SchemaVersionError: 409,
    errors.StorageError: 503,
    errors.ModelNotFoundError: 503,
}


def status_of(e: errors.VtsearchError) -> int:
    for cls in type(e).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 400


def one_line(message: str) -> str:
    return clean(" ".join(str(message).split())) or "error"


def error_response(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": one_line(message)}, status_code=status, headers=headers)


def _field(loc: tuple) -> str:
    # ("query", "k") -> "k"; ("path", "image_id") -> "image_id"; ("body", "image") -> "image"
    parts = [str(p) for p in loc[1:]] if len(loc) > 1 else [str(p) for p in loc]
    return ".".join(parts) or "request"


async def on_library_error(request: Request, e: errors.VtsearchError) -> JSONResponse:
    return error_response(status_of(e), str(e))


async def on_validation_error(request: Request, e: RequestValidationError) -> JSONResponse:
    """A parameter missing is a malformed request (422); one of the wrong type or out of range
    is a bad parameter (400)."""
    problems = list(e.errors())
    missing = any(p.get("type") == "missing" for p in problems)
    text = "; ".join(f"{_field(tuple(p.get('loc', ())))}: {p.get('msg', '')}" for p in problems)
    return error_response(422 if missing else 400, text or "malformed request")


async def on_http_error(request: Request, e: HTTPException) -> JSONResponse:
    if request.scope.get(TOO_LARGE):
        return error_response(413, request.scope[TOO_LARGE])
    detail = e.detail if isinstance(e.detail, str) else str(e.detail)
    if e.status_code == 404 and detail == "Not Found":
        detail = f"no such route: {request.url.path}"
    elif e.status_code == 405:
        detail = f"{request.method} is not allowed on {request.url.path}"
    return error_response(e.status_code, detail, getattr(e, "headers", None))


async def on_unexpected(request: Request, e: Exception) -> JSONResponse:
    if request.scope.get(TOO_LARGE):
        return error_response(413, request.scope[TOO_LARGE])
    log.error("internal error on %s %s", request.method, request.url.path, exc_info=e)
    return error_response(500, "internal error")


def install(app: FastAPI) -> None:
    app.add_exception_handler(errors.VtsearchError, on_library_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(HTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)
