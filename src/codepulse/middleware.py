"""The HTTP middleware, as two pure-ASGI layers (no BaseHTTPMiddleware: no task hops, streaming
bodies work) around the routes, plus Starlette's CORS between them when CORS_ORIGINS is set:

    RequestLayer   request id, log context, access line, security headers; a control character
                   in the path or query string -> 422 problem (two byte searches when there is
                   no `%`); runs the OAuth routes through their cookie session only
    CORSMiddleware only with CORS_ORIGINS
    ResponseLayer  unexpected exception -> 500 problem; framework plain-text error -> problem;
                   gzip (Starlette's responders, skipped outright for small declared bodies)

Everything constant (header lists, the CSP bytes) is built once, and nothing of the access line
is computed when INFO is off.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from random import getrandbits
from typing import Any

import structlog
from starlette.middleware.gzip import GZipResponder, IdentityResponder
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from codepulse.errors import PROBLEM_CONTENT_TYPE, FieldError, problem_body
from codepulse.logging import REQUEST_ID_HEADER, log_access, path_template
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
    """The response's headers, then each of `extra` the response did not set itself."""
    for key, _ in raw:
        if key.lower() in names:
            present = {key.lower() for key, _ in raw}
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


def _structlog_var(key: str) -> ContextVar[Any]:
    """The context variable behind structlog's `bind_contextvars(key=...)`, to set it directly."""
    tokens = structlog.contextvars.bind_contextvars(**{key: None})
    structlog.contextvars.reset_contextvars(**tokens)
    return tokens[key].var


_REQUEST_ID_VAR = _structlog_var("request_id")


class RequestLayer:
    """Outermost: assigns or accepts X-Request-ID (answered on every response, bound to every log
    line of the request), writes one access line, adds the security headers a response lacks.

    `scoped` = (prefix, middleware): the rest of the stack runs wrapped in that middleware for
    the paths under the prefix only, e.g. the OAuth routes' cookie session, which then costs
    nothing on every other request.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        hsts: bool,
        scoped: tuple[str, Callable[[ASGIApp], ASGIApp]] | None = None,
    ) -> None:
        self.app = app
        self.api_headers = security_headers(API_CSP, hsts=hsts)
        self.docs_headers = security_headers(DOCS_CSP, hsts=hsts)
        self.names = frozenset(name for name, _ in self.api_headers)
        prefix, wrap = scoped if scoped is not None else ("/", None)
        self.prefix = prefix.rstrip("/")
        self.prefix_slash = self.prefix + "/"
        self.scoped_app = wrap(app) if wrap is not None else app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        path: str = scope["path"]
        extra = [
            *(self.docs_headers if path in DOCS_PATHS else self.api_headers),
            (_REQUEST_ID, request_id.encode()),
        ]
        names = self.names
        status = 500
        started = time.perf_counter()

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": _with_headers(message.get("headers", ()), extra, names)}
            await send(message)

        scoped = path.startswith(self.prefix_slash) or path == self.prefix
        structlog.contextvars.clear_contextvars()
        _REQUEST_ID_VAR.set(request_id)
        try:
            # Every route's path and query parameters at once, before any is parsed.
            refused = url_control_character(path, scope.get("raw_path"), scope["query_string"])
            if refused is not None:
                await _send_control_character_problem(scope, send_with_headers, refused)
                return
            await (self.scoped_app if scoped else self.app)(scope, receive, send_with_headers)
        finally:
            log_access(scope, status, started)
            structlog.contextvars.clear_contextvars()


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


def _declared_length(message: Message) -> int:
    value = _header(message.get("headers", ()), _CONTENT_LENGTH)
    return int(value) if value is not None and value.isdigit() else _NO_LENGTH


class ResponseLayer:
    """Innermost of ours: what leaves the routes is a problem when it is an error, compressed when
    it is large and the client accepts gzip.

    - An unexpected exception becomes a 500 problem, logged with its traceback. Sitting inside
      the other layers, the 500 still gets the request id, security and CORS headers and its
      access line, which Starlette's outermost ServerErrorMiddleware cannot give.
    - An error a framework layer writes as text/plain (Starlette's body limiter answers a
      declared oversize Content-Length with a plain-text 413) is rewritten as a problem: clients
      see one error shape, whatever layer produced it.
    - Gzip: Starlette's own GZip/Identity responders for the responses they may change (so
      `Vary: Accept-Encoding` and compression are exactly Starlette's); a response declaring a
      Content-Length under `gzip_minimum_size`, which they would pass on untouched, skips them.
    """

    def __init__(self, app: ASGIApp, *, gzip_minimum_size: int) -> None:
        self.app = app
        self.minimum_size = gzip_minimum_size

    def _encoder(self, scope: Scope, send: Send) -> Send:
        minimum_size = self.minimum_size
        responder: IdentityResponder | None = None
        untouched = False

        async def encoding_send(message: Message) -> None:
            nonlocal responder, untouched
            if untouched:
                await send(message)
                return
            if responder is None:
                if message["type"] == "http.response.start" and _declared_length(message) < minimum_size:
                    untouched = True
                    await send(message)
                    return
                accept = _header(scope["headers"], _ACCEPT_ENCODING) or b""
                responder = (GZipResponder if b"gzip" in accept else IdentityResponder)(self.app, minimum_size)
                responder.send = send
            await responder.send_with_compression(message)

        return encoding_send

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        encoding_send = self._encoder(scope, send)
        started = False
        held: Message | None = None

        async def guarded_send(message: Message) -> None:
            nonlocal started, held
            if message["type"] == "http.response.start":
                started = True
                if message["status"] >= 400:
                    content_type = _header(message.get("headers", ()), _CONTENT_TYPE) or b""
                    if content_type.startswith(b"text/plain"):
                        held = message
                        return
            elif held is not None and message["type"] == "http.response.body":
                if message.get("more_body"):
                    return
                status = held["status"]
                held = None
                await _send_problem(scope, encoding_send, status, _PLAIN_CODES.get(status, "http_error"), None)
                return
            await encoding_send(message)

        try:
            await self.app(scope, receive, guarded_send)
        except Exception:
            # The route's template, not the raw path, which can carry tokens (invitation links).
            log.exception("http.unhandled_error", method=scope.get("method"), path=path_template(scope, 500))
            if started:
                raise
            detail = "An unexpected error occurred; quote the request id to support."
            await _send_problem(scope, encoding_send, 500, "internal_error", detail)


_PROBLEM_CONTENT_TYPE = PROBLEM_CONTENT_TYPE.encode()


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
