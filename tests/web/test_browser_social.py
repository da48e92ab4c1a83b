"""The leaderboard and the notification bell in a real browser (Chromium from the system's
packages, Playwright) against a real `codepulse serve`: usage synced through the API and the boards
computed, the leaderboard shows my row highlighted; a notification created while a page is open
raises the bell's count live (on PostgreSQL through LISTEN/NOTIFY from this other process; on
SQLite, whose wake-ups stay in one process, at the stream's next look, every second here); the
notifications page marks it read. Screenshots at 360 px and 1440 px (no horizontal scroll) go to
`var/screenshots/<dialect>/`; any console error (a CSP violation is one) fails the test.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from playwright.async_api import Browser

from codepulse.db import Database
from codepulse.leaderboard.benchmarks import compute_benchmarks
from codepulse.leaderboard.ranking import recompute_rankings
from codepulse.notifications.service import notify
from tests.auth.helpers import PASSWORD
from tests.databases import build_settings
from tests.web.browsing import Shots, Watch, sign_in
from tests.web.conftest import Serve
from tests.web.helpers import sync_with_cli_token, usage_records


async def _sign_up_and_sync(origin: str, username: str, records: slice) -> uuid.UUID:
    async with httpx.AsyncClient(base_url=origin, timeout=10) as api:
        body = {"email": f"{username}@example.com", "password": PASSWORD, "username": username, "name": username}
        registered = await api.post("/api/v1/auth/register", json=body)
        assert registered.status_code == 201, registered.text
        bearer = {"Authorization": f"Bearer {registered.json()['token']}"}
        public = await api.patch("/api/v1/users/me", json={"profile_public": True}, headers=bearer)
        assert public.status_code == 200, public.text
        now = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=5)
        await sync_with_cli_token(api, bearer, usage_records(now)[records])
        return uuid.UUID(registered.json()["user"]["id"])


@pytest.fixture
async def served(serve: Serve) -> AsyncIterator[tuple[str, Database]]:
    """A real server (its notification stream looking every second), and this process's own
    connection to its database (to compute the boards and to notify, as the scheduler and the
    other slices would)."""
    server = await serve("browsersocial", NOTIFICATIONS_STREAM_KEEPALIVE_SECONDS="1")
    database = Database.from_settings(build_settings(server.database_url))
    try:
        yield server.origin, database
    finally:
        await database.dispose()


async def test_leaderboard_row_and_a_live_bell(served: tuple[str, Database], chromium: Browser, shots: Shots) -> None:
    origin, database = served
    ada_id = await _sign_up_and_sync(origin, "ada", slice(1, 2))  # fewer tokens today than grace
    await _sign_up_and_sync(origin, "grace", slice(None))
    settings = build_settings("sqlite+aiosqlite://")  # the computations read only their knobs
    await recompute_rankings(database, settings, datetime.now(UTC))
    await compute_benchmarks(database, settings, datetime.now(UTC))

    watch = Watch()
    page = await watch.page(chromium)
    await sign_in(page, origin, "ada")

    await page.click("[data-testid=nav-leaderboard]")
    await page.wait_for_url(origin + "/leaderboard")
    await page.select_option("select[name=period]", "day")  # submits itself (static/social.js)
    await page.wait_for_url("**/leaderboard?period=day*")
    mine = page.locator("[data-testid=my-row]")
    await mine.wait_for()
    assert await mine.get_attribute("data-username") == "ada"
    assert await page.inner_text("[data-testid=my-rank]") == "#2"
    rows = await page.eval_on_selector_all("[data-testid=board] tbody tr", "rows => rows.map(r => r.dataset.username)")
    assert rows == ["grace", "ada"]
    await page.wait_for_selector("[data-benchmark=tokens_per_active_day]")

    # The bell follows the stream: ready (no unread), then a notification made elsewhere.
    await page.wait_for_function("() => document.querySelector('[data-testid=bell]').dataset.count === '0'")
    assert await page.locator("[data-testid=bell-count]").is_hidden()
    await shots.take(page, "leaderboard")
    async with database.transaction() as session:
        await notify(session, [ada_id], "scan_completed", "Scan finished", "No new findings.", {}, "live-1",
                     now=datetime.now(UTC))  # fmt: skip
    count = page.locator("[data-testid=bell-count]")
    await count.wait_for(state="visible", timeout=15_000)
    assert await count.inner_text() == "1"

    await page.click("[data-testid=bell]")
    await page.wait_for_url(origin + "/notifications")
    assert "Scan finished" in await page.inner_text("[data-testid=notifications]")
    await page.wait_for_function("() => document.querySelector('[data-testid=bell]').dataset.count === '1'")
    await shots.take(page, "notifications")
    await page.click("[data-testid=read-all]")
    await page.wait_for_url(origin + "/notifications")
    await page.wait_for_function("() => document.querySelector('[data-testid=bell]').dataset.count === '0'")
    assert await page.inner_text("[data-testid=unread-count]") == "0 unread"
    await page.goto(origin + "/notifications/preferences")
    await shots.take(page, "notification-preferences")
    await page.emulate_media(color_scheme="dark")
    await page.goto(origin + "/leaderboard?period=day")
    await page.locator("[data-testid=my-row]").wait_for()
    await shots.take(page, "leaderboard-dark")
    assert watch.problems == []
