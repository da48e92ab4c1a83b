"""HTTP hygiene middleware: security headers and the last-resort 500 problem.

Pure ASGI classes (not BaseHTTPMiddleware) so they add no task hops and work on streaming bodies.
"""

from __future__ import annotations

import json

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from codepulse.errors import PROBLEM_CONTENT_TYPE, problem_body

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


class SecurityHeadersMiddleware:
    def __init__(self, app: ASGIApp, *, hsts: bool) -> None:
        self.app = app
        self.hsts = hsts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        csp = DOCS_CSP if scope["path"] in DOCS_PATHS else API_CSP
        extra: list[tuple[bytes, bytes]] = [
            (b"x-content-type-options", b"nosniff"),
            (b"x-frame-options", b"DENY"),
            (b"referrer-policy", b"no-referrer"),
            (b"cross-origin-opener-policy", b"same-origin"),
            (b"content-security-policy", csp.encode()),
        ]
        if self.hsts:
            extra.append((b"strict-transport-security", HSTS.encode()))

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {key.lower() for key, _ in message.get("headers", [])}
                headers = list(message.get("headers", []))
                headers.extend(item for item in extra if item[0] not in present)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class PlainTextErrorToProblemMiddleware:
    """Renders error responses that a framework layer writes as text/plain as problem+json.

    Starlette's body limiter answers a declared oversize Content-Length with a plain-text 413 of
    its own; clients must see one error shape, whatever layer produced it.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        held: Message | None = None

        async def rewriting_send(message: Message) -> None:
            nonlocal held
            if message["type"] == "http.response.start" and message["status"] >= 400:
                content_type = dict(message.get("headers", [])).get(b"content-type", b"")
                if content_type.startswith(b"text/plain"):
                    held = message
                    return
            if held is not None and message["type"] == "http.response.body":
                if message.get("more_body"):
                    return
                status = held["status"]
                held = None
                await _send_problem(scope, send, status, _PLAIN_CODES.get(status, "http_error"), None)
                return
            await send(message)

        await self.app(scope, receive, rewriting_send)


_PLAIN_CODES = {413: "payload_too_large", 400: "bad_request", 404: "not_found", 405: "method_not_allowed"}


class UnhandledErrorMiddleware:
    """Innermost: turns any unexpected exception into a 500 problem, logged with its traceback.

    Sitting inside the other middleware, the 500 still gets the request id, security and CORS
    headers and its access line, which Starlette's outermost ServerErrorMiddleware cannot give.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            log.exception("http.unhandled_error", method=scope.get("method"), path=scope.get("path"))
            if started:
                raise
            detail = "An unexpected error occurred; quote the request id to support."
            await _send_problem(scope, send, 500, "internal_error", detail)


async def _send_problem(scope: Scope, send: Send, status: int, code: str, detail: str | None) -> None:
    request_id = scope.get("state", {}).get("request_id")
    body = json.dumps(problem_body(status=status, code=code, detail=detail, request_id=request_id)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", PROBLEM_CONTENT_TYPE.encode()),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
