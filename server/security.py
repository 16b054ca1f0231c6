"""What stands between the network and the routes: the access token, the request body limit, and
the headers that keep a browser from running or framing anything but the page itself.

Plain ASGI middleware (no per-request task or body copy), so a search pays next to nothing.
"""

from __future__ import annotations

import hashlib
import secrets
from http.cookies import SimpleCookie
from urllib.parse import parse_qs

from starlette.responses import RedirectResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vtsearch.server.errors import TOO_LARGE, error_response

COOKIE = "vtsearch_token"
#: The page's Content-Security-Policy: its own scripts, styles and images (thumbnails, a dropped
#: picture shown as a blob: URL), nothing inline, never framed.
CSP = (
    "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'"
)
#: FastAPI's documentation page runs an inline script (Swagger UI's setup): no page CSP there.
DOCS = ("/docs", "/redoc", "/openapi.json")


#: Paths that answer without the token: the icon browsers ask for on their own (no content).
PUBLIC = frozenset({"/favicon.ico"})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


def _same(given: str | None, token: str) -> bool:
    return given is not None and secrets.compare_digest(given.encode(), token.encode())


class TokenAuth:
    """With a token, every request must carry it: ``Authorization: Bearer TOKEN``, or the cookie
    that ``GET /?token=TOKEN`` sets (HttpOnly, SameSite=Strict) before it redirects to ``/`` without
    the token in the address (so the page's ``<img>`` thumbnails are authorised too)."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app, self.token = app, token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"] == "/" and scope.get("method") in ("GET", "HEAD"):
            given = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token")
            if given is not None:
                if not _same(given[0], self.token):
                    await _unauthorised("wrong token")(scope, receive, send)
                    return
                response = RedirectResponse("/", status_code=303)
                response.set_cookie(
                    COOKIE, cookie_value(self.token), httponly=True, samesite="strict", path="/"
                )
                await response(scope, receive, send)
                return
        if scope["path"] in PUBLIC or self._authorised(scope):
            await self.app(scope, receive, send)
            return
        await _unauthorised(
            "this server needs its token: send 'Authorization: Bearer TOKEN', or open "
            "/?token=TOKEN once in the browser"
        )(scope, receive, send)

    def _authorised(self, scope: Scope) -> bool:
        auth = _header(scope, b"authorization")
        if auth is not None and auth[:7].lower() == "bearer ":
            return _same(auth[7:].strip(), self.token)
        raw = _header(scope, b"cookie")
        if raw:
            jar = SimpleCookie()
            try:
                jar.load(raw)
            except Exception:
                return False
            if COOKIE in jar:
                return _same(jar[COOKIE].value, cookie_value(self.token))
        return False


def cookie_value(token: str) -> str:
    """What the cookie holds: a digest of the token (any characters a token may have, and the
    token itself never stored by the browser)."""
    return hashlib.sha256(b"vtsearch-cookie\0" + token.encode()).hexdigest()


def _unauthorised(message: str):
    return error_response(401, message, {"www-authenticate": "Bearer"})


#: Methods that change something: a page of another site must not be able to send them.
UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _host_name(host: str) -> str:
    """``"127.0.0.1:8765"`` -> ``"127.0.0.1"``; ``"[::1]:8765"`` -> ``"::1"``."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class SameSiteOnly:
    """Keeps other sites' pages out of a server that has no token to stop them.

    ``hosts``: the only Host headers answered (None: any). A page elsewhere can make a name of
    its own resolve to 127.0.0.1 (DNS rebinding) and then read everything a token-less local
    server answers; its requests carry that name as their Host, so they are refused. Requests
    that change something (``POST``) are refused when the browser says they come from another
    site (``Sec-Fetch-Site``, or an ``Origin`` that is not this server), unless that origin is
    the one ``--cors`` allows.
    """

    def __init__(self, app: ASGIApp, hosts: frozenset[str] | None, cors: str | None) -> None:
        self.app, self.hosts, self.cors = app, hosts, cors

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host = _header(scope, b"host") or ""
        if self.hosts is not None and _host_name(host) not in self.hosts:
            message = (
                f"this server answers requests for {', '.join(sorted(self.hosts))} only, not "
                f"{host or 'a request without a Host'}"
            )
            await error_response(400, message)(scope, receive, send)
            return
        if scope.get("method") in UNSAFE:
            origin = _header(scope, b"origin")
            fetch_site = _header(scope, b"sec-fetch-site")
            foreign = fetch_site in ("cross-site", "same-site") or (
                origin is not None and origin != "null" and origin.split("://", 1)[-1] != host
            )
            if foreign and not (self.cors is not None and origin == self.cors):
                message = "a page of another site may not change anything on this server"
                await error_response(403, message)(scope, receive, send)
                return
        await self.app(scope, receive, send)


class BodyLimit:
    """Refuses a request body over ``limit`` bytes with 413: at once when its Content-Length says
    so, and as soon as it grows past it while read (a body sent in chunks)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        message = f"the request is larger than the limit of {self.limit // 2**20} MB"
        length = _header(scope, b"content-length")
        if length is not None and length.strip().isdigit() and int(length) > self.limit:
            await error_response(413, message)(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.limit:
                    scope[TOO_LARGE] = message
                    raise BodyTooLarge(message)
            return msg

        await self.app(scope, counted, send)


class BodyTooLarge(Exception):
    """Raised into the body parser; the error handlers answer 413 (see ``TOO_LARGE``)."""


class SecurityHeaders:
    """``X-Content-Type-Options: nosniff`` and ``Referrer-Policy: no-referrer`` on every response,
    the page's Content-Security-Policy on all but FastAPI's documentation pages."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        docs = scope["path"].startswith(DOCS)

        async def with_headers(msg: Message) -> None:
            if msg["type"] == "http.response.start":
                headers = list(msg.get("headers", []))
                headers.append((b"x-content-type-options", b"nosniff"))
                headers.append((b"referrer-policy", b"no-referrer"))
                if not docs:
                    headers.append((b"content-security-policy", CSP.encode()))
                msg = {**msg, "headers": headers}
            await send(msg)

        await self.app(scope, receive, with_headers)
