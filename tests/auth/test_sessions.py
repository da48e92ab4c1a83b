from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from datetime import timedelta

import httpx
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from codepulse.app import create_app
from codepulse.auth.models import AuthSession
from tests.auth.helpers import login, register
from tests.databases import DatabaseServer, build_settings
from tests.helpers import FakeClock


async def _session_row(session: AsyncSession, token: str) -> AuthSession:
    session.expire_all()
    digest = hashlib.sha256(token.encode()).hexdigest()
    return (await session.scalars(select(AuthSession).where(AuthSession.token_hash == digest))).one()


async def test_only_the_token_hash_is_stored(
    client: httpx.AsyncClient, session: AsyncSession, logs: Callable[[str], list[dict[str, object]]]
) -> None:
    ada = await register(client, "ada")
    cli = await client.post("/api/v1/auth/tokens", headers=ada.headers, json={"name": "laptop"})
    raw_tokens = [ada.token, cli.json()["token"]]
    values: list[str] = []
    for table in ("auth_sessions", "users", "one_time_tokens"):
        rows = (await session.execute(text(f"SELECT * FROM {table}"))).all()  # noqa: S608 - fixed table names
        values.extend(str(value) for row in rows for value in row)
    dump = " ".join(values)
    for raw in raw_tokens:
        assert raw not in dump
        assert raw.removeprefix("cp_") not in dump
        assert hashlib.sha256(raw.encode()).hexdigest() in dump
    await client.get("/api/v1/auth/me", headers=ada.headers)
    logged = " ".join(str(line) for name in ("http.request", "user.registered") for line in logs(name))
    assert all(raw not in logged for raw in raw_tokens)


async def test_web_session_slides_and_caps_at_90_days(
    client: httpx.AsyncClient, session: AsyncSession, clock: FakeClock
) -> None:
    idle, absolute = timedelta(days=30), timedelta(days=90)
    ada = await register(client, "ada")
    start = clock.now
    row = await _session_row(session, ada.token)
    assert (row.expires_at, row.absolute_expires_at) == (start + idle, start + absolute)
    # Before half the idle lifetime: nothing to extend.
    clock.advance(days=10)
    assert (await client.get("/api/v1/auth/me", headers=ada.headers)).status_code == 200
    assert (await _session_row(session, ada.token)).expires_at == start + idle
    # Past half: extended to 30 days from now.
    clock.advance(days=6)
    assert (await client.get("/api/v1/auth/me", headers=ada.headers)).status_code == 200
    assert (await _session_row(session, ada.token)).expires_at == clock.now + idle
    # Kept alive every 20 days, it still ends at 90.
    for _ in range(3):
        clock.advance(days=20)
        assert (await client.get("/api/v1/auth/me", headers=ada.headers)).status_code == 200
    assert (await _session_row(session, ada.token)).expires_at == start + absolute
    clock.advance(days=15)
    expired = await client.get("/api/v1/auth/me", headers=ada.headers)
    assert expired.status_code == 401
    assert expired.json()["code"] == "session_expired"


async def test_idle_web_session_expires_after_30_days(client: httpx.AsyncClient, clock: FakeClock) -> None:
    ada = await register(client, "ada")
    clock.advance(days=30)
    response = await client.get("/api/v1/auth/me", headers=ada.headers)
    assert response.status_code == 401
    assert response.json()["code"] == "session_expired"


async def test_last_used_is_written_at_most_once_a_minute(
    client: httpx.AsyncClient, session: AsyncSession, clock: FakeClock
) -> None:
    ada = await register(client, "ada")
    created = (await _session_row(session, ada.token)).last_used_at
    clock.advance(seconds=30)
    await client.get("/api/v1/auth/me", headers=ada.headers)
    assert (await _session_row(session, ada.token)).last_used_at == created
    clock.advance(seconds=31)
    await client.get("/api/v1/auth/me", headers=ada.headers)
    assert (await _session_row(session, ada.token)).last_used_at == clock.now
    # A write request touches inside its own transaction.
    clock.advance(minutes=2)
    await client.patch("/api/v1/users/me", headers=ada.headers, json={"name": "Ada"})
    assert (await _session_row(session, ada.token)).last_used_at == clock.now


