"""The leaderboard and notifications pages, route by route: the boards with data (my row
highlighted, my standing shown when off the page), organization boards for members only (an
outsider gets the 404 page), the community benchmarks with my percentiles; the notifications list,
mark one and all read (CSRF refused without the token; another user's notification is a 404),
preferences; the bell's page stream for its owner, not for a signed-out browser nor on the API.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from html import unescape
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession

from codepulse.app import create_app
from codepulse.config import Settings
from codepulse.db import Database
from codepulse.leaderboard.benchmarks import compute_benchmarks
from codepulse.leaderboard.cache import board_cache
from codepulse.leaderboard.ranking import recompute_rankings
from codepulse.notifications.service import notify
from codepulse.orgs.models import Role
from codepulse.web import leaderboard as web_leaderboard
from codepulse.web.session import SESSION_COOKIE
from tests.auth.helpers import register
from tests.databases import DatabaseServer, build_settings
from tests.factories import Account, MakeMember, MakeOrg, MakeUser
from tests.helpers import FakeClock, served
from tests.leaderboard.helpers import usage
from tests.web.helpers import csrf_of, use_session

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
TODAY = date(2026, 12, 3)
WAIT = 20.0


@pytest.fixture(autouse=True)
def _fresh_cache(clock: FakeClock) -> None:
    board_cache.clear()
    clock.now = NOW


def _html(response: httpx.Response, status_code: int = 200) -> str:
    assert response.status_code == status_code, (response.status_code, response.text[:2000])
    assert response.headers["content-type"].startswith("text/html")
    return response.text


def _rows(html: str) -> list[str]:
    return re.findall(r'data-username="([^"]+)"', html)


async def _ranked(session: AsyncSession, db: Database, settings: Settings, users: list[Account]) -> None:
    """usage for each user today, the first the most; the boards and benchmarks computed."""
    for index, who in enumerate(users):
        await usage(session, who, TODAY, output=1_000 * (len(users) - index))
    await recompute_rankings(db, settings, NOW)
    await compute_benchmarks(db, settings, NOW)


async def test_the_leaderboard_shows_the_board_my_row_and_benchmarks(
    client: httpx.AsyncClient, session: AsyncSession, db: Database, settings: Settings, make_user: MakeUser
) -> None:
    ada, bob, cyd = await make_user("ada"), await make_user("bob"), await make_user("cyd")
    await _ranked(session, db, settings, [ada, bob, cyd])
    use_session(client, bob.token)
    html = _html(await client.get("/leaderboard?period=day&metric=tokens"))
    assert _rows(html) == ["ada", "bob", "cyd"]
    assert re.search(r'<tr class="me" aria-current="true" data-testid="my-row" data-username="bob">', html)
    assert 'data-testid="my-rank">#2<' in html
    assert 'data-testid="nav-leaderboard"' in html
    assert 'data-testid="bell"' in html
    # The community benchmarks, with my percentile: one below me, one above, of three.
    assert 'data-testid="percentile-tokens_per_active_day">50<' in html
    assert 'data-testid="no-benchmarks"' not in html
    # The pickers: another metric, and a period without usage.
    assert 'data-testid="my-rank">#1<' in _html(await client.get("/leaderboard?period=all&metric=active_days"))
    # An unknown period is the 422 page, not JSON.
    _html(await client.get("/leaderboard?period=decade"), 422)


async def test_my_standing_shows_when_off_the_page(
    client: httpx.AsyncClient,
    session: AsyncSession,
    db: Database,
    settings: Settings,
    make_user: MakeUser,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(web_leaderboard, "BOARD_LIMIT", 2)
    users = [await make_user(name) for name in ("ada", "bob", "cyd")]
    await _ranked(session, db, settings, users)
    use_session(client, users[2].token)
    html = _html(await client.get("/leaderboard?period=day"))
    assert _rows(html) == ["ada", "bob"]
    assert 'class="me off-page"' in html
    assert "not on this page" in html
    assert 'data-testid="my-rank">#3<' in html
    [next_url] = re.findall(r'<a href="([^"]+)" data-testid="next-page">', html)
    second = _html(await client.get(unescape(next_url)))
    assert _rows(second) == ["cyd"]
    assert 'data-testid="my-row" data-username="cyd"' in second
    assert "off-page" not in second


async def test_empty_boards_and_a_private_profile(client: httpx.AsyncClient, make_user: MakeUser) -> None:
    ada = await make_user("ada", profile_public=False)
    use_session(client, ada.token)
    html = _html(await client.get("/leaderboard"))
    assert 'data-testid="empty-board"' in html
    assert "not been computed yet" in html
    assert 'data-testid="no-benchmarks"' in html


async def test_organization_boards_are_for_members_only(
    client: httpx.AsyncClient,
    session: AsyncSession,
    db: Database,
    settings: Settings,
    make_user: MakeUser,
    make_org: MakeOrg,
    make_member: MakeMember,
) -> None:
    owner = await make_user("olive")
    org = await make_org(owner, slug="engines", name="Analytical Engines")
    viewer = await make_member(org, Role.VIEWER, "vic")
    outsider = await make_user("otto")
    await make_org(outsider, slug="looms")
    await _ranked(session, db, settings, [outsider, owner, viewer])
    use_session(client, viewer.token)
    html = _html(await client.get("/orgs/engines/leaderboard?period=day"))
    assert _rows(html) == ["olive", "vic"]  # not otto, who ranks first in public
    assert 'data-testid="my-rank">#2<' in html
    assert 'href="/orgs/engines/leaderboard" aria-current="page"' in html  # the board picker
    assert 'data-testid="benchmarks"' not in html
    public = _html(await client.get("/leaderboard?period=day"))
    assert 'href="/orgs/engines/leaderboard"' in public
    assert _rows(public) == ["otto", "olive", "vic"]

    use_session(client, outsider.token)
    assert 'data-status="404"' in _html(await client.get("/orgs/engines/leaderboard"), 404)
    assert 'data-status="404"' in _html(await client.get("/orgs/nowhere/leaderboard"), 404)
    client.cookies.clear()
    anonymous = await client.get("/orgs/engines/leaderboard")
    assert (anonymous.status_code, anonymous.headers["location"]) == (303, "/sign-in?next=/orgs/engines/leaderboard")


async def _notify(session: AsyncSession, who: Account, title: str, now: datetime = NOW) -> None:
    await notify(session, [who.model.id], "scan_completed", title, f"{title} body", {}, title, now=now)


async def test_notifications_list_mark_read_and_all_read(
    client: httpx.AsyncClient, session: AsyncSession, make_user: MakeUser
) -> None:
    ada, bob = await make_user("ada"), await make_user("bob")
    for minute, title in enumerate(("first scan", "second scan", "third scan")):
        await _notify(session, ada, title, NOW.replace(minute=minute))
    await _notify(session, bob, "bob's scan")
    use_session(client, ada.token)
    html = _html(await client.get("/notifications"))
    assert "3 unread" in html
    titles = re.findall(r"<strong>([^<]+)</strong>", html)
    assert titles == ["third scan", "second scan", "first scan"]  # newest first
    assert "bob&#39;s scan" not in html
    ids = re.findall(r'data-notification="([^"]+)"', html)
    token = csrf_of(html)

    # Without the token: the 403 page, nothing read.
    refused = await client.post(f"/notifications/{ids[0]}/read", data={})
    assert 'data-status="403"' in _html(refused, 403)
    refused = await client.post("/notifications/read-all", data={"csrf_token": "0" * 64})
    assert refused.status_code == 403
    assert "3 unread" in _html(await client.get("/notifications"))

    read = await client.post(f"/notifications/{ids[0]}/read", data={"csrf_token": token})
    assert (read.status_code, read.headers["location"]) == (303, "/notifications")
    html = _html(await client.get("/notifications?unread=true"))
    assert "2 unread" in html
    assert "third scan" not in html
    # Another user's notification: the 404 page.
    use_session(client, bob.token)
    bobs = re.findall(r'data-notification="([^"]+)"', _html(await client.get("/notifications")))
    use_session(client, ada.token)
    assert (await client.post(f"/notifications/{bobs[0]}/read", data={"csrf_token": token})).status_code == 404
    assert (await client.post(f"/notifications/{uuid.uuid4()}/read", data={"csrf_token": token})).status_code == 404

    done = await client.post("/notifications/read-all", data={"csrf_token": token})
    assert (done.status_code, done.headers["location"]) == (303, "/notifications")
    html = _html(await client.get("/notifications"))
    assert "0 unread" in html
    assert 'data-testid="read-all"' not in html
    assert 'data-testid="no-notifications"' in _html(await client.get("/notifications?unread=true"))


async def test_preferences(client: httpx.AsyncClient, make_user: MakeUser) -> None:
    ada = await make_user("ada")
    use_session(client, ada.token)
    html = _html(await client.get("/notifications/preferences"))
    assert re.search(r'name="scan_failed.email" aria-label="[^"]+" checked', html)
    token = csrf_of(html)
    refused = await client.post("/notifications/preferences", data={"scan_completed.in_app": "on"})
    assert refused.status_code == 403
    # Every box but scan_completed's in-app one unchecked.
    saved = await client.post("/notifications/preferences", data={"csrf_token": token, "scan_completed.in_app": "on"})
    assert (saved.status_code, saved.headers["location"]) == (303, "/notifications/preferences?saved=true")
    html = _html(await client.get("/notifications/preferences?saved=true"))
    assert 'data-testid="saved"' in html
    assert re.search(r'name="scan_completed.in_app" aria-label="[^"]+" checked', html)
    assert not re.search(r'name="scan_failed.email" aria-label="[^"]+" checked', html)
    api = await client.get("/api/v1/notifications/preferences", headers=ada.headers)
    choices = {item["kind"]: (item["in_app"], item["email"]) for item in api.json()["items"]}
    assert choices["scan_completed"] == (True, False)
    assert choices["scan_failed"] == (False, False)


# --- the bell's stream, served by uvicorn (ASGI test clients buffer a whole response) ---------


class Events:
    def __init__(self, response: httpx.Response) -> None:
        self._lines = response.aiter_lines()

    async def next(self) -> tuple[str, dict[str, Any]]:
        return await asyncio.wait_for(self._next(), timeout=WAIT)

    async def _next(self) -> tuple[str, dict[str, Any]]:
        name, data = "", None
        async for line in self._lines:
            if line.startswith(":"):
                continue
            if line == "" and data is not None:
                return name, data
            key, _, value = line.partition(": ")
            if key == "event":
                name = value
            elif key == "data":
                data = json.loads(value)
        raise EOFError("the stream ended")


@pytest.fixture
async def served_app(
    database_server: DatabaseServer, clock: FakeClock, tmp_path: Any
) -> AsyncIterator[tuple[FastAPI, Database, str]]:
    url = await database_server.clone("websocial")
    settings = build_settings(url, NOTIFICATIONS_STREAM_KEEPALIVE_SECONDS=0.5, VAR_DIR=tmp_path / "var")
    database = Database.from_settings(settings)
    app = create_app(settings, database=database, clock=clock)
    try:
        async with app.router.lifespan_context(app), served(app, scheme="http") as origin:
            yield app, database, origin
    finally:
        await database.dispose()


async def test_the_bell_stream_is_the_cookies(served_app: tuple[FastAPI, Database, str]) -> None:
    _app, database, origin = served_app
    async with httpx.AsyncClient(base_url=origin, timeout=WAIT) as client:
        ada, bob = await register(client, "ada"), await register(client, "bob")
        ada_id, bob_id = uuid.UUID(ada.user["id"]), uuid.UUID(bob.user["id"])
        async with database.transaction() as session:
            await notify(
                session, [ada_id], "scan_completed", "before", "b", {}, "before", now=NOW - timedelta(minutes=1)
            )

        # Signed out: to the sign-in page; a bearer token does not open it.
        signed_out = await client.get("/notifications/stream", headers=ada.headers)
        assert (signed_out.status_code, signed_out.headers["location"]) == (303, "/sign-in?next=/notifications/stream")

        client.cookies.set(SESSION_COOKIE, ada.token)
        request = client.build_request("GET", "/notifications/stream")
        response = await client.send(request, stream=True)
        try:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            events = Events(response)
            assert await events.next() == ("ready", {"unread_count": 1})
            async with database.transaction() as session:
                await notify(session, [bob_id], "scan_completed", "for bob", "b", {}, "bob-1", now=NOW)
                await notify(session, [ada_id], "scan_completed", "for ada", "b", {}, "ada-1", now=NOW)
            name, body = await events.next()
            assert (name, body["title"], body["read_at"]) == ("notification", "for ada", None)
            assert await events.next() == ("unread_count", {"unread_count": 2})
            # Read in another tab (the list's "mark all read"): this stream's bell goes down too.
            token = csrf_of((await client.get("/notifications")).text)
            marked = await client.post("/notifications/read-all", data={"csrf_token": token})
            assert marked.status_code == 303
            assert await events.next() == ("unread_count", {"unread_count": 0})
        finally:
            await response.aclose()
        # The cookie does not open the API's stream.
        api = await client.get("/api/v1/notifications/stream")
        assert api.status_code == 401
