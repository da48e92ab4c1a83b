"""Every error is an RFC 9457 problem with a stable code, including FastAPI's and Starlette's own."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from pydantic import BaseModel, Field

from codepulse.config import Settings
from codepulse.db import SessionRoute
from codepulse.errors import (
    Conflict,
    FieldError,
    Forbidden,
    NotFound,
    QuotaExceeded,
    RateLimited,
    ServiceUnavailable,
    Unauthorized,
    ValidationFailed,
)
from tests.helpers import with_api_prefix

PROBLEM = "application/problem+json"


class Echo(BaseModel):
    name: str = Field(min_length=3)
    count: int


def _error_router() -> APIRouter:
    router = APIRouter(prefix="/_test", tags=["test"], route_class=SessionRoute)

    @router.post("/echo")
    async def echo(body: Echo) -> Echo:
        return body

    @router.get("/raise/{kind}")
    async def raise_error(kind: str) -> None:
        errors = {
            "not_found": NotFound("repository"),
            "conflict": Conflict("That slug is taken.", code="slug_taken"),
            "forbidden": Forbidden("Admins only.", code="insufficient_role"),
            "unauthorized": Unauthorized("Sign in first."),
            "validation": ValidationFailed([FieldError(field="body.password", message="too common", code="common")]),
            "quota": QuotaExceeded(
                "Repository limit reached.", resource="repositories", limit=3, used=3, plan="free", upgrade_to="pro"
            ),
            "rate": RateLimited(30),
            "unavailable": ServiceUnavailable("Try later."),
        }
        raise errors[kind]

    @router.get("/crash")
    async def crash() -> None:
        raise RuntimeError("database password is hunter2")

    return router


@pytest.fixture
async def client(settings: Settings, app_factory: Callable[[Settings], FastAPI]) -> AsyncIterator[httpx.AsyncClient]:
    app = app_factory(settings)
    app.include_router(with_api_prefix(_error_router(), app.state.settings))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, object] = response.json()
    assert body["status"] == status
    assert body["code"] == code
    assert body["type"] == f"urn:codepulse:problem:{code}"
    assert isinstance(body["title"], str)
    assert body["title"]
    assert body["request_id"] == response.headers["x-request-id"]
    return body


@pytest.mark.parametrize(
    ("kind", "status", "code"),
    [
        ("not_found", 404, "repository_not_found"),
        ("conflict", 409, "slug_taken"),
        ("forbidden", 403, "insufficient_role"),
        ("unauthorized", 401, "unauthorized"),
        ("validation", 422, "validation_failed"),
        ("quota", 402, "quota_exceeded"),
        ("rate", 429, "rate_limited"),
        ("unavailable", 503, "unavailable"),
    ],
)
async def test_domain_errors_render_as_problems(client: httpx.AsyncClient, kind: str, status: int, code: str) -> None:
    assert_problem(await client.get(f"/api/v1/_test/raise/{kind}"), status, code)


async def test_problem_extensions_and_headers(client: httpx.AsyncClient) -> None:
    quota = assert_problem(await client.get("/api/v1/_test/raise/quota"), 402, "quota_exceeded")
    assert (quota["resource"], quota["limit"], quota["used"], quota["plan"], quota["upgrade_to"]) == (
        "repositories",
        3,
        3,
        "free",
        "pro",
    )
    rate = await client.get("/api/v1/_test/raise/rate")
    assert rate.headers["retry-after"] == "30"
    unauthorized = await client.get("/api/v1/_test/raise/unauthorized")
    assert unauthorized.headers["www-authenticate"] == "Bearer"
    missing = assert_problem(await client.get("/api/v1/_test/raise/not_found"), 404, "repository_not_found")
    assert missing["detail"] == "The repository does not exist."
    invalid = assert_problem(await client.get("/api/v1/_test/raise/validation"), 422, "validation_failed")
    assert invalid["errors"] == [{"field": "body.password", "message": "too common", "code": "common"}]


async def test_request_validation_lists_each_field(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/v1/_test/echo", json={"name": "ab"})
    body = assert_problem(response, 422, "validation_failed")
    errors = body["errors"]
    assert isinstance(errors, list)
    by_field = {error["field"]: error for error in errors}
    assert set(by_field) == {"body.name", "body.count"}
    assert by_field["body.count"]["code"] == "missing"
    assert by_field["body.name"]["code"] == "string_too_short"


async def test_malformed_json_is_a_validation_problem(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/v1/_test/echo", content=b'{"name": "abc", ', headers={"content-type": "application/json"}
    )
    assert_problem(response, 422, "validation_failed")


async def test_unknown_route_and_wrong_method(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/api/v1/nothing-here"), 404, "not_found")
    wrong = assert_problem(await client.delete("/api/v1/health"), 405, "method_not_allowed")
    assert wrong["title"] == "Method Not Allowed"


async def test_body_over_the_limit_is_413(client: httpx.AsyncClient, settings: Settings) -> None:
    oversized = b'{"name": "' + b"x" * settings.MAX_REQUEST_BODY_BYTES + b'", "count": 1}'
    response = await client.post("/api/v1/_test/echo", content=oversized, headers={"content-type": "application/json"})
    assert_problem(response, 413, "payload_too_large")


async def test_body_over_the_limit_is_413_when_streamed(client: httpx.AsyncClient, settings: Settings) -> None:
    """No Content-Length to trust: the limit is enforced while the body arrives."""

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"name": "'
        for _ in range(settings.MAX_REQUEST_BODY_BYTES // 65536 + 2):
            yield b"x" * 65536
        yield b'", "count": 1}'

    response = await client.post("/api/v1/_test/echo", content=chunks(), headers={"content-type": "application/json"})
    assert "content-length" not in response.request.headers
    assert_problem(response, 413, "payload_too_large")


async def test_unexpected_exception_is_a_500_problem_without_internals(
    client: httpx.AsyncClient, logs: Callable[[str], list[dict[str, object]]]
) -> None:
    response = await client.get("/api/v1/_test/crash", headers={"x-request-id": "trace-me-42"})
    body = assert_problem(response, 500, "internal_error")
    assert body["request_id"] == "trace-me-42"
    assert "hunter2" not in response.text
    assert "RuntimeError" not in response.text
    # Outer middleware still applies to the 500.
    assert response.headers["x-content-type-options"] == "nosniff"
    [logged] = logs("http.unhandled_error")
    assert logged["request_id"] == "trace-me-42"
    assert logged["exc_info"] is True
    [access] = [line for line in logs("http.request") if line["request_id"] == "trace-me-42"]
    assert access["status"] == 500
