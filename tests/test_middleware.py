"""The middleware's layers where they are not the obvious path: the OAuth cookie session only on
the OAuth routes, gzip's Vary and streaming cases, CORS only when configured, a 500 with every
header, and no access line built when INFO is off."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterator

import httpx
import opentelemetry.trace
import pytest
import structlog
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import StreamingResponse

from codepulse import logging as codepulse_logging
from codepulse.app import OAUTH_PATH
from codepulse.config import Settings
from codepulse.db import SessionRoute
from tests.factories import MakeUser
from tests.helpers import with_api_prefix

BIG = b"codepulse " * 500


async def has_session(request: Request) -> dict[str, bool]:
    return {"session": "session" in request.scope}


def _test_router(prefix: str = "/_test") -> APIRouter:
    router = APIRouter(prefix=prefix, tags=["test"], route_class=SessionRoute)
    router.add_api_route("/session", has_session)

    @router.get("/big")
    async def big() -> Response:
        return Response(BIG, media_type="text/plain")

    @router.get("/stream")
    async def stream() -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            yield BIG
            yield BIG

        return StreamingResponse(chunks(), media_type="text/plain")

    @router.get("/framed")
    async def framed() -> Response:
        return Response(b"{}", media_type="application/json", headers={"X-Frame-Options": "SAMEORIGIN"})

    @router.get("/crash")
    async def crash() -> None:
        raise RuntimeError("boom")

    return router


@pytest.fixture
def build_client(
    make_settings: Callable[..., Settings], app_factory: Callable[[Settings], FastAPI]
) -> Callable[..., AsyncIterator[httpx.AsyncClient]]:
    async def build(**overrides: object) -> AsyncIterator[httpx.AsyncClient]:
        app = app_factory(make_settings(**overrides))
        app.include_router(with_api_prefix(_test_router(), app.state.settings))
        for prefix in ("/auth/oauth/_test", "/auth/oauthx/_test"):
            app.include_router(with_api_prefix(_test_router(prefix), app.state.settings))
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client

    return build


async def test_the_oauth_cookie_session_exists_on_the_oauth_routes_only(
    build_client: Callable[..., AsyncIterator[httpx.AsyncClient]],
) -> None:
    assert OAUTH_PATH == "/api/v1/auth/oauth"
    async for client in build_client():
        client.cookies.set("codepulse_oauth", "anything")
        elsewhere = await client.get("/api/v1/_test/session")
        assert elsewhere.json() == {"session": False}
        assert "set-cookie" not in elsewhere.headers
        assert "cookie" not in elsewhere.headers.get("vary", "").lower()
        assert (await client.get("/api/v1/auth/oauthx/_test/session")).json() == {"session": False}
        oauth = await client.get(f"{OAUTH_PATH}/_test/session")
        assert oauth.json() == {"session": True}
        assert len(oauth.headers["x-request-id"]) == 32
        assert oauth.headers["x-content-type-options"] == "nosniff"


async def test_gzip_keeps_starlettes_vary_and_compresses_streams(
    build_client: Callable[..., AsyncIterator[httpx.AsyncClient]],
) -> None:
    async for client in build_client():
        identity = await client.get("/api/v1/_test/big", headers={"accept-encoding": "identity"})
        assert "content-encoding" not in identity.headers
        assert identity.headers["vary"] == "Accept-Encoding"  # a cache must not serve it to gzip clients
        assert identity.content == BIG
        small = await client.get("/api/v1/health", headers={"accept-encoding": "identity"})
        assert "vary" not in small.headers
        streamed = await client.get("/api/v1/_test/stream", headers={"accept-encoding": "gzip"})
        assert streamed.headers["content-encoding"] == "gzip"
        assert streamed.content == BIG * 2
        assert streamed.headers["x-request-id"]
        assert streamed.headers["x-content-type-options"] == "nosniff"


async def test_cors_only_when_origins_are_configured(
    build_client: Callable[..., AsyncIterator[httpx.AsyncClient]],
) -> None:
    async for client in build_client():
        response = await client.get("/api/v1/health", headers={"origin": "https://app.codepulse.test"})
        assert "access-control-allow-origin" not in response.headers
        assert "vary" not in response.headers
    async for client in build_client(CORS_ORIGINS="https://app.codepulse.test"):
        response = await client.get("/api/v1/health", headers={"origin": "https://app.codepulse.test"})
        assert response.headers["access-control-allow-origin"] == "https://app.codepulse.test"
        assert response.headers["vary"] == "Origin"


async def test_a_500_has_the_request_id_security_and_cors_headers(
    build_client: Callable[..., AsyncIterator[httpx.AsyncClient]],
) -> None:
    async for client in build_client(CORS_ORIGINS="https://app.codepulse.test"):
        response = await client.get(
            "/api/v1/_test/crash", headers={"origin": "https://app.codepulse.test", "x-request-id": "crash-1"}
        )
        assert response.status_code == 500
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["request_id"] == "crash-1"
        assert response.headers["x-request-id"] == "crash-1"
        assert response.headers["access-control-allow-origin"] == "https://app.codepulse.test"
        assert response.headers["content-security-policy"].startswith("default-src 'none'")


async def test_a_routes_own_security_header_wins(build_client: Callable[..., AsyncIterator[httpx.AsyncClient]]) -> None:
    async for client in build_client():
        response = await client.get("/api/v1/_test/framed")
        assert response.headers.get_list("x-frame-options") == ["SAMEORIGIN"]
        assert response.headers.get_list("x-request-id") == [response.headers["x-request-id"]]
        assert response.headers["referrer-policy"] == "no-referrer"


@pytest.fixture
def access_logger_at_warning() -> Iterator[None]:
    logger = logging.getLogger("codepulse.http")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


@pytest.mark.usefixtures("access_logger_at_warning")
async def test_no_access_line_is_built_when_info_is_off(
    build_client: Callable[..., AsyncIterator[httpx.AsyncClient]],
    logs: Callable[[str], list[dict[str, object]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def must_not_run(*_: object) -> str:
        raise AssertionError("the access line was built below its level")

    monkeypatch.setattr(codepulse_logging, "path_template", must_not_run)
    async for client in build_client():
        response = await client.get("/api/v1/health")
        assert response.status_code == 200
    assert logs("http.request") == []


async def test_a_request_leaves_no_log_context_behind(
    build_client: Callable[..., AsyncIterator[httpx.AsyncClient]], make_user: MakeUser
) -> None:
    # The in-process client runs each request in this test's own task and context.
    async for client in build_client():
        user = await make_user()
        response = await client.get("/api/v1/auth/me", headers=user.headers)
        assert response.status_code == 200
        assert structlog.contextvars.get_contextvars() == {}
        assert (await client.get("/api/v1/_test/crash")).status_code == 500
        assert structlog.contextvars.get_contextvars() == {}


@pytest.mark.parametrize("enabled", [False, True])
async def test_fastapi_telemetry_looks_for_providers_only_when_enabled(
    build_client: Callable[..., AsyncIterator[httpx.AsyncClient]], monkeypatch: pytest.MonkeyPatch, enabled: bool
) -> None:
    lookups: list[str] = []
    real = opentelemetry.trace.get_tracer_provider

    def counted() -> opentelemetry.trace.TracerProvider:
        lookups.append("tracer")
        return real()

    monkeypatch.setattr(opentelemetry.trace, "get_tracer_provider", counted)
    async for client in build_client(OTEL_ENABLED=enabled):
        assert (await client.get("/api/v1/health")).status_code == 200
    assert bool(lookups) is enabled
