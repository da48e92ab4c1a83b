"""Domain errors and their RFC 9457 `application/problem+json` rendering.

Services raise DomainError subclasses; handlers here turn them, FastAPI's validation errors and
Starlette's HTTP errors into one problem shape with a stable snake_case `code`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any, ClassVar, cast

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

log = structlog.get_logger("codepulse.errors")

PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_TYPE_PREFIX = "urn:codepulse:problem:"


class FieldError(BaseModel):
    field: str = Field(description="Dotted location of the bad value, e.g. `body.email`.")
    message: str
    code: str = Field(description="Stable machine-readable reason, e.g. `missing`, `string_too_short`.")


class Problem(BaseModel):
    """RFC 9457 problem details, with codepulse's `code` and `request_id` extensions."""

    type: str = Field(description="URI identifying the problem type: `urn:codepulse:problem:<code>`.")
    title: str
    status: int
    detail: str | None = None
    code: str = Field(description="Stable snake_case identifier clients can branch on.")
    request_id: str | None = None
    errors: list[FieldError] | None = None


class DomainError(Exception):
    """Base of every error a client can cause. Subclasses set status, code and title."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"
    title: ClassVar[str] = "Internal server error"

    def __init__(
        self,
        detail: str | None = None,
        *,
        code: str | None = None,
        extra: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail or self.title)
        self.detail = detail
        self.instance_code = code or self.code
        self.extra = dict(extra or {})
        self.headers = dict(headers or {})


class NotFound(DomainError):
    status = 404
    code = "not_found"
    title = "Not found"

    def __init__(self, resource: str = "resource", detail: str | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("code", f"{resource}_not_found" if resource != "resource" else None)
        super().__init__(detail or f"The {resource.replace('_', ' ')} does not exist.", **kwargs)


class Conflict(DomainError):
    status = 409
    code = "conflict"
    title = "Conflict"


class Forbidden(DomainError):
    status = 403
    code = "forbidden"
    title = "Forbidden"


class Unauthorized(DomainError):
    status = 401
    code = "unauthorized"
    title = "Authentication required"

    def __init__(self, detail: str | None = None, **kwargs: Any) -> None:
        headers = dict(kwargs.pop("headers", None) or {})
        headers.setdefault("WWW-Authenticate", "Bearer")
        super().__init__(detail, headers=headers, **kwargs)


class ValidationFailed(DomainError):
    status = 422
    code = "validation_failed"
    title = "Validation failed"

    def __init__(self, errors: Sequence[FieldError], detail: str | None = None, **kwargs: Any) -> None:
        super().__init__(detail or "The request has invalid fields.", **kwargs)
        self.errors = list(errors)


class BadRequest(DomainError):
    status = 400
    code = "bad_request"
    title = "Bad request"


class QuotaExceeded(DomainError):
    status = 402
    code = "quota_exceeded"
    title = "Quota exceeded"

    def __init__(
        self, detail: str, *, resource: str, limit: int, used: int, plan: str, upgrade_to: str | None, **kwargs: Any
    ) -> None:
        # upgrade_to: the cheapest plan that lifts the limit (None on the top plan).
        extra = {"resource": resource, "limit": limit, "used": used, "plan": plan, "upgrade_to": upgrade_to}
        super().__init__(detail, extra=extra | dict(kwargs.pop("extra", None) or {}), **kwargs)


class RateLimited(DomainError):
    status = 429
    code = "rate_limited"
    title = "Too many requests"

    def __init__(self, retry_after_seconds: int, detail: str | None = None, **kwargs: Any) -> None:
        retry_after = max(1, int(retry_after_seconds))
        super().__init__(
            detail or f"Too many requests; retry in {retry_after} s.",
            headers={"Retry-After": str(retry_after)},
            extra={"retry_after": retry_after},
            **kwargs,
        )


class PayloadTooLarge(DomainError):
    status = 413
    code = "payload_too_large"
    title = "Payload too large"


class ServiceUnavailable(DomainError):
    status = 503
    code = "unavailable"
    title = "Service unavailable"


class BadGateway(DomainError):
    """An outside service refused what we sent it (a misconfiguration on our side, not the
    client's)."""

    status = 502
    code = "bad_gateway"
    title = "Bad gateway"


# Codes for errors raised by Starlette/FastAPI themselves (routing, method, body parsing).
_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
    503: "unavailable",
}


def request_id_of(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)


def problem_body(
    *,
    status: int,
    code: str,
    title: str | None = None,
    detail: str | None = None,
    request_id: str | None = None,
    errors: Sequence[FieldError] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_PREFIX + code,
        "title": title or HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "code": code,
        "request_id": request_id,
    }
    if errors is not None:
        body["errors"] = [error.model_dump() for error in errors]
    # Extensions never overwrite the standard members.
    for key, value in (extra or {}).items():
        body.setdefault(key, value)
    return body


