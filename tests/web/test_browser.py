"""The dashboard in a real browser: Chromium from the system's packages (never Playwright's own
download) driven by Playwright against a real `codepulse serve` process, on the run's database
engine. Sign up, the empty overview with the CLI panel, usage synced through the API with a CLI
token, the overview with its cards, chart and breakdowns (totals computed by hand), the range
picker (htmx), a CLI token made on the settings page, sign out. Screenshots of every page at 360 px and 1440 px go to
`var/screenshots/<dialect>/` (ignored by git; `SCREENSHOT_DIR` to put them elsewhere); any
console error (a CSP violation is one) fails the test.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import ConsoleMessage, Page, async_playwright

from tests.auth.helpers import PASSWORD
from tests.databases import DatabaseServer

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
WIDTHS = {360: 780, 1440: 900}

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium; .ci/run does)"
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    origin: str
    process: asyncio.subprocess.Process
    log: Path


@pytest.fixture
async def server(tmp_path: Path, database_server: DatabaseServer) -> AsyncIterator[Server]:
    url = await database_server.clone("browser")
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
        yield Server(origin, process, log)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.wait(), 20)
    assert "Traceback" not in log.read_text()


@dataclass
class Watch:
    """What the browser complained about: console errors (CSP violations are), page errors."""

    problems: list[str] = field(default_factory=list)
    # Pages answered with a 4xx on purpose (a form with errors, the 404 page): Chromium logs each
    # such document load as a console error.
    expected_4xx: set[str] = field(default_factory=set)

    def console(self, message: ConsoleMessage) -> None:
        if message.type != "error":
            return
        if message.text.startswith("Failed to load resource: the server responded with a status of 4") and (
            message.location.get("url") in self.expected_4xx
        ):
            return
        self.problems.append(f"console: {message.text} ({message.location.get('url')})")

    def page_error(self, error: Any) -> None:
        self.problems.append(f"page error: {error}")


async def _no_horizontal_scroll(page: Page) -> None:
    overflow = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"{page.url} is {overflow}px wider than a {page.viewport_size} viewport"


async def _shoot(page: Page, directory: Path, name: str) -> None:
    """A full-page screenshot at each width, once the chart (if any) has its new size."""
    for width, height in WIDTHS.items():
        await page.set_viewport_size({"width": width, "height": height})
        await page.wait_for_function(
            """() => {
                const box = document.querySelector('#trends-chart');
                const plot = box && box.querySelector('.uplot');
                return !plot || Math.abs(plot.offsetWidth - box.clientWidth) <= 2;
            }"""
        )
        await _no_horizontal_scroll(page)
        await page.screenshot(path=str(directory / f"{name}-{width}.png"), full_page=True)


def _records(now: datetime) -> list[dict[str, Any]]:
    def record(message_id: str, at: datetime, source: str, model: str, **tokens: int) -> dict[str, Any]:
        return {
            "source": source,
            "message_id": message_id,
            "request_id": f"req_{message_id}",
            "model": model,
            "timestamp": at.isoformat(),
            "input_tokens": tokens.get("input", 0),
            "output_tokens": tokens.get("output", 0),
            "cache_creation_5m_tokens": tokens.get("cache_5m", 0),
            "cache_creation_1h_tokens": 0,
            "cache_read_tokens": tokens.get("cache_read", 0),
            "reasoning_tokens": 0,
        }

    return [
        record("a", now, "claude-code", "claude-sonnet-4-5", input=1_000, output=20_000, cache_read=300_000),
        record("b", now, "claude-code", "claude-opus-4-5", input=500, output=4_500, cache_5m=10_000),
        record("c", now - timedelta(days=3), "codex", "gpt-5-codex", input=40_000, output=8_000),
        record("d", now - timedelta(days=12), "gemini-cli", "mystery-model-x", input=600, output=400),
    ]


async def test_sign_up_sync_and_see_the_overview(server: Server, database_server: DatabaseServer) -> None:
    shots = Path(os.environ.get("SCREENSHOT_DIR", ROOT / "var" / "screenshots")) / database_server.dialect
    shots.mkdir(parents=True, exist_ok=True)
    watch = Watch(expected_4xx={f"{server.origin}{path}" for path in ("/no/such/page", "/sign-up", "/sign-in")})
    origin = server.origin
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            context = await browser.new_context(viewport={"width": 1440, "height": 900})
            page = await context.new_page()
            page.on("console", watch.console)
            page.on("pageerror", watch.page_error)

            # Signed out, the overview sends you to sign in; sign up from there.
            await page.goto(origin + "/")
            await page.wait_for_url(origin + "/sign-in")
            await _shoot(page, shots, "sign-in")
            await page.click("text=Create an account")
            await page.wait_for_url(origin + "/sign-up")
            await page.fill("#email", "ada@example.com")
            await page.fill("#username", "ada")
            await page.fill("#name", "Ada Lovelace")
            await page.fill("#password", "short")
            await page.click("button[type=submit]")
            await page.wait_for_selector("#password-errors")
            await _shoot(page, shots, "sign-up-errors")
            await page.fill("#password", PASSWORD)
            await page.click("button[type=submit]")
            await page.wait_for_url(origin + "/")

            # The empty state: how to connect the CLI.
            panel = page.locator("[data-testid=connect-cli]")
            await panel.wait_for()
            assert f"codepulse login --server {origin}" in await panel.inner_text()
            await _shoot(page, shots, "overview-empty")

            # A CLI token (as `codepulse login` makes), then a sync through the API.
            now = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=5)
            async with httpx.AsyncClient(base_url=origin, timeout=10) as api:
                login = await api.post("/api/v1/auth/login", json={"login": "ada", "password": PASSWORD})
                bearer = {"Authorization": f"Bearer {login.json()['token']}"}
                made = await api.post(
                    "/api/v1/auth/tokens", json={"name": "laptop", "expires_in_days": 30}, headers=bearer
                )
                assert made.status_code == 201, made.text
                cli = {"Authorization": f"Bearer {made.json()['token']}"}
                body = {
                    "client": {"name": "codepulse-cli", "version": "0.9.0"},
                    "machine_id": "m1",
                    "records": _records(now),
                }
                synced = await api.post("/api/v1/sync", json=body, headers=cli)
                assert synced.status_code == 200, synced.text
                assert synced.json()["inserted"] == 4

            await page.reload()
            await page.wait_for_selector("[data-testid=cards]")
            await page.wait_for_selector("#trends-chart canvas")
            today, week, month = 1_000 + 20_000 + 300_000 + 500 + 4_500 + 10_000, 48_000, 1_000
            assert await page.inner_text("[data-testid=total-today]") == f"{today:,}"
            assert await page.inner_text("[data-testid=total-7d]") == f"{today + week:,}"
            assert await page.inner_text("[data-testid=total-all]") == f"{today + week + month:,}"
            assert await page.inner_text("[data-testid=days-all]") == "3"
            assert await page.inner_text("[data-testid=current-streak]") == "1"
            assert "1 record of unpriced models" in await page.inner_text("[data-testid=unpriced]")
            models = await page.eval_on_selector_all(
                "[data-testid=models] tbody tr", "rows => rows.map(r => [r.dataset.model, r.cells[1].dataset.tokens])"
            )
            assert models == [
                ["claude-sonnet-4-5", "321000"],
                ["gpt-5-codex", "48000"],
                ["claude-opus-4-5", "15000"],
                ["mystery-model-x", "1000"],
            ]
            sources = await page.eval_on_selector_all(
                "[data-testid=sources] tbody tr", "rows => rows.map(r => [r.dataset.source, r.cells[1].dataset.tokens])"
            )
            assert sources == [["claude-code", "336000"], ["codex", "48000"], ["gemini-cli", "1000"]]
            assert await page.locator("[data-model=mystery-model-x] .badge").inner_text() == "unpriced"
            await _shoot(page, shots, "overview")

            # The range picker swaps the chart and breakdowns in place (htmx, with its CSRF header).
            await page.select_option("select[name=range]", "7d")
            await page.wait_for_selector("[data-model=mystery-model-x]", state="detached")
            await page.wait_for_selector("#trends-chart canvas")
            assert await page.locator("[data-testid=models] tbody tr").count() == 3
            await page.select_option("select[name=granularity]", "week")
            await page.wait_for_function(
                "() => JSON.parse(document.getElementById('trends-chart').dataset.chart).granularity === 'week'"
            )
            await page.wait_for_selector("#trends-chart canvas")
            await _shoot(page, shots, "overview-7d-weekly")

            # Settings: a CLI token made in the browser is shown once; the one made through the
            # API is listed beside it.
            await page.click("nav >> text=Settings")
            await page.wait_for_url(origin + "/settings")
            await page.fill("#name", "work laptop")
            await page.click("[data-testid=create-token]")
            issued = page.locator("[data-testid=issued-token] code")
            await issued.wait_for()
            assert (await issued.inner_text()).startswith("cp_")
            names = await page.eval_on_selector_all(
                "[data-testid=cli-tokens] tbody th", "cells => cells.map(c => c.textContent)"
            )
            assert sorted(names) == ["laptop", "work laptop"]
            await _shoot(page, shots, "settings")

            # A page that does not exist is a page too.
            await page.goto(origin + "/no/such/page")
            await page.wait_for_selector("[data-status='404']")
            await _shoot(page, shots, "not-found")

            # Sign out ends the session: the overview sends you back to sign in.
            await page.goto(origin + "/")
            await page.click("[data-testid=sign-out]")
            await page.wait_for_url(origin + "/sign-in")
            await page.goto(origin + "/")
            await page.wait_for_url(origin + "/sign-in")
            await page.fill("#login", "ada")
            await page.fill("#password", "not-the-password")
            await page.click("button[type=submit]")
            await page.wait_for_selector(".alert")
            await _shoot(page, shots, "sign-in-error")
            await context.close()
        finally:
            await browser.close()
    assert watch.problems == []
