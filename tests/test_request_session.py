"""The request session gives back what it took on every way a request can end.

A real engine over a database of its own (not the test's shared connection), so the pool's
check-ins are real: after each request every connection is back in the pool, PostgreSQL shows no
connection idle in transaction, and the next write goes through at once (on SQLite a leaked
`BEGIN IMMEDIATE` would make it wait out the busy timeout, then fail).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI, Request
from sqlalchemy import event, text

from codepulse.app import create_app
from codepulse.auth.dependencies import CurrentUser
from codepulse.db import Database, DbSession, SessionRoute
from tests.auth.helpers import PASSWORD, SignedIn, login, register
from tests.databases import DatabaseServer, build_settings

_names = itertools.count()


@dataclass
class Harness:
    app: FastAPI
    database: Database
    client: httpx.AsyncClient
    hang_started: asyncio.Event

    async def user(self) -> SignedIn:
        return await register(self.client, f"rs{next(_names)}")

    async def assert_everything_returned(self) -> None:
        assert self.database.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
        if self.database.dialect == "postgresql":
            async with self.database.engine.connect() as connection:
                idle = await connection.scalar(
                    text(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                        "AND state LIKE 'idle in transaction%' AND pid <> pg_backend_pid()"
                    )
                )
            assert idle == 0

    async def assert_next_write_succeeds(self, signed_in: SignedIn) -> None:
        await self.assert_everything_returned()
        response = await self.client.patch("/api/v1/users/me", json={"name": "Next"}, headers=signed_in.headers)
        assert response.status_code == 200, response.text
        await self.assert_everything_returned()


def _test_routes(hang_started: asyncio.Event) -> APIRouter:
    router = APIRouter(prefix="/api/v1/test", tags=["test"], route_class=SessionRoute)

    @router.post("/boom")
    async def boom(user: CurrentUser, session: DbSession) -> dict[str, Any]:
        user.name = "Never saved"
        await session.flush()
        raise RuntimeError("an unexpected failure after a write")

    @router.post("/hang")
    async def hang(user: CurrentUser, session: DbSession) -> dict[str, Any]:
        user.name = "Never saved either"
        await session.flush()
        hang_started.set()
        await asyncio.Event().wait()  # until the request is cancelled
        return {}  # pragma: no cover - never reached

    @router.get("/read-hang")
    async def read_hang(request: Request, user: CurrentUser, session: DbSession) -> dict[str, Any]:
        await session.execute(text("SELECT 1"))
        hang_started.set()
        await asyncio.Event().wait()
        return {}  # pragma: no cover - never reached

    return router


@pytest.fixture(scope="module")
async def harness(database_server: DatabaseServer) -> AsyncIterator[Harness]:
    # A short busy timeout: a leaked SQLite write lock fails the next write quickly.
    settings = build_settings(
        await database_server.clone("request_session"), SQLITE_BUSY_TIMEOUT_MS=1500, RATE_LIMIT_ENABLED=False
    )
    database = Database.from_settings(settings)
    app = create_app(settings, database=database)
    hang_started = asyncio.Event()
    app.include_router(_test_routes(hang_started))
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
                yield Harness(app, database, client, hang_started)
    finally:
        await database.dispose()


async def test_success_returns_the_connection(harness: Harness) -> None:
    signed_in = await harness.user()
    response = await harness.client.patch("/api/v1/users/me", json={"name": "B"}, headers=signed_in.headers)
    assert response.status_code == 200
    await harness.assert_next_write_succeeds(signed_in)


async def test_forbidden_by_a_guard_then_a_write_succeeds_at_once(harness: Harness) -> None:
    """The reproduction of issue 11: a 403 used to leave the SQLite write lock held."""
    signed_in = await harness.user()
    response = await harness.client.put("/api/v1/admin/pricing/foo", json={}, headers=signed_in.headers)
    assert response.status_code == 403
    assert response.json()["code"] == "superuser_required"
    await harness.assert_next_write_succeeds(signed_in)


async def test_dead_token_on_a_write_then_login_succeeds_at_once(harness: Harness) -> None:
    signed_in = await harness.user()
    username = signed_in.user["username"]
    assert (await harness.client.post("/api/v1/auth/logout", headers=signed_in.headers)).status_code == 204
    for _ in range(20):  # on PostgreSQL, each used to leave a connection idle in transaction
        response = await harness.client.patch("/api/v1/users/me", json={"name": "B"}, headers=signed_in.headers)
        assert response.status_code == 401
    await harness.assert_everything_returned()
    again = await login(harness.client, username, PASSWORD)
    await harness.assert_next_write_succeeds(again)


async def test_missing_token_on_a_write(harness: Harness) -> None:
    signed_in = await harness.user()
    response = await harness.client.patch("/api/v1/users/me", json={"name": "B"})
    assert response.status_code == 401
    await harness.assert_next_write_succeeds(signed_in)


async def test_not_found_from_a_scope_guard(harness: Harness) -> None:
    owner = await harness.user()
    outsider = await harness.user()
    slug = f"org-{next(_names)}"
    created = await harness.client.post("/api/v1/orgs", json={"name": "Org", "slug": slug}, headers=owner.headers)
    assert created.status_code == 201, created.text
    response = await harness.client.patch(f"/api/v1/orgs/{slug}", json={"name": "Mine"}, headers=outsider.headers)
    assert response.status_code == 404
    await harness.assert_next_write_succeeds(outsider)
    await harness.assert_next_write_succeeds(owner)


async def test_conflict_from_a_service(harness: Harness) -> None:
    first = await harness.user()
    second = await harness.user()
    response = await harness.client.patch(
        "/api/v1/users/me", json={"username": first.user["username"]}, headers=second.headers
    )
    assert response.status_code == 409
    assert response.json()["code"] == "username_taken"
    await harness.assert_next_write_succeeds(second)


async def test_validation_failure_from_a_service(harness: Harness) -> None:
    signed_in = await harness.user()
    response = await harness.client.post(
        "/api/v1/auth/password",
        json={"current_password": "not-my-password-at-all", "new_password": "another-long-passphrase-9"},
        headers=signed_in.headers,
    )
    assert response.status_code == 422
    await harness.assert_next_write_succeeds(signed_in)


async def test_request_validation_failure(harness: Harness) -> None:
    signed_in = await harness.user()
    response = await harness.client.patch("/api/v1/users/me", json={"bogus": 1}, headers=signed_in.headers)
    assert response.status_code == 422
    await harness.assert_next_write_succeeds(signed_in)


async def test_unexpected_exception_rolls_back(harness: Harness) -> None:
    signed_in = await harness.user()
    response = await harness.client.post("/api/v1/test/boom", headers=signed_in.headers)
    assert response.status_code == 500
    assert response.json()["code"] == "internal_error"
    await harness.assert_everything_returned()
    me = await harness.client.get("/api/v1/auth/me", headers=signed_in.headers)
    assert me.json()["name"] != "Never saved"
    await harness.assert_next_write_succeeds(signed_in)


@pytest.mark.parametrize(("method", "path"), [("POST", "/api/v1/test/hang"), ("GET", "/api/v1/test/read-hang")])
async def test_cancelled_request_returns_the_connection(harness: Harness, method: str, path: str) -> None:
    """A client gone: the server cancels the request while it holds a connection (and, for the
    write, SQLite's write lock)."""
    signed_in = await harness.user()
    harness.hang_started.clear()
    request = asyncio.create_task(harness.client.request(method, path, headers=signed_in.headers))
    await asyncio.wait_for(harness.hang_started.wait(), timeout=30)
    assert harness.database.engine.pool.checkedout() == 1  # type: ignore[attr-defined]
    request.cancel()
    with pytest.raises(asyncio.CancelledError):
        await request
    await harness.assert_next_write_succeeds(signed_in)
    me = await harness.client.get("/api/v1/auth/me", headers=signed_in.headers)
    assert me.json()["name"] == "Next"


async def test_reads_answered_from_the_auth_cache_open_no_session(
    database_server: DatabaseServer, make_settings: Callable[..., Any]
) -> None:
    settings = build_settings(await database_server.clone("cached_reads"), AUTH_CACHE_SECONDS=60)
    database = Database.from_settings(settings)
    app = create_app(settings, database=database)
    checkouts = 0

    def count(*_args: object) -> None:
        nonlocal checkouts
        checkouts += 1

    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
                signed_in = await register(client, "cached")
                assert (await client.get("/api/v1/auth/me", headers=signed_in.headers)).status_code == 200
                event.listen(database.engine.sync_engine.pool, "checkout", count)
                for _ in range(5):
                    assert (await client.get("/api/v1/auth/me", headers=signed_in.headers)).status_code == 200
                event.remove(database.engine.sync_engine.pool, "checkout", count)
    finally:
        await database.dispose()
    assert checkouts == 0
