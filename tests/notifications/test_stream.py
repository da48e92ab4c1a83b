"""The live notification stream, served by uvicorn on a loopback port and read by a real streaming
HTTP client while other tasks (and another process) create notifications.

Each test has a fresh database with real commits: on PostgreSQL a notification reaches the stream
through LISTEN/NOTIFY, which only a commit sends. Waits are on events, never fixed sleeps.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from codepulse.app import create_app
from codepulse.config import Settings
from codepulse.db import Database
from codepulse.notifications.live import NotificationHub
from codepulse.notifications.service import notify
from tests.auth.helpers import SignedIn, register
from tests.databases import DatabaseServer, build_settings
from tests.helpers import FakeClock, served

WAIT = 20.0  # the most any event may take before the test fails (never a sleep)


@dataclass
class Event:
    name: str | None = None
    id: str | None = None
    data: Any = None
    comment: str | None = None


class EventReader:
    """Parses an SSE response as it arrives."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines = response.aiter_lines()

    async def next(self, *, comments: bool = False) -> Event:
        return await asyncio.wait_for(self._next(comments), timeout=WAIT)

    async def _next(self, comments: bool) -> Event:
        event = Event()
        async for line in self._lines:
            if line.startswith(":"):
                if comments:
                    return Event(comment=line[1:].strip())
                continue
            if line == "":
                if event.name or event.data is not None:
                    return event
                continue
            name, _, value = line.partition(": ")
            if name == "event":
                event.name = value
            elif name == "id":
                event.id = value
            elif name == "data":
                event.data = json.loads(value)
        raise EOFError("the stream ended")

    async def notification(self) -> Event:
        """The next `notification` event, skipping the `unread_count` events that follow them (as a
        client that only knows `ready` and `notification` does)."""
        event = await self.next()
        while event.name == "unread_count":
            event = await self.next()
        assert event.name == "notification", event
        return event


@dataclass
class Live:
    app: FastAPI
    database: Database
    settings: Settings
    clock: FakeClock
    origin: str
    client: httpx.AsyncClient
    streams: list[httpx.Response] = field(default_factory=list)

    @property
    def hub(self) -> NotificationHub:
        hub: NotificationHub = self.app.state.notification_hub
        return hub

    async def user(self, username: str) -> SignedIn:
        return await register(self.client, username)

    async def open(self, who: SignedIn, last_event_id: str | None = None) -> EventReader:
        headers = dict(who.headers)
        if last_event_id is not None:
            headers["Last-Event-ID"] = last_event_id
        request = self.client.build_request("GET", "/api/v1/notifications/stream", headers=headers)
        response = await self.client.send(request, stream=True)
        self.streams.append(response)
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        reader = EventReader(response)
        ready = await reader.next()
        assert ready.name == "ready"
        return reader

    async def notify(self, who: SignedIn, title: str, dedup_key: str | None = None) -> None:
        async with self.database.transaction() as session:
            await notify(
                session,
                [uuid.UUID(who.user["id"])],
                "scan_completed",
                title,
                "body",
                {},
                dedup_key or title,
                now=self.clock(),
            )


@pytest.fixture
async def live(database_server: DatabaseServer, clock: FakeClock, tmp_path: Any) -> AsyncIterator[Live]:
    url = await database_server.clone("stream")
    # A small pool: a burst of streams must not need a connection each, even briefly.
    settings = build_settings(
        url,
        NOTIFICATIONS_STREAM_KEEPALIVE_SECONDS=0.5,
        VAR_DIR=tmp_path / "var",
        DB_POOL_SIZE=3,
        DB_MAX_OVERFLOW=0,
        DB_POOL_TIMEOUT_SECONDS=5,
        RATE_LIMIT_ENABLED=False,  # twenty registrations from one address
    )
    database = Database.from_settings(settings)
    app = create_app(settings, database=database, clock=clock)
    try:
        async with (
            app.router.lifespan_context(app),
            served(app, scheme="http") as origin,
            httpx.AsyncClient(base_url=origin, timeout=WAIT) as client,
        ):
            live = Live(app, database, settings, clock, origin, client)
            try:
                yield live
            finally:
                for response in live.streams:
                    await response.aclose()
    finally:
        await database.dispose()