async def test_cli_tokens(client: httpx.AsyncClient, session: AsyncSession, clock: FakeClock) -> None:
    ada = await register(client, "ada")
    too_long = await client.post(
        "/api/v1/auth/tokens", headers=ada.headers, json={"name": "laptop", "expires_in_days": 366}
    )
    assert too_long.status_code == 422
    created = await client.post(
        "/api/v1/auth/tokens", headers=ada.headers, json={"name": "laptop", "expires_in_days": 7}
    )
    assert created.status_code == 201
    body = created.json()
    assert body["name"] == "laptop"
    assert body["token"].startswith("cp_")
    cli = {"Authorization": f"Bearer {body['token']}"}
    assert (await client.get("/api/v1/auth/me", headers=cli)).json()["username"] == "ada"
    row = await _session_row(session, body["token"])
    assert row.kind == "cli"
    # CLI tokens do not slide.
    clock.advance(days=6)
    assert (await client.get("/api/v1/auth/me", headers=cli)).status_code == 200
    clock.advance(days=1)
    assert (await client.get("/api/v1/auth/me", headers=cli)).status_code == 401
    anonymous = await client.post("/api/v1/auth/tokens", json={"name": "x"})
    assert anonymous.status_code == 401


async def test_sessions_list_flags_the_current_one(client: httpx.AsyncClient) -> None:
    ada = await register(client, "ada", headers={"User-Agent": "codepulse-web/1.0"})
    second = await login(client, "ada")
    await client.post("/api/v1/auth/tokens", headers=ada.headers, json={"name": "ci"})
    listed = await client.get("/api/v1/auth/sessions", headers=ada.headers)
    assert listed.status_code == 200
    items = listed.json()["items"]
    assert len(items) == 3
    assert [item["current"] for item in items].count(True) == 1
    current = next(item for item in items if item["current"])
    assert current["user_agent"] == "codepulse-web/1.0"
    assert current["ip"] == "127.0.0.1"
    assert {item["kind"] for item in items} == {"web", "cli"}
    paged = await client.get("/api/v1/auth/sessions", headers=second.headers, params={"limit": 2})
    assert len(paged.json()["items"]) == 2
    rest = await client.get(
        "/api/v1/auth/sessions", headers=second.headers, params={"limit": 2, "cursor": paged.json()["next_cursor"]}
    )
    assert len(rest.json()["items"]) == 1
    assert rest.json()["next_cursor"] is None


async def test_revoke_one_session_only_my_own(client: httpx.AsyncClient) -> None:
    ada = await register(client, "ada")
    ada_phone = await login(client, "ada")
    grace = await register(client, "grace")
    items = (await client.get("/api/v1/auth/sessions", headers=ada.headers)).json()["items"]
    phone_id = next(item["id"] for item in items if not item["current"])
    stranger = await client.delete(f"/api/v1/auth/sessions/{phone_id}", headers=grace.headers)
    assert stranger.status_code == 404
    assert stranger.json()["code"] == "session_not_found"
    assert (await client.delete(f"/api/v1/auth/sessions/{phone_id}", headers=ada.headers)).status_code == 204
    revoked = await client.get("/api/v1/auth/me", headers=ada_phone.headers)
    assert revoked.status_code == 401
    assert revoked.json()["code"] == "session_revoked"
    assert (await client.get("/api/v1/auth/me", headers=ada.headers)).status_code == 200
    bad_id = await client.delete("/api/v1/auth/sessions/not-a-uuid", headers=ada.headers)
    assert bad_id.status_code == 422


async def test_logout_and_logout_all(client: httpx.AsyncClient) -> None:
    ada = await register(client, "ada")
    phone = await login(client, "ada")
    laptop = await login(client, "ada")
    assert (await client.post("/api/v1/auth/logout", headers=phone.headers)).status_code == 204
    assert (await client.get("/api/v1/auth/me", headers=phone.headers)).status_code == 401
    assert (await client.get("/api/v1/auth/me", headers=laptop.headers)).status_code == 200
    assert (await client.post("/api/v1/auth/logout-all", headers=ada.headers)).status_code == 204
    for signed_in in (ada, laptop):
        assert (await client.get("/api/v1/auth/me", headers=signed_in.headers)).status_code == 401


async def test_a_burst_of_requests_due_for_a_touch_does_not_exhaust_the_pool(
    database_server: DatabaseServer, clock: FakeClock
) -> None:
    """Regression: the touch took a second pooled connection while the request held one; a burst
    bigger than the pool then waited forever. Now it runs after the response."""
    settings = build_settings(
        await database_server.clone("burst"), DB_POOL_SIZE=2, DB_MAX_OVERFLOW=0, DB_POOL_TIMEOUT_SECONDS=5
    )
    app = create_app(settings, clock=clock)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
    ):
        ada = await register(client, "ada")
        clock.advance(minutes=5)
        responses = await asyncio.wait_for(
            asyncio.gather(*(client.get("/api/v1/auth/me", headers=ada.headers) for _ in range(12))), 30
        )
    assert [r.status_code for r in responses] == [200] * 12
