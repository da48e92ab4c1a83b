"""The read-request authentication cache: fewer queries, and no stale access after changes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from sqlalchemy import event, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from codepulse.auth.dependencies import CurrentUser
from codepulse.auth.models import User
from codepulse.config import Settings
from codepulse.db import DbSession, SessionRoute
from tests.auth.helpers import login, register
from tests.helpers import FakeClock, with_api_prefix
from tests.stubs.smtp import SmtpServer


@pytest.fixture
async def client(
    make_settings: Callable[..., Settings], app_factory: Callable[[Settings], FastAPI]
) -> AsyncIterator[httpx.AsyncClient]:
    app = app_factory(make_settings(AUTH_CACHE_SECONDS=5))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        yield client


@contextmanager
def statements(engine: AsyncEngine, containing: str = "") -> Iterator[list[str]]:
    """The SQL statements run on `engine` inside the block (those containing `containing`)."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if containing in statement:
            seen.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)


def session_lookups(engine: AsyncEngine) -> AbstractContextManager[list[str]]:
    return statements(engine, "FROM auth_sessions JOIN users")


async def test_reads_reuse_a_recent_authentication(client: httpx.AsyncClient, engine: AsyncEngine) -> None:
    ada = await register(client, "ada")
    with session_lookups(engine) as lookups:
        for _ in range(3):
            assert (await client.get("/api/v1/auth/me", headers=ada.headers)).status_code == 200
    assert len(lookups) == 1
    with session_lookups(engine) as lookups:
        await client.patch("/api/v1/users/me", headers=ada.headers, json={"name": "Ada"})
    assert len(lookups) == 1  # writes always load fresh objects


async def test_changes_through_the_api_apply_at_once(client: httpx.AsyncClient, mailbox: SmtpServer) -> None:
    ada = await register(client, "ada")
    phone = await login(client, "ada")
    assert (await client.get("/api/v1/auth/me", headers=phone.headers)).json()["name"] == "Ada Lovelace"
    await client.patch("/api/v1/users/me", headers=ada.headers, json={"name": "Countess"})
    assert (await client.get("/api/v1/auth/me", headers=phone.headers)).json()["name"] == "Countess"
    await client.post("/api/v1/auth/logout", headers=phone.headers)
    assert (await client.get("/api/v1/auth/me", headers=phone.headers)).status_code == 401
    # An unauthenticated password reset ends cached sessions too.
    assert (await client.get("/api/v1/auth/me", headers=ada.headers)).status_code == 200
    await client.post("/api/v1/auth/password-reset/request", json={"email": "ada@example.com"})
    token = mailbox.link_token(mailbox.messages[-1], "/reset-password")
    await client.post("/api/v1/auth/password-reset", json={"token": token, "new_password": "brand-new-secret-99"})
    assert (await client.get("/api/v1/auth/me", headers=ada.headers)).status_code == 401


async def test_changes_behind_the_api_apply_within_the_ttl(
    client: httpx.AsyncClient, session: AsyncSession, clock: FakeClock
) -> None:
    """What another replica changes is seen here within AUTH_CACHE_SECONDS."""
    ada = await register(client, "ada")
    assert (await client.get("/api/v1/auth/me", headers=ada.headers)).json()["is_superuser"] is False
    await session.execute(update(User).where(User.username == "ada").values(is_superuser=True))
    await session.flush()
    assert (await client.get("/api/v1/auth/me", headers=ada.headers)).json()["is_superuser"] is False
    clock.advance(seconds=6)
    assert (await client.get("/api/v1/auth/me", headers=ada.headers)).json()["is_superuser"] is True


async def test_cached_sessions_still_expire(client: httpx.AsyncClient, clock: FakeClock) -> None:
    ada = await login_cli(client)
    assert (await client.get("/api/v1/auth/me", headers=ada)).status_code == 200
    clock.advance(days=1, seconds=1)
    response = await client.get("/api/v1/auth/me", headers=ada)
    assert response.status_code == 401
    assert response.json()["code"] == "session_expired"


async def login_cli(client: httpx.AsyncClient) -> dict[str, str]:
    ada = await register(client, "ada")
    created = await client.post(
        "/api/v1/auth/tokens", headers=ada.headers, json={"name": "short", "expires_in_days": 1}
    )
    return {"Authorization": f"Bearer {created.json()['token']}"}


async def test_a_cached_read_touches_no_database(client: httpx.AsyncClient, engine: AsyncEngine) -> None:
    ada = await register(client, "ada")
    assert (await client.get("/api/v1/auth/me", headers=ada.headers)).status_code == 200
    with statements(engine) as executed:
        response = await client.get("/api/v1/auth/me", headers=ada.headers)
    assert response.status_code == 200
    assert response.json()["username"] == "ada"
    assert executed == []


def _session_probe_router() -> APIRouter:
    router = APIRouter(prefix="/probe", tags=["probe"], route_class=SessionRoute)

    @router.post("/user-first")
    async def user_first(user: CurrentUser, session: DbSession) -> dict[str, bool]:
        return {"attached": user in session}

    @router.post("/session-first")
    async def session_first(session: DbSession, user: CurrentUser) -> dict[str, bool]:
        return {"attached": user in session}

    @router.post("/rename")
    async def rename(user: CurrentUser, session: DbSession) -> dict[str, str]:
        user.name = "Renamed In The Request Session"
        return {"status": "ok"}

    @router.post("/no-session")
    async def no_session(user: CurrentUser) -> dict[str, str]:
        return {"username": user.username}

    return router


@pytest.mark.parametrize("cache_seconds", [0, 5])
async def test_writes_authenticate_in_the_session_they_write_with(
    make_settings: Callable[..., Settings], app_factory: Callable[[Settings], FastAPI], cache_seconds: int
) -> None:
    settings = make_settings(AUTH_CACHE_SECONDS=cache_seconds)
    app = app_factory(settings)
    app.include_router(with_api_prefix(_session_probe_router(), settings))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        ada = await register(client, "ada")
        for path in ("/api/v1/probe/user-first", "/api/v1/probe/session-first"):
            response = await client.post(path, headers=ada.headers)
            assert response.json() == {"attached": True}, path
        assert (await client.post("/api/v1/probe/rename", headers=ada.headers)).status_code == 200
        me = await client.get("/api/v1/auth/me", headers=ada.headers)
        assert me.json()["name"] == "Renamed In The Request Session"
        # An endpoint that authenticates a write but never asks for the session still answers,
        # and the session made for it is ended: the next write goes through.
        assert (await client.post("/api/v1/probe/no-session", headers=ada.headers)).json() == {"username": "ada"}
        assert (await client.post("/api/v1/probe/rename", headers=ada.headers)).status_code == 200