async def test_a_notification_reaches_the_stream_of_its_user_only(live: Live) -> None:
    ada, bob = await live.user("ada"), await live.user("bob")
    ada_stream, bob_stream = await live.open(ada), await live.open(bob)
    await live.notify(bob, "for bob")
    await live.notify(ada, "for ada")
    event = await ada_stream.notification()
    assert event.data["title"] == "for ada"
    assert event.data["kind"] == "scan_completed"
    assert event.id is not None
    assert (await bob_stream.notification()).data["title"] == "for bob"


async def test_streams_share_one_listener_and_hold_no_connection_while_waiting(live: Live) -> None:
    users = [await live.user(name) for name in ("ada", "bob", "cyd")]
    streams = [await live.open(user) for user in users for _ in range(2)]
    assert live.hub.open_streams == 6
    assert live.hub.listening
    listener_connections = 1 if live.database.dialect == "postgresql" else 0
    assert live.database.engine.pool.checkedout() == listener_connections  # type: ignore[attr-defined]
    if live.database.dialect == "postgresql":
        async with live.database.transaction(write=False) as session:
            listening = await session.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN%'"
                )
            )
        assert listening == 1
    await live.notify(users[1], "hello")
    for reader in streams[2:4]:
        assert (await reader.notification()).data["title"] == "hello"
    for response in live.streams:
        await response.aclose()
    live.streams.clear()
    await asyncio.wait_for(_until(lambda: live.hub.open_streams == 0), timeout=WAIT)


async def _until(condition: Any) -> None:
    while not condition():  # noqa: ASYNC110 - a condition on the server's state, which has no event to wait on
        await asyncio.sleep(0.01)


async def test_a_burst_of_streams_opens_on_a_small_pool(live: Live) -> None:
    """Each stream authenticates with the request's connection and gives it back before it starts
    the process's listener (which needs one more): twenty at once on a pool of three all open."""
    users = [await live.user(f"user{number}") for number in range(20)]
    readers = await asyncio.gather(*(live.open(user) for user in users))
    assert live.hub.open_streams == 20
    await live.notify(users[7], "seventh")
    assert (await readers[7].notification()).data["title"] == "seventh"


async def test_last_event_id_resumes_without_missing_or_repeating(live: Live) -> None:
    ada = await live.user("ada")
    first = await live.open(ada)
    await live.notify(ada, "one")
    seen = await first.notification()
    await live.streams.pop().aclose()

    await live.notify(ada, "two")  # while disconnected
    live.clock.advance(seconds=1)
    await live.notify(ada, "three")
    again = await live.open(ada, last_event_id=seen.id)
    assert [(await again.notification()).data["title"] for _ in range(2)] == ["two", "three"]
    await live.notify(ada, "four")
    assert (await again.notification()).data["title"] == "four"


async def test_an_idle_stream_gets_keep_alive_comments(live: Live) -> None:
    reader = await live.open(await live.user("ada"))
    event = await reader.next(comments=True)
    assert event.comment == "ping"


async def test_a_bad_last_event_id_or_no_token_is_a_problem(live: Live) -> None:
    ada = await live.user("ada")
    bad = await live.client.get("/api/v1/notifications/stream", headers={**ada.headers, "Last-Event-ID": "not-an-id"})
    assert bad.status_code == 400
    assert bad.headers["content-type"] == "application/problem+json"
    assert bad.json()["code"] == "invalid_last_event_id"
    anonymous = await live.client.get("/api/v1/notifications/stream")
    assert anonymous.status_code == 401
    assert live.hub.open_streams == 0


