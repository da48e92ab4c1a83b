"""The HTTP middleware: one pure-ASGI layer (no BaseHTTPMiddleware: no task hops, streaming
bodies work) around the routes, in two halves, split around Starlette's CORS when CORS_ORIGINS
is set:

    HttpLayer outer  request id, log context, access line, security headers; a control
                     character in the path or query string -> 422 problem (two byte searches
                     when there is no `%`); runs the OAuth routes through their cookie session
                     (Starlette's SessionMiddleware) only; no body on a HEAD answer
    CORSMiddleware   only with CORS_ORIGINS
    HttpLayer inner  unexpected exception -> 500 problem; framework plain-text error -> problem
                     (on the dashboard's pages, both are its HTML error pages);
                     gzip (Starlette's responders, skipped outright for small declared bodies)

Everything constant (header lists, the CSP bytes) is built once, and nothing of the access line
is computed when INFO is off.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from random import getrandbits

import structlog
from starlette.middleware.gzip import GZipResponder, IdentityResponder
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from codepulse.errors import PROBLEM_CONTENT_TYPE, FieldError, problem_body
from codepulse.logging import REQUEST_ID_HEADER, REQUEST_ID_VAR, USER_ID_VAR, log_access, path_template
from codepulse.text import CONTROL_CHARACTER, url_control_character

log = structlog.get_logger("codepulse.http")

API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
# Swagger UI and ReDoc load their bundles from jsDelivr and run one inline bootstrap script.
DOCS_CSP = (
    "default-src 'self'; "
    "script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net https://fonts.googleapis.com; "
    "font-src 'self' https://fonts.gstatic.com; "
    "img-src 'self' data: https://fastapi.tiangolo.com https://cdn.redoc.ly; "
    "worker-src 'self' blob:; "
    "connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'self'; form-action 'none'"
)
DOCS_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc"})
# Everything else is a browser page (the web dashboard, its static files): it gets the pages' CSP
# and HTML errors when the app serves pages (`HttpLayer(pages=...)`).
NOT_PAGE_PREFIXES = ("/api/", "/ws/")
NOT_PAGE_PATHS = DOCS_PATHS | {"/api", "/openapi.json"}


def is_page_path(path: str) -> bool:
    """Whether a request path is a browser page rather than the JSON API (or its docs)."""
    return not path.startswith(NOT_PAGE_PREFIXES) and path not in NOT_PAGE_PATHS


@dataclass(frozen=True)
class PageOptions:
    """What the HTTP layer needs of the web dashboard: its CSP, and the HTML of its error pages by
    status: 500 (answered when a page's route raises) and the errors a framework layer answers in
    plain text (413 of the body limit); a status without a page gets the problem answer."""

    csp: str
    error_pages: Mapping[int, bytes]


HSTS = "max-age=63072000; includeSubDomains"

Headers = list[tuple[bytes, bytes]]

_REQUEST_ID = REQUEST_ID_HEADER.encode()
_VALID_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:\-]{1,128}")


def security_headers(csp: str, *, hsts: bool) -> Headers:
    headers = [
        (b"x-content-type-options", b"nosniff"),
        (b"x-frame-options", b"DENY"),
        (b"referrer-policy", b"no-referrer"),
        (b"cross-origin-opener-policy", b"same-origin"),
        (b"content-security-policy", csp.encode()),
    ]
    if hsts:
        headers.append((b"strict-transport-security", HSTS.encode()))
    return headers


def _with_headers(raw: Sequence[tuple[bytes, bytes]], extra: Headers, names: frozenset[bytes]) -> Headers:
    """The response's headers, then each of `extra` the response did not set itself. Header names
    in ASGI messages are lower-case (Starlette's responses make them so)."""
    for key, _ in raw:
        if key in names:
            present = {key for key, _ in raw}
            return [*raw, *(item for item in extra if item[0] not in present)]
    return [*raw, *extra]


def _request_id(scope: Scope) -> str:
    """The client's X-Request-ID when it is a safe token, else a new random one (32 hex digits)."""
    for key, value in scope["headers"]:
        if key == _REQUEST_ID:
            if _VALID_REQUEST_ID.fullmatch(value):
                return str(value.decode("ascii"))
            break
    # Unique, not secret: the seeded Mersenne Twister (reseeded in forked workers) is a fraction of
    # the cost of the os.urandom system call behind uuid4.
    return f"{getrandbits(128):032x}"


_PLAIN_CODES = {413: "payload_too_large", 400: "bad_request", 404: "not_found", 405: "method_not_allowed"}
_CONTENT_TYPE = b"content-type"
_CONTENT_LENGTH = b"content-length"
_ACCEPT_ENCODING = b"accept-encoding"
_NO_LENGTH = 1 << 62


def _header(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for key, value in headers:
        if key == name:
            return value
    return None


def _declared_length(headers: Sequence[tuple[bytes, bytes]]) -> int:
    value = _header(headers, _CONTENT_LENGTH)
    return int(value) if value is not None and value.isdigit() else _NO_LENGTH


class HttpLayer:
    """Our HTTP layer, pure ASGI, in two halves that run fused in one layer unless something must
    sit between them (CORS, when CORS_ORIGINS is set: then `outer` and `inner` are two layers
    around it, so a 500 or a rewritten error still gets its CORS headers).

    Outer half (outermost of the stack):
    - assigns or accepts X-Request-ID (answered on every response, bound to every log line of
      the request) and writes one access line;
    - adds the security headers a response lacks;
    - drops the body of a HEAD answer (routes answering HEAD run as for GET; the headers,
      Content-Length included, are GET's);
    - `scoped` = (prefix, middleware): the rest of the stack runs wrapped in that middleware for
      the paths under the prefix only (the OAuth routes' cookie session, which then costs
      nothing on every other request).

    Inner half (innermost of ours), what leaves the routes:
    - an unexpected exception becomes a 500 problem, logged with its traceback. Sitting inside
      the outer half (and CORS), the 500 still gets the request id, security and CORS headers
      and its access line, which Starlette's outermost ServerErrorMiddleware cannot give;
    - an error a framework layer writes as text/plain (Starlette's body limiter answers a
      declared oversize Content-Length with a plain-text 413) is rewritten as a problem, or as
      the dashboard's page of that status on a page path: clients see one error shape per side,
      whatever layer produced it;
    - gzip: Starlette's own GZip/Identity responders for the responses they may change (so
      `Vary: Accept-Encoding` and compression are exactly Starlette's); a response declaring a
      Content-Length under `gzip_minimum_size`, which they would pass on untouched, skips them.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        outer: bool = True,
        inner: bool = True,
        hsts: bool = False,
        scoped: tuple[str, Callable[[ASGIApp], ASGIApp]] | None = None,
        gzip_minimum_size: int = 500,
        pages: PageOptions | None = None,
    ) -> None:
        self.app = app
        self.outer = outer
        self.inner = inner
        self.api_headers = security_headers(API_CSP, hsts=hsts)
        self.docs_headers = security_headers(DOCS_CSP, hsts=hsts)
        self.pages = pages
        self.page_headers = security_headers(pages.csp, hsts=hsts) if pages is not None else self.api_headers
        self.names = frozenset(name for name, _ in self.api_headers)
        prefix, wrap = scoped if scoped is not None and outer else ("/", None)
        self.prefix = prefix.rstrip("/")
        self.prefix_slash = self.prefix + "/"
        self.scoped_app = wrap(app) if wrap is not None else app
        self.minimum_size = gzip_minimum_size

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
        elif not self.outer:
            await self._inner(self.app, scope, receive, send)
        else:
            await self._outer(scope, receive, send)

    async def _outer(self, scope: Scope, receive: Receive, send: Send) -> None:
        request_id = _request_id(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        path: str = scope["path"]
        own_headers = [*self._headers_for(path), (_REQUEST_ID, request_id.encode())]
        names = self.names
        status = 500
        started = time.perf_counter()

        head = scope["method"] == "HEAD"

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": _with_headers(message.get("headers", ()), own_headers, names)}
            elif head and message["type"] == "http.response.body":
                # HEAD is answered as GET (its Content-Length included) without the body.
                message = {**message, "body": b""}
            await send(message)

        app = self.scoped_app if path.startswith(self.prefix_slash) or path == self.prefix else self.app
        # The request's log context (the user is set by authentication), restored at the end for
        # callers that run several requests in one task (an in-process test client).
        request_token = REQUEST_ID_VAR.set(request_id)
        user_token = USER_ID_VAR.set(...)  # structlog's "not bound"
        try:
            # Every route's path and query parameters at once, before any is parsed.
            refused = url_control_character(path, scope.get("raw_path"), scope["query_string"])
            if refused is not None:
                await _send_control_character_problem(scope, send_with_headers, refused)
            elif self.inner:
                await self._inner(app, scope, receive, send_with_headers)
            else:
                await app(scope, receive, send_with_headers)
        finally:
            log_access(scope, status, started)
            USER_ID_VAR.reset(user_token)
            REQUEST_ID_VAR.reset(request_token)

    def _headers_for(self, path: str) -> Headers:
        if path in DOCS_PATHS:
            return self.docs_headers
        if self.pages is not None and is_page_path(path):
            return self.page_headers
        return self.api_headers

    async def _inner(self, app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
        minimum_size = self.minimum_size
        started = False
        held: Message | None = None  # a plain-text error's start, until its body is complete
        encoder: Send | None = None  # the gzip/identity responder's send, when it may change the body

        async def send_from_route(message: Message) -> None:
            nonlocal started, held, encoder
            if encoder is not None:
                await encoder(message)
                return
            if message["type"] == "http.response.start":
                started = True
                headers = message.get("headers", ())
                if message["status"] >= 400 and (_header(headers, _CONTENT_TYPE) or b"").startswith(b"text/plain"):
                    held = message
                    return
                if _declared_length(headers) >= minimum_size:
                    encoder = _encoder(app, scope, send, minimum_size)
                    await encoder(message)
                    return
            elif held is not None and message["type"] == "http.response.body":
                if message.get("more_body"):
                    return
                status = held["status"]
                held = None
                page = self._error_page(scope, status)
                if page is not None:
                    await _send_html(send, status, page)
                    return
                await _send_problem(scope, send, status, _PLAIN_CODES.get(status, "http_error"), None)
                return
            await send(message)

        try:
            await app(scope, receive, send_from_route)
        except Exception:
            # The route's template, not the raw path, which can carry tokens (invitation links).
            log.exception("http.unhandled_error", method=scope.get("method"), path=path_template(scope, 500))
            if started:
                raise
            page = self._error_page(scope, 500)
            if page is not None:
                await _send_html(send, 500, page)
                return
            detail = "An unexpected error occurred; quote the request id to support."
            await _send_problem(scope, send, 500, "internal_error", detail)

    def _error_page(self, scope: Scope, status: int) -> bytes | None:
        """The dashboard's page for an error on a page path; None on the API (a problem)."""
        if self.pages is None or not is_page_path(scope["path"]):
            return None
        return self.pages.error_pages.get(status)


def _encoder(app: ASGIApp, scope: Scope, send: Send, minimum_size: int) -> Send:
    """Starlette's gzip responder (identity when the client does not accept gzip) for `app`'s
    response, sending to `send`; driven message by message, as its middleware would."""
    accept = _header(scope["headers"], _ACCEPT_ENCODING) or b""
    responder = (GZipResponder if b"gzip" in accept else IdentityResponder)(app, minimum_size)
    responder.send = send
    return responder.send_with_compression


_PROBLEM_CONTENT_TYPE = PROBLEM_CONTENT_TYPE.encode()


async def _send_html(send: Send, status: int, body: bytes) -> None:
    headers = [
        (_CONTENT_TYPE, b"text/html; charset=utf-8"),
        (_CONTENT_LENGTH, str(len(body)).encode()),
        (b"cache-control", b"no-store"),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _send_control_character_problem(scope: Scope, send: Send, field: str) -> None:
    message = "Control characters (such as NUL) are not allowed in a path or query parameter."
    errors = [FieldError(field=field, message=message, code=CONTROL_CHARACTER)]
    await _send_problem(scope, send, 422, "validation_failed", "The request has invalid fields.", errors)


async def _send_problem(
    scope: Scope, send: Send, status: int, code: str, detail: str | None, errors: list[FieldError] | None = None
) -> None:
    request_id = scope.get("state", {}).get("request_id")
    body = json.dumps(
        problem_body(status=status, code=code, detail=detail, request_id=request_id, errors=errors)
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(_CONTENT_TYPE, _PROBLEM_CONTENT_TYPE), (_CONTENT_LENGTH, str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
