"""HTTP hygiene: CORS allow-list, security headers, gzip, request ids and the access line."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from fastapi import APIRouter, FastAPI

from codepulse.config import Settings
from codepulse.db import SessionRoute
from tests.helpers import with_api_prefix


async def _client_for(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


@pytest.fixture
def build_client(
    make_settings: Callable[..., Settings], app_factory: Callable[[Settings], FastAPI]
) -> Callable[..., AsyncIterator[httpx.AsyncClient]]:
    async def build(**overrides: object) -> AsyncIterator[httpx.AsyncClient]:
        app = app_factory(make_settings(**overrides))
        big = APIRouter(prefix="/_test", tags=["test"], route_class=SessionRoute)

        @big.get("/big")
        async def big_payload() -> dict[str, str]:
            return {"data": "codepulse " * 1000}

        @big.get("/items/{item_id}")
        async def item(item_id: int) -> dict[str, int]:
            return {"id": item_id}

        app.include_router(with_api_prefix(big, app.state.settings))
        async with await _client_for(app) as client:
            yield client

    return build


async def test_cors_allows_listed_origins_only(build_client: Callable[..., AsyncIterator[httpx.AsyncClient]]) -> None:
    async for client in build_client(CORS_ORIGINS="https://app.codepulse.test, https://admin.codepulse.test"):
        preflight = await client.options(
            "/api/v1/health",
            headers={
                "origin": "https://app.codepulse.test",
                "access-control-request-method": "POST",
                "access-control-request-headers": "authorization,content-type",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "https://app.codepulse.test"
        assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
        simple = await client.get("/api/v1/health", headers={"origin": "https://admin.codepulse.test"})
        assert simple.headers["access-control-allow-origin"] == "https://admin.codepulse.test"
        assert "x-request-id" in simple.headers["access-control-expose-headers"].lower()
        stranger = await client.get("/api/v1/health", headers={"origin": "https://evil.test"})
        assert "access-control-allow-origin" not in stranger.headers
        refused = await client.options(
            "/api/v1/health", headers={"origin": "https://evil.test", "access-control-request-method": "POST"}
        )
        assert refused.status_code == 400


async def test_security_headers_on_api_and_docs(build_client: Callable[..., AsyncIterator[httpx.AsyncClient]]) -> None:
    async for client in build_client():
        api = await client.get("/api/v1/health")
        assert api.headers["x-content-type-options"] == "nosniff"
        assert api.headers["x-frame-options"] == "DENY"
        assert api.headers["referrer-policy"] == "no-referrer"
        assert api.headers["content-security-policy"].startswith("default-src 'none'")
        assert "strict-transport-security" not in api.headers
        docs = await client.get("/docs")
        assert docs.status_code == 200
        csp = docs.headers["content-security-policy"]
        # Swagger UI's bundle and its inline bootstrap must be allowed, or /docs renders blank.
        assert "https://cdn.jsdelivr.net" in csp
        assert "'unsafe-inline'" in csp
        assert "swagger-ui-bundle.js" in docs.text
        redoc = await client.get("/redoc")
        assert redoc.status_code == 200
        assert "redoc" in redoc.text.lower()


async def test_hsts_only_in_production(build_client: Callable[..., AsyncIterator[httpx.AsyncClient]]) -> None:
    async for client in build_client(
        ENVIRONMENT="production", SECRET_KEY="Zx8-" + "q7RkT2mWv9LpB4nY" * 3, MAIL_DISABLED=True
    ):
        response = await client.get("/api/v1/health")
        assert response.headers["strict-transport-security"].startswith("max-age=")


async def test_large_responses_are_gzipped(build_client: Callable[..., AsyncIterator[httpx.AsyncClient]]) -> None:
    async for client in build_client():
        big = await client.get("/api/v1/_test/big", headers={"accept-encoding": "gzip"})
        assert big.headers["content-encoding"] == "gzip"
        assert big.json()["data"].startswith("codepulse ")
        small = await client.get("/api/v1/health", headers={"accept-encoding": "gzip"})
        assert "content-encoding" not in small.headers


async def test_request_id_is_generated_accepted_or_replaced(
    build_client: Callable[..., AsyncIterator[httpx.AsyncClient]],
) -> None:
    async for client in build_client():
        generated = await client.get("/api/v1/health")
        assert len(generated.headers["x-request-id"]) == 32
        accepted = await client.get("/api/v1/health", headers={"x-request-id": "edge-7f3a.1:2"})
        assert accepted.headers["x-request-id"] == "edge-7f3a.1:2"
        # Anything that could forge log lines or bloat them is replaced, not echoed.
        for bad in (b"a b", b"x" * 129, "evil\u00e9".encode(), b"", b"id\r\nforged: 1"[:2] + b"\t"):
            replaced = await client.get("/api/v1/health", headers=[(b"x-request-id", bad)])
            assert replaced.headers["x-request-id"].encode() != bad
            assert len(replaced.headers["x-request-id"]) == 32


async def test_access_line_has_template_status_duration_and_ip(
    build_client: Callable[..., AsyncIterator[httpx.AsyncClient]], logs: Callable[[str], list[dict[str, object]]]
) -> None:
    async for client in build_client():
        await client.get("/api/v1/_test/items/12345", headers={"x-request-id": "req-1"})
        await client.get("/api/v1/nowhere/secret-token", headers={"x-request-id": "req-2"})
        await client.get("/openapi.json", headers={"x-request-id": "req-3"})
    lines = {line["request_id"]: line for line in logs("http.request")}
    item = lines["req-1"]
    assert item["path"] == "/api/v1/_test/items/{item_id}"
    assert item["method"] == "GET"
    assert item["status"] == 200
    assert item["client_ip"] == "127.0.0.1"
    assert isinstance(item["duration_ms"], float)
    assert lines["req-2"]["path"] == "<unmatched>"
    assert lines["req-2"]["status"] == 404
    assert lines["req-3"]["path"] == "/openapi.json"