async def test_a_notification_created_in_another_process_reaches_the_stream(live: Live) -> None:
    """PostgreSQL: through LISTEN/NOTIFY. SQLite serves from one process; another process's
    commit is found by the stream's look at each keep-alive instead."""
    ada = await live.user("ada")
    reader = await live.open(ada)
    script = textwrap.dedent(
        f"""
        import asyncio, uuid
        from datetime import datetime, UTC
        from codepulse.config import load_settings
        from codepulse.db import Database
        from codepulse.notifications.service import notify

        async def main():
            settings = load_settings(_env_file=None, DATABASE_URL={str(live.settings.DATABASE_URL)!r},
                                     SECRET_KEY={live.settings.secret_key!r}, ENVIRONMENT="test")
            database = Database.from_settings(settings)
            async with database.transaction() as session:
                await notify(session, [uuid.UUID({ada.user["id"]!r})], "scan_failed", "from afar", "b", {{}},
                             "afar", now=datetime.fromisoformat({live.clock().isoformat()!r}))
            await database.dispose()

        asyncio.run(main())
        """
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, env={**os.environ}, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    _out, errors = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, errors.decode()
    event = await reader.notification()
    assert event.data["title"] == "from afar"
    assert event.data["kind"] == "scan_failed"


async def test_a_lost_listener_connection_is_replaced_and_nothing_is_missed(live: Live) -> None:
    """PostgreSQL: the listener's connection is cut (a database restart, a proxy); the next
    keep-alive starts another and every stream looks again. SQLite has no such connection: the
    same notification arrives through the in-process wake-up."""
    ada = await live.user("ada")
    reader = await live.open(ada)
    if live.database.dialect == "postgresql":
        async with live.database.transaction() as session:
            cut = await session.scalar(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND query LIKE 'LISTEN%'"
                )
            )
        assert cut == 1
    await live.notify(ada, "after the cut")  # NOTIFY reaches no listener on PostgreSQL
    assert (await reader.notification()).data["title"] == "after the cut"
    await asyncio.wait_for(_until(lambda: live.hub.listening), timeout=WAIT)
    await live.notify(ada, "and live again")
    assert (await reader.notification()).data["title"] == "and live again"


async def _count_after_notifications(reader: EventReader) -> tuple[list[str], int]:
    """The titles of the `notification` events up to the next `unread_count` event, and its count."""
    titles: list[str] = []
    while True:
        event = await reader.next()
        if event.name == "unread_count":
            return titles, event.data["unread_count"]
        assert event.name == "notification", event
        titles.append(event.data["title"])


async def test_reads_elsewhere_send_every_stream_the_lower_unread_count(live: Live) -> None:
    """The count goes down on every open stream of the user (two tabs) when notifications are read
    or deleted through the API; the events carry `{"unread_count"}` (ready's shape), with no id."""
    ada, bob = await live.user("ada"), await live.user("bob")
    tab, other_tab, bobs = await live.open(ada), await live.open(ada), await live.open(bob)
    for title in ("one", "two", "three"):
        await live.notify(ada, title)
        live.clock.advance(seconds=1)  # the stream's order is creation time's
    for reader in (tab, other_tab):
        titles: list[str] = []
        count = 0
        # One look may carry one, two or all three (and count one the next look sends): each
        # look ends with the count as it was after it.
        while len(titles) < 3 or count != 3:
            more, count = await _count_after_notifications(reader)
            titles += more
        assert titles == ["one", "two", "three"]
    listed = (await live.client.get("/api/v1/notifications", headers=ada.headers)).json()["items"]
    ids = {item["title"]: item["id"] for item in listed}

    read = await live.client.post(f"/api/v1/notifications/{ids['three']}/read", headers=ada.headers)
    assert read.status_code == 200
    for reader in (tab, other_tab):
        event = await reader.next()
        assert (event.name, event.data, event.id) == ("unread_count", {"unread_count": 2}, None)

    # Reading it again changes nothing (no event); deleting an unread one does.
    assert (await live.client.post(f"/api/v1/notifications/{ids['three']}/read", headers=ada.headers)).is_success
    deleted = await live.client.delete(f"/api/v1/notifications/{ids['two']}", headers=ada.headers)
    assert deleted.status_code == 204
    for reader in (tab, other_tab):
        assert await _count_after_notifications(reader) == ([], 1)

    marked = await live.client.post("/api/v1/notifications/read-all", headers=ada.headers)
    assert marked.json() == {"updated": 1}
    for reader in (tab, other_tab):
        assert await _count_after_notifications(reader) == ([], 0)

    # Bob's stream heard none of it: his first event is his own notification and its count.
    await live.notify(bob, "for bob")
    assert await _count_after_notifications(bobs) == (["for bob"], 1)
