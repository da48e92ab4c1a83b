"""DomainRouter: routes built once per process, each app with its own dependency overrides."""

from __future__ import annotations

import httpx
import pytest
from fastapi import Depends, FastAPI
from fastapi.routing import APIRoute
from starlette.routing import Match

from codepulse.app import create_app
from codepulse.routing import ApiRoute, DomainRouter
from tests.databases import build_settings


async def _greeting() -> str:
    return "built"


def _router() -> DomainRouter:
    router = DomainRouter(prefix="/things", tags=["things"])

    @router.get("/greeting")
    async def greeting(word: str = Depends(_greeting)) -> dict[str, str]:
        return {"word": word}

    @router.post("/echo")
    async def echo(body: dict[str, str]) -> dict[str, str]:
        return body

    return router


def _app(router: DomainRouter, max_body_size: int) -> FastAPI:
    app = FastAPI()
    router.build_into(app.router, prefix="/api", responses={}, max_body_size=max_body_size)
    return app


async def _call(app: FastAPI, method: str, path: str, **kwargs: object) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        return await client.request(method, path, **kwargs)  # type: ignore[arg-type]


async def test_each_app_answers_with_its_own_dependency_overrides() -> None:
    router = _router()
    first, second, third = (_app(router, 1000) for _ in range(3))

    async def overridden() -> str:
        return "overridden"

    second.dependency_overrides[_greeting] = overridden
    assert (await _call(first, "GET", "/api/things/greeting")).json() == {"word": "built"}
    assert (await _call(second, "GET", "/api/things/greeting")).json() == {"word": "overridden"}
    assert (await _call(third, "GET", "/api/things/greeting")).json() == {"word": "built"}
    # The copies are distinct route objects sharing the built dependency tree.
    assert first.router.routes[-1] is not second.router.routes[-1]


async def test_a_copied_route_keeps_the_body_limit_it_was_built_with() -> None:
    router = _router()
    small, large = _app(router, 64), _app(router, 100_000)
    _app(router, 64)  # a copy of the first build
    body = {"text": "x" * 200}
    assert (await _call(small, "POST", "/api/things/echo", json=body)).status_code == 413
    assert (await _call(large, "POST", "/api/things/echo", json=body)).json() == body
    again = _app(router, 64)
    assert (await _call(again, "POST", "/api/things/echo", json=body)).status_code == 413


def test_apps_built_from_the_cache_describe_the_same_api() -> None:
    settings = build_settings("sqlite+aiosqlite:///:memory:")
    assert create_app(settings).openapi() == create_app(settings).openapi()


def test_only_routes_that_take_a_body_carry_the_body_limiter() -> None:
    app = _app(_router(), 1000)
    routes = {route.path: route for route in app.router.routes if isinstance(route, ApiRoute)}
    assert routes["/api/things/echo"].max_body_size == 1000
    assert routes["/api/things/greeting"].max_body_size is None


@pytest.mark.parametrize(
    ("path", "method", "expected"),
    [
        ("/api/orgs/acme/repos/7", "GET", Match.FULL),
        ("/api/orgs/acme/repos/7", "POST", Match.PARTIAL),
        ("/api/orgs/acme/repos/", "GET", Match.NONE),
        ("/api/orgs/acme/repos/7/x", "GET", Match.NONE),
        ("/api/orgsx/acme/repos/7", "GET", Match.NONE),
        ("/api/other", "GET", Match.NONE),
        ("/api/health", "GET", Match.FULL),
        ("/api/health/", "GET", Match.NONE),
        ("/api/healthz", "GET", Match.NONE),
    ],
)
def test_an_api_route_matches_exactly_as_its_regular_expression(path: str, method: str, expected: Match) -> None:
    async def endpoint() -> None:
        return None

    for template in ("/api/orgs/{org}/repos/{repo_id}", "/api/health"):
        route = ApiRoute(template, endpoint, methods=["GET"])
        plain = APIRoute(template, endpoint, methods=["GET"])
        scope = {"type": "http", "path": path, "root_path": "", "method": method}
        assert route.matches(dict(scope))[0] == plain.matches(dict(scope))[0]
        mounted = {**scope, "root_path": "/base", "path": "/base" + path}
        assert route.matches(dict(mounted))[0] == plain.matches(dict(mounted))[0]
    route = ApiRoute("/api/orgs/{org}/repos/{repo_id}" if "orgs" in path else "/api/health", endpoint, methods=["GET"])
    assert route.matches({"type": "http", "path": path, "root_path": "", "method": method})[0] == expected
