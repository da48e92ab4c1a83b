"""Rate limits, the first superuser, the Superuser dependency and the purge job."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import httpx
from fastapi import APIRouter, FastAPI
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from codepulse.auth.dependencies import Superuser
from codepulse.auth.jobs import purge_expired
from codepulse.auth.models import AuthSession, OneTimeToken, User
from codepulse.config import Settings
from codepulse.db import Database, SessionRoute
from codepulse.scheduler import JobContext
from tests.auth.helpers import PASSWORD, register
from tests.helpers import FakeClock, with_api_prefix


async def test_login_is_rate_limited_per_account(client: httpx.AsyncClient) -> None:
    await register(client, "ada")
    for _ in range(5):
        failed = await client.post("/api/v1/auth/login", json={"login": "ada", "password": "wrong-password-00"})
        assert failed.status_code == 401
    limited = await client.post("/api/v1/auth/login", json={"login": "ADA", "password": PASSWORD})
    assert limited.status_code == 429
    assert limited.json()["code"] == "rate_limited"
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    # Another account from the same address is not locked by ada's failures.
    await register(client, "grace")
    ok = await client.post("/api/v1/auth/login", json={"login": "grace", "password": PASSWORD})
    assert ok.status_code == 200


async def test_login_limit_is_one_bucket_per_account_whatever_login_is_typed(client: httpx.AsyncClient) -> None:
    """Regression: the limit was keyed by the login string, so the username and the email of one
    account were two buckets (twice the guesses)."""
    await register(client, "ada", email="ada@example.com")
    for login in ("ada", "ada@example.com", "ADA", " Ada@Example.com ", "ada"):
        failed = await client.post("/api/v1/auth/login", json={"login": login, "password": "wrong-password-00"})
        assert failed.status_code == 401
    for login in ("ada@example.com", "ada"):
        limited = await client.post("/api/v1/auth/login", json={"login": login, "password": PASSWORD})
        assert limited.status_code == 429, login


async def test_successful_logins_do_not_count(client: httpx.AsyncClient) -> None:
    await register(client, "ada")
    for _ in range(8):
        assert (await client.post("/api/v1/auth/login", json={"login": "ada", "password": PASSWORD})).status_code == 200


async def test_login_is_rate_limited_per_ip_across_accounts(client: httpx.AsyncClient) -> None:
    statuses = []
    for n in range(11):
        response = await client.post("/api/v1/auth/login", json={"login": f"user{n}", "password": "guess-guess-1"})
        statuses.append(response.status_code)
    assert statuses == [401] * 10 + [429]


async def test_register_is_rate_limited_per_ip(client: httpx.AsyncClient) -> None:
    for n in range(5):
        await register(client, f"user{n}")
    limited = await client.post(
        "/api/v1/auth/register",
        json={"email": "six@example.com", "password": PASSWORD, "username": "six", "name": "Six"},
    )
    assert limited.status_code == 429
    assert "retry-after" in limited.headers


async def test_password_reset_requests_are_rate_limited_per_account(client: httpx.AsyncClient) -> None:
    statuses = [
        (await client.post("/api/v1/auth/password-reset/request", json={"email": "ada@example.com"})).status_code
        for _ in range(4)
    ]
    assert statuses == [202, 202, 202, 429]


async def test_first_superuser_is_created_once(
    make_settings: Callable[..., Settings], app_factory: Callable[[Settings], FastAPI], session: AsyncSession
) -> None:
    settings = make_settings(
        FIRST_SUPERUSER_EMAIL="Root@Example.com", FIRST_SUPERUSER_PASSWORD="root-password-for-tests"
    )
    for _ in range(2):
        app = app_factory(settings)
        async with app.router.lifespan_context(app):
            pass
    users = (await session.scalars(select(User).where(User.email == "root@example.com"))).all()
    assert len(users) == 1
    assert users[0].is_superuser
    assert users[0].email_verified
    assert users[0].profile_public is False


async def test_superuser_dependency(
    settings: Settings, app_factory: Callable[[Settings], FastAPI], session: AsyncSession
) -> None:
    router = APIRouter(prefix="/_test", tags=["test"], route_class=SessionRoute)

    @router.get("/admin")
    async def admin_only(user: Superuser) -> dict[str, str]:
        return {"hello": user.username}

    app = app_factory(settings)
    app.include_router(with_api_prefix(router, settings))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        ada = await register(client, "ada")
        refused = await client.get("/api/v1/_test/admin", headers=ada.headers)
        assert refused.status_code == 403
        assert refused.json()["code"] == "superuser_required"
        assert (await client.get("/api/v1/_test/admin")).status_code == 401
        user = (await session.scalars(select(User).where(User.username == "ada"))).one()
        user.is_superuser = True
        await session.flush()
        allowed = await client.get("/api/v1/_test/admin", headers=ada.headers)
        assert allowed.json() == {"hello": "ada"}


async def test_purge_job_removes_expired_sessions_and_tokens(
    client: httpx.AsyncClient, session: AsyncSession, db: Database, settings: Settings, clock: FakeClock
) -> None:
    ada = await register(client, "ada")
    await client.post("/api/v1/auth/tokens", headers=ada.headers, json={"name": "short", "expires_in_days": 1})
    await client.post("/api/v1/auth/tokens", headers=ada.headers, json={"name": "long", "expires_in_days": 300})
    await client.post("/api/v1/auth/verify-email/request", headers=ada.headers)

    async def counts() -> tuple[int, int]:
        sessions = await session.scalar(select(func.count()).select_from(AuthSession))
        tokens = await session.scalar(select(func.count()).select_from(OneTimeToken))
        return int(sessions or 0), int(tokens or 0)

    assert await counts() == (3, 2)  # verification tokens: registration's, and the one asked for
    await purge_expired(JobContext(db, settings, clock.now + timedelta(days=2)))
    # The 1-day CLI token and the 24 h verification tokens are gone; the web session and the
    # 300-day token stay.
    assert await counts() == (2, 0)
    await purge_expired(JobContext(db, settings, clock.now + timedelta(days=100)))
    assert await counts() == (1, 0)
