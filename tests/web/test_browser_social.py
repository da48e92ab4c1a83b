"""The leaderboard and the notification bell in a real browser (Chromium from the system's
packages, Playwright) against a real `codepulse serve`: usage synced through the API and the boards
computed, the leaderboard shows my row highlighted; a notification created while a page is open
raises the bell's count live (on PostgreSQL through LISTEN/NOTIFY from this other process; on
SQLite, whose wake-ups stay in one process, at the stream's next look, every second here); the
notifications page marks it read. Screenshots at 360 px and 1440 px (no horizontal scroll) go to
`var/screenshots/<dialect>/`; any console error (a CSP violation is one) fails the test.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from playwright.async_api import async_playwright

from codepulse.db import Database
from codepulse.leaderboard.benchmarks import compute_benchmarks
from codepulse.leaderboard.ranking import recompute_rankings
from codepulse.notifications.service import notify
from tests.auth.helpers import PASSWORD
from tests.databases import DatabaseServer, build_settings
from tests.web.test_browser import CHROMIUM, ROOT, Watch, _free_port, _records, _shoot

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium; .ci/run does)"
)


async def _serve(tmp_path: Path, url: str) -> AsyncIterator[str]:
    port = _free_port()
    log = tmp_path / "server.log"
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "VAR_DIR": str(tmp_path / "var"),
        "ENVIRONMENT": "development",
        "SCHEDULER_ENABLED": "false",
        "WORKER_CONCURRENCY": "0",
        "LOG_JSON": "true",
        "NOTIFICATIONS_STREAM_KEEPALIVE_SECONDS": "1",
        "PASSWORD_HASH_TIME_COST": "1",
        "PASSWORD_HASH_MEMORY_KIB": "1024",
        "PASSWORD_HASH_PARALLELISM": "1",
    }
    with log.open("wb") as output:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "codepulse", "serve", "--port", str(port),
            env=env, cwd=tmp_path, stdout=output, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
    origin = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=origin, timeout=2) as client:
            deadline = time.monotonic() + 60
            while True:
                assert process.returncode is None, log.read_text()
                try:
                    if (await client.get("/api/v1/health/ready")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "server not ready:\n" + log.read_text()
                await asyncio.sleep(0.05)
        yield origin
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.wait(), 20)
    assert "Traceback" not in log.read_text()


@pytest.fixture
async def served(tmp_path: Path, database_server: DatabaseServer) -> AsyncIterator[tuple[str, Database]]:
    """A real server, and this process's own connection to its database (to compute the boards
    and to notify, as the scheduler and the other slices would)."""
    url = await database_server.clone("browsersocial")
    database = Database.from_settings(build_settings(url))
    try:
        async for origin in _serve(tmp_path, url):
            yield origin, database
    finally:
        await database.dispose()


async def _sign_up_and_sync(origin: str, username: str, records: slice) -> uuid.UUID:
    async with httpx.AsyncClient(base_url=origin, timeout=10) as api:
        body = {"email": f"{username}@example.com", "password": PASSWORD, "username": username, "name": username}
        registered = await api.post("/api/v1/auth/register", json=body)
        assert registered.status_code == 201, registered.text
        bearer = {"Authorization": f"Bearer {registered.json()['token']}"}
        public = await api.patch("/api/v1/users/me", json={"profile_public": True}, headers=bearer)
        assert public.status_code == 200, public.text
        made = await api.post("/api/v1/auth/tokens", json={"name": "laptop", "expires_in_days": 30}, headers=bearer)
        assert made.status_code == 201, made.text
        now = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=5)
        sync = {
            "client": {"name": "codepulse-cli", "version": "0.9.0"},
            "machine_id": "m1",
            "records": _records(now)[records],
        }
        synced = await api.post("/api/v1/sync", json=sync, headers={"Authorization": f"Bearer {made.json()['token']}"})
        assert synced.status_code == 200, synced.text
        return uuid.UUID(registered.json()["user"]["id"])


async def test_leaderboard_row_and_a_live_bell(served: tuple[str, Database], database_server: DatabaseServer) -> None:
    origin, database = served
    shots = Path(os.environ.get("SCREENSHOT_DIR", ROOT / "var" / "screenshots")) / database_server.dialect
    shots.mkdir(parents=True, exist_ok=True)
    ada_id = await _sign_up_and_sync(origin, "ada", slice(1, 2))  # fewer tokens today than grace
    await _sign_up_and_sync(origin, "grace", slice(None))
    settings = build_settings("sqlite+aiosqlite://")  # the computations read only their knobs
    await recompute_rankings(database, settings, datetime.now(UTC))
    await compute_benchmarks(database, settings, datetime.now(UTC))

    watch = Watch()
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            context = await browser.new_context(viewport={"width": 1440, "height": 900})
            page = await context.new_page()
            page.on("console", watch.console)
            page.on("pageerror", watch.page_error)
            await page.goto(origin + "/sign-in")
            await page.fill("#login", "ada")
            await page.fill("#password", PASSWORD)
            await page.click("button[type=submit]")
            await page.wait_for_url(origin + "/")

            await page.click("[data-testid=nav-leaderboard]")
            await page.wait_for_url(origin + "/leaderboard")
            await page.select_option("select[name=period]", "day")  # submits itself (static/social.js)
            await page.wait_for_url("**/leaderboard?period=day*")
            mine = page.locator("[data-testid=my-row]")
            await mine.wait_for()
            assert await mine.get_attribute("data-username") == "ada"
            assert await page.inner_text("[data-testid=my-rank]") == "#2"
            rows = await page.eval_on_selector_all(
                "[data-testid=board] tbody tr", "rows => rows.map(r => r.dataset.username)"
            )
            assert rows == ["grace", "ada"]
            await page.wait_for_selector("[data-benchmark=tokens_per_active_day]")

            # The bell follows the stream: ready (no unread), then a notification made elsewhere.
            await page.wait_for_function("() => document.querySelector('[data-testid=bell]').dataset.count === '0'")
            assert await page.locator("[data-testid=bell-count]").is_hidden()
            await _shoot(page, shots, "leaderboard")
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
            await _shoot(page, shots, "notifications")
            await page.click("[data-testid=read-all]")
            await page.wait_for_url(origin + "/notifications")
            await page.wait_for_function("() => document.querySelector('[data-testid=bell]').dataset.count === '0'")
            assert await page.inner_text("[data-testid=unread-count]") == "0 unread"
            await page.goto(origin + "/notifications/preferences")
            await _shoot(page, shots, "notification-preferences")
            await page.emulate_media(color_scheme="dark")
            await page.goto(origin + "/leaderboard?period=day")
            await page.locator("[data-testid=my-row]").wait_for()
            await _shoot(page, shots, "leaderboard-dark")
            await context.close()
        finally:
            await browser.close()
    assert watch.problems == []
