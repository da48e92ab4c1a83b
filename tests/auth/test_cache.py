"""The read-request authentication cache: fewer queries, and no stale access after changes."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from sqlalchemy import event, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from codepulse.app import create_app
from codepulse.auth.cache import AuthCache, CachedAuth
from codepulse.auth.dependencies import CurrentUser
from codepulse.auth.models import AuthSession, User
from codepulse.auth.sessions import SessionService
from codepulse.config import Settings
from codepulse.db import Database, DbSession, SessionRoute
from tests.auth.helpers import login, register
from tests.databases import DatabaseServer
from tests.factories import MakeUser
from tests.helpers import FakeClock, Mailbox, with_api_prefix


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


async def test_changes_through_the_api_apply_at_once(client: httpx.AsyncClient, mailbox: Mailbox) -> None:
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
    await mailbox.deliver()
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


@pytest.fixture
async def committing_app(
    database_server: DatabaseServer, make_settings: Callable[..., Settings], clock: FakeClock
) -> AsyncIterator[FastAPI]:
    """An app on a database of its own, with real commits: concurrent requests on their own
    connections, each seeing only what others committed."""
    settings = make_settings(DATABASE_URL=await database_server.clone("auth_cache_race"), AUTH_CACHE_SECONDS=5)
    app = create_app(settings, clock=clock)
    async with app.router.lifespan_context(app):
        yield app


class CommitGate:
    """Holds the next write session's commit until released: the point between a request's
    changes (and its cache invalidation) and its commit."""

    def __init__(self, database: Database, monkeypatch: pytest.MonkeyPatch) -> None:
        self.reached = asyncio.Event()
        self.release = asyncio.Event()
        self.armed = True
        make_session = database.session

        def session(*, write: bool = True) -> AsyncSession:
            made = make_session(write=write)
            if write and self.armed:
                self.armed = False
                commit = made.commit

                async def held_commit() -> None:
                    self.reached.set()
                    await self.release.wait()
                    await commit()

                made.commit = held_commit  # type: ignore[method-assign]
            return made

        monkeypatch.setattr(database, "session", session)


async def test_a_read_racing_logout_all_does_not_cache_the_revoked_session(
    committing_app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: logout-all cleared the cache before its commit; a read in between loaded the
    still-valid session and cached it, and the token kept working for AUTH_CACHE_SECONDS."""
    transport = httpx.ASGITransport(app=committing_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        ada = await register(client, "ada")
        assert (await client.get("/api/v1/auth/me", headers=ada.headers)).status_code == 200  # cached
        gate = CommitGate(committing_app.state.database, monkeypatch)
        logout = asyncio.create_task(client.post("/api/v1/auth/logout-all", headers=ada.headers))
        await asyncio.wait_for(gate.reached.wait(), 10)
        # Between the invalidation and the commit: the database still says "signed in".
        assert (await client.get("/api/v1/auth/me", headers=ada.headers)).status_code == 200
        gate.release.set()
        assert (await asyncio.wait_for(logout, 10)).status_code == 204
        after = await client.get("/api/v1/auth/me", headers=ada.headers)
        assert after.status_code == 401
        assert after.json()["code"] == "session_revoked"


def test_an_entry_read_before_an_invalidation_is_never_served(clock: FakeClock) -> None:
    """A read that loaded the rows before a change committed, and stores them after the
    post-commit invalidation, must not be served (nor one stored before it)."""
    cache = AuthCache(5, 100, clock)
    user = User(id=uuid.uuid4())
    auth_session = AuthSession(id=uuid.uuid4(), user_id=user.id)
    now = clock()
    early = CachedAuth(auth_session, user, now, now, cache.stamp())
    cache.put("early", early)
    late_stamp = cache.stamp()  # a read starts...
    cache.invalidate_user(user.id)  # ...the change commits...
    cache.put("late", CachedAuth(auth_session, user, now, now, late_stamp))  # ...the read stores
    assert cache.get("early") is None
    assert cache.get("late") is None
    fresh = CachedAuth(auth_session, user, now, now, cache.stamp())
    cache.put("fresh", fresh)
    assert cache.get("fresh") is fresh
    # Another user's entries are untouched by it.
    other = User(id=uuid.uuid4())
    mine = CachedAuth(AuthSession(id=uuid.uuid4(), user_id=other.id), other, now, now, late_stamp)
    cache.put("other", mine)
    assert cache.get("other") is mine


def test_the_invalidation_record_is_bounded(clock: FakeClock) -> None:
    cache = AuthCache(5, 3, clock)
    users = [User(id=uuid.uuid4()) for _ in range(5)]
    now = clock()
    stamp = cache.stamp()
    entry = CachedAuth(AuthSession(id=uuid.uuid4(), user_id=users[4].id), users[4], now, now, stamp)
    cache.put("kept", entry)
    for user in users[:4]:
        cache.invalidate_user(user.id)
    assert len(cache._invalidated) <= 3
    # Forgotten invalidations make older entries stale rather than valid again.
    assert cache.get("kept") is None


async def test_concurrent_misses_of_one_token_read_the_database_once(
    db: Database, make_user: MakeUser, clock: FakeClock
) -> None:
    account = await make_user("ada")
    cache = AuthCache(60, 100, clock)
    reads: list[str] = []

    def count(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        if "auth_sessions" in statement:
            reads.append(statement)

    async def authenticate() -> uuid.UUID:
        async with db.session() as session:
            authenticated, _touch = await SessionService(session, clock, cache).authenticate(
                account.token, use_cache=True
            )
            return authenticated.user.id

    event.listen(db.engine.sync_engine, "before_cursor_execute", count)
    try:
        users = await asyncio.gather(*(authenticate() for _ in range(8)))
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", count)
    assert users == [account.model.id] * 8
    assert len(reads) == 1  # the first miss read it; the seven others waited for that read
    assert len(cache) == 1