def problem_response(
    status: int, code: str, *, headers: Mapping[str, str] | None = None, **fields: Any
) -> JSONResponse:
    return JSONResponse(
        problem_body(status=status, code=code, **fields),
        status_code=status,
        media_type=PROBLEM_CONTENT_TYPE,
        headers=dict(headers or {}),
    )


def _field_errors(error: RequestValidationError) -> list[FieldError]:
    result = []
    for item in error.errors():
        location = ".".join(str(part) for part in item.get("loc", ()))
        result.append(FieldError(field=location or "body", message=str(item.get("msg", "")), code=str(item["type"])))
    return result


async def _domain_error_handler(request: Request, exc: Exception) -> JSONResponse:
    exc = cast(DomainError, exc)
    return problem_response(
        exc.status,
        exc.instance_code,
        title=exc.title,
        detail=exc.detail or exc.title,
        request_id=request_id_of(request),
        errors=getattr(exc, "errors", None),
        extra=exc.extra,
        headers=exc.headers,
    )


async def _validation_error_handler(request: Request, exc: Exception) -> JSONResponse:
    exc = cast(RequestValidationError, exc)
    return problem_response(
        422,
        "validation_failed",
        title="Validation failed",
        detail="The request has invalid fields.",
        request_id=request_id_of(request),
        errors=_field_errors(exc),
    )


async def _http_error_handler(request: Request, exc: Exception) -> JSONResponse:
    exc = cast(StarletteHTTPException, exc)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    phrase = HTTPStatus(exc.status_code).phrase
    detail = exc.detail if isinstance(exc.detail, str) and exc.detail != phrase else None
    return problem_response(
        exc.status_code,
        code,
        title=phrase,
        detail=detail or phrase,
        request_id=request_id_of(request),
        headers=exc.headers,
    )


async def _integrity_error_handler(request: Request, exc: Exception) -> JSONResponse:
    # Services check uniqueness first; this catches the race where two requests pass the check.
    # The constraint name goes to the log, never to the client.
    log.warning("db.integrity_error", error=str(getattr(exc, "orig", exc)).splitlines()[0][:300])
    return problem_response(
        409,
        "conflict",
        title="Conflict",
        detail="The request conflicts with data that changed meanwhile; reload and retry.",
        request_id=request_id_of(request),
    )


# Seconds a client should wait before retrying while the database is unreachable.
DATABASE_RETRY_AFTER_SECONDS = 5
# The DBAPI's "errors related to the database's operation" (connection refused or lost, the
# server shutting down, SQLite unable to open its file or locked past busy_timeout) and a pool
# with no connection to give: an outage, not a bug.
DATABASE_UNAVAILABLE_ERRORS = (OperationalError, InterfaceError, PoolTimeout)


async def _database_unavailable_handler(request: Request, exc: Exception) -> JSONResponse:
    # One compact line, no traceback: an outage under load would otherwise log one per request.
    orig = getattr(exc, "orig", None) or exc
    log.warning("db.unavailable", error=type(orig).__name__, detail=(str(orig).strip().splitlines() or [""])[0][:300])
    return problem_response(
        503,
        "database_unavailable",
        title="Database unavailable",
        detail="The database cannot be reached right now; retry later.",
        request_id=request_id_of(request),
        extra={"retry_after": DATABASE_RETRY_AFTER_SECONDS},
        headers={"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)},
    )


def install_error_handlers(app: FastAPI) -> None:
    for error_class in DATABASE_UNAVAILABLE_ERRORS:
        app.add_exception_handler(error_class, _database_unavailable_handler)
    app.add_exception_handler(IntegrityError, _integrity_error_handler)
    app.add_exception_handler(DomainError, _domain_error_handler)
    app.add_exception_handler(RequestValidationError, _validation_error_handler)
    app.add_exception_handler(StarletteHTTPException, _http_error_handler)


PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    "4XX": {"model": Problem, "description": "Client error (problem details)"},
    "5XX": {"model": Problem, "description": "Server error (problem details)"},
}
_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}


def document_problem_responses(openapi: dict[str, Any]) -> None:
    """Describe every error response as `application/problem+json` with the Problem schema,
    including FastAPI's generated 422, which otherwise documents its own JSON shape."""
    for operations in openapi.get("paths", {}).values():
        for operation in operations.values():
            for status, response in operation.get("responses", {}).items():
                refs = {
                    str(media.get("schema", {}).get("$ref", "")).rsplit("/", 1)[-1]
                    for media in response.get("content", {}).values()
                }
                if refs & {"Problem", "HTTPValidationError"}:
                    response["content"] = {PROBLEM_CONTENT_TYPE: {"schema": _PROBLEM_REF}}
                    if str(status) == "422":
                        response["description"] = "Validation failed (problem details with `errors`)"
    schemas = openapi.get("components", {}).get("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
