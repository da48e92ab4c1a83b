"""structlog set-up (stdlib and uvicorn loggers included) and the HTTP access line."""

from __future__ import annotations

import logging
import re
import sys
import time
from contextvars import ContextVar
from typing import IO, Any

import structlog
from starlette.types import Scope

from codepulse.config import Settings

REQUEST_ID_HEADER = "x-request-id"

log = structlog.get_logger("codepulse.http")


class _CodepulseHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks our handler so reconfiguring replaces it and leaves others (pytest's) alone."""


REDACTED = "[redacted]"
# Credentials that ride in URLs: the scan WebSocket's `?token=`, mail links' `token`, OAuth's
# `code` and `state`, and the usual names of keys and signatures. The value ends where the URL
# or the quoted string around it ends (JSON escapes included).
_URL_CREDENTIAL = re.compile(
    r"(?i)(?<=[?&;])((?:access_|refresh_|id_)?token|code|state|password|secret|client_secret|api_?key|key|sig"
    r"|signature)=[^&;\s\"'#<>\\]+"
)
# A codepulse session token anywhere (a subprotocol header, an exception message), and bearer
# credentials (`Authorization: Bearer ...`).
_SESSION_TOKEN = re.compile(r"cp_[A-Za-z0-9_-]{8,}")
_BEARER = re.compile(r"(?i)(bearer[\s,]+)[A-Za-z0-9._~+/=-]{8,}")


def redact(text: str) -> str:
    """`text` with the credentials a log line may carry replaced by `[redacted]`."""
    if "=" in text and ("?" in text or "&" in text or ";" in text):
        text = _URL_CREDENTIAL.sub(lambda m: f"{m.group(1)}={REDACTED}", text)
    if "cp_" in text:
        text = _SESSION_TOKEN.sub(f"cp_{REDACTED}", text)
    if "earer" in text:
        text = _BEARER.sub(lambda m: m.group(1) + REDACTED, text)
    return text


class _Redacting:
    """Wraps the renderer: redaction runs on the finished line, so every field, nested value,
    traceback and foreign (uvicorn, websockets) message is covered alike, and only lines that
    are actually written pay for it."""

    def __init__(self, renderer: structlog.types.Processor) -> None:
        self.renderer = renderer

    def __call__(self, logger: Any, name: str, event_dict: structlog.types.EventDict) -> str:
        rendered = self.renderer(logger, name, event_dict)
        return redact(rendered if isinstance(rendered, str) else str(rendered))


def configure_logging(settings: Settings, *, stream: IO[str] | None = None) -> None:
    """Route structlog and stdlib logging (uvicorn's too) through one renderer."""
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if settings.LOG_JSON
        else structlog.dev.ConsoleRenderer(
            colors=sys.stderr.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
    )
    structlog.configure(
        processors=[
            # First: an event below its logger's level is dropped before any processor runs.
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            # One plain-text traceback (the stdlib's) in both modes, never frame locals:
            # structlog's dict tracebacks and rich's render every frame's variables, which put
            # passwords and tokens in the log and made each error line ~70 KB.
            structlog.processors.format_exc_info,
            _Redacting(renderer),
        ],
    )
    handler = _CodepulseHandler(stream or sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [h for h in root.handlers if not isinstance(h, _CodepulseHandler)] + [handler]
    root.setLevel(settings.LOG_LEVEL.value)
    # Uvicorn's loggers propagate to ours; its access log is replaced by the middleware's line.
    for name in ("uvicorn", "uvicorn.error"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers.clear()
        uvicorn_logger.propagate = True
    access = logging.getLogger("uvicorn.access")
    access.handlers.clear()
    access.propagate = False
    # SQLAlchemy's echo would log bound parameters, which may hold secrets: keep it at WARNING
    # unless DB_ECHO is asked for explicitly.
    logging.getLogger("sqlalchemy.engine").setLevel(logging.INFO if settings.DB_ECHO else logging.WARNING)
    # authlib logs PKCE verifiers at DEBUG; httpx logs request URLs.
    for noisy in ("apscheduler", "aiosqlite", "asyncio", "httpx", "httpcore", "authlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


_PARAM = re.compile(r"{(\w+)(?::\w+)?}")


def path_template(scope: Scope, status: int) -> str:
    """The matched route's template with its full prefix, e.g. `/api/v1/repositories/{id}`.

    FastAPI keeps an included router's prefix outside the route, so the prefix is recovered
    from the raw path by rendering the route's own template with the request's path params.
    """
    route_path: str | None = getattr(scope.get("route"), "path", None)
    path = str(scope.get("path", ""))
    if route_path is None:
        # Plain Starlette routes (/openapi.json, /docs) have no params: their path is the template.
        return path if "endpoint" in scope and status != 404 else "<unmatched>"
    params = scope.get("path_params", {})
    rendered = _PARAM.sub(lambda m: str(params.get(m.group(1), m.group(0))), route_path)
    return path[: len(path) - len(rendered)] + route_path if path.endswith(rendered) else route_path


_ACCESS = logging.getLogger("codepulse.http")


def log_access(scope: Scope, status: int, started: float) -> None:
    """The request's access line, `http.request` at INFO; nothing is built when INFO is off."""
    if not _ACCESS.isEnabledFor(logging.INFO):
        return
    log.info(
        "http.request",
        method=scope.get("method"),
        # The template, not the raw path: raw paths can carry tokens and explode cardinality.
        path=path_template(scope, status),
        status=status,
        duration_ms=round((time.perf_counter() - started) * 1000, 2),
        client_ip=(scope.get("client") or (None,))[0],
    )


def structlog_var(key: str) -> ContextVar[Any]:
    """The context variable behind structlog's `bind_contextvars(key=...)`, for hot paths to set
    it directly (one `ContextVar.set`, where `bind_contextvars` looks every variable up)."""
    tokens = structlog.contextvars.bind_contextvars(**{key: None})
    structlog.contextvars.reset_contextvars(**tokens)
    return tokens[key].var


# What a request binds to its log lines, set directly by the HTTP layer and authentication and
# restored when the request ends.
REQUEST_ID_VAR = structlog_var("request_id")
USER_ID_VAR = structlog_var("user_id")
