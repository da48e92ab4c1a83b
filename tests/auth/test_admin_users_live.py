"""Disabling an account, or signing it out, while it is in use, against uvicorn on a loopback port
and a fresh database with real commits: its open notification stream ends (woken at once by the
change's commit), its next request is a 401; and the last-superuser rule holds when two superusers disable each other at
the same moment. Waits are on events with a timeout, never fixed sleeps.

(The scan progress streams, SSE and WebSocket, are closed the same way: tests/scans/test_live.py.)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import update

from codepulse.app import create_app
from codepulse.auth.models import User
from codepulse.db import Database
from tests.auth.helpers import PASSWORD, SignedIn, register
from tests.databases import DatabaseServer, build_settings
from tests.helpers import FakeClock, served
from tests.notifications.test_stream import EventReader

WAIT = 20.0
USERS = "/api/v1/admin/users"


@dataclass
class Server:
    app: FastAPI
    database: Database
    client: httpx.AsyncClient

    async def superuser(self, username: str) -> SignedIn:
        who = await register(self.client, username)
        async with self.database.transaction() as session:
            await session.execute(update(User).where(User.username == username).values(is_superuser=True))
        return who


@pytest.fixture
async def server(database_server: DatabaseServer, clock: FakeClock, tmp_path: Path) -> AsyncIterator[Server]:
    url = await database_server.clone("admin_live")
    settings = build_settings(
        url,
        # Longer than any test waits: a stream that ends did not end at a keep-alive's look.
        NOTIFICATIONS_STREAM_KEEPALIVE_SECONDS=300,
        AUTH_CACHE_SECONDS=60,  # as in production: disabling must not leave a cached session alive
        VAR_DIR=tmp_path / "var",
        RATE_LIMIT_ENABLED=False,
    )
    database = Database.from_settings(settings)
    app = create_app(settings, database=database, clock=clock)
    try:
        async with (
            app.router.lifespan_context(app),
            served(app, scheme="http") as origin,
            httpx.AsyncClient(base_url=origin, timeout=WAIT) as client,
        ):
            yield Server(app, database, client)
    finally:
        await database.dispose()


async def test_a_disabled_account_s_open_stream_ends_and_its_next_request_is_401(server: Server) -> None:
    admin = await server.superuser("grace")
    ada = await register(server.client, "ada")
    assert (await server.client.get("/api/v1/auth/me", headers=ada.headers)).status_code == 200  # cached
    request = server.client.build_request("GET", "/api/v1/notifications/stream", headers=ada.headers)
    response = await server.client.send(request, stream=True)
    try:
        assert response.status_code == 200
        reader = EventReader(response)
        assert (await reader.next()).name == "ready"

        disabled = await server.client.patch(
            f"{USERS}/{ada.user['id']}", headers=admin.headers, json={"disabled": True}
        )
        assert disabled.status_code == 200, disabled.text

        last = await reader.next()  # at once: the keep-alive is minutes away
        assert (last.name, last.data["code"]) == ("signed_out", "account_disabled")
        with pytest.raises(EOFError):
            await reader.next()
    finally:
        await response.aclose()
    me = await server.client.get("/api/v1/auth/me", headers=ada.headers)
    assert (me.status_code, me.json()["code"]) == (401, "account_disabled")
    hub = server.app.state.notification_hub
    async with asyncio.timeout(WAIT):
        while hub.open_streams:  # noqa: ASYNC110 - the server's state, which has no event to wait on
            await asyncio.sleep(0.01)


@pytest.mark.parametrize("how", ["logout", "logout-all"])
async def test_signing_out_ends_the_session_s_open_stream_at_once(server: Server, how: str) -> None:
    """Signing out this session, or every session from another device: the stream of the ended
    session closes with `signed_out` at once, not at its keep-alive minutes later."""
    ada = await register(server.client, "ada")
    elsewhere = await server.client.post(
        "/api/v1/auth/login", json={"login": "ada", "password": PASSWORD}, headers={"User-Agent": "laptop"}
    )
    assert elsewhere.status_code == 200, elsewhere.text
    other = {"Authorization": f"Bearer {elsewhere.json()['token']}"}
    request = server.client.build_request("GET", "/api/v1/notifications/stream", headers=ada.headers)
    response = await server.client.send(request, stream=True)
    try:
        assert response.status_code == 200
        reader = EventReader(response)
        assert (await reader.next()).name == "ready"

        signed_out = await server.client.post(f"/api/v1/auth/{how}", headers=ada.headers if how == "logout" else other)
        assert signed_out.status_code == 204, signed_out.text

        last = await reader.next()
        assert (last.name, last.data["code"]) == ("signed_out", "session_revoked")
        with pytest.raises(EOFError):
            await reader.next()
    finally:
        await response.aclose()
    assert (await server.client.get("/api/v1/auth/me", headers=ada.headers)).status_code == 401


async def test_two_superusers_disabling_each_other_at_once_leave_one(server: Server) -> None:
    for round_ in range(3):
        ada, bob = await server.superuser(f"ada{round_}"), await server.superuser(f"bob{round_}")
        # Only these two are enabled superusers this round.
        async with server.database.transaction() as session:
            await session.execute(
                update(User).where(User.username.not_in([f"ada{round_}", f"bob{round_}"])).values(is_superuser=False)
            )
        answers = await asyncio.gather(
            server.client.patch(f"{USERS}/{bob.user['id']}", headers=ada.headers, json={"disabled": True}),
            server.client.patch(f"{USERS}/{ada.user['id']}", headers=bob.headers, json={"disabled": True}),
        )
        codes = sorted(
            (answer.status_code, answer.json().get("code", "")) for answer in answers if answer.status_code != 200
        )
        # One wins; the other is refused, by the rule or (having lost) because it is disabled now.
        assert sum(answer.status_code == 200 for answer in answers) == 1, [a.text for a in answers]
        assert codes in ([(401, "account_disabled")], [(409, "last_superuser")]), codes
        listed = await server.client.get(
            USERS,
            headers=(ada if answers[0].status_code == 200 else bob).headers,
            params={"superuser": True, "disabled": False},
        )
        assert len(listed.json()["items"]) == 1
