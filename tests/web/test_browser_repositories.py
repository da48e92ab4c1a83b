"""The repositories and scan pages in a real browser (Chromium from the system's packages, driven
by Playwright) against a real `codepulse serve` with ALLOW_LOCAL_REPOSITORIES=true and a
`codepulse worker` started only once the scan's page follows the scan (so the scan cannot finish
before the page looks at it, however fast the machine), on the run's database engine: sign up, an organization (through
the API: the organization pages are another slice's), connect a git repository the test makes
on disk with a committed fake secret, scan it, follow the live progress to the end, see the
finding, triage it (false positive, with a reason), filter, and download the SARIF. Screenshots
of each page at 360 px and 1440 px go to `var/screenshots/<dialect>/` (as tests/web/test_browser.py);
any console error (a CSP violation is one) fails the test. No fixed sleeps: every wait is on a
selector, a URL or a response.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Page, Request, async_playwright

from tests.auth.helpers import PASSWORD
from tests.databases import DatabaseServer
from tests.scans.helpers import GitRepo, aws_key, config_file
from tests.web.test_browser import CHROMIUM, ROOT, Server, Watch, _free_port, _shoot

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium; .ci/run does)"
)


@dataclass
class ScanningServer(Server):
    start_worker: Callable[[], Awaitable[None]]


@pytest.fixture
async def scanning_server(tmp_path: Path, database_server: DatabaseServer) -> AsyncIterator[ScanningServer]:
    """`codepulse serve` with no worker of its own (`Server.start_worker` starts one), and local
    repositories allowed."""
    url = await database_server.clone("browser_repos")
    port = _free_port()
    log = tmp_path / "server.log"
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "VAR_DIR": str(tmp_path / "var"),
        "ENVIRONMENT": "development",
        "SCHEDULER_ENABLED": "false",
        "WORKER_CONCURRENCY": "0",
        "ALLOW_LOCAL_REPOSITORIES": "true",
        "REPOSITORY_PROBE_SECONDS": "0",
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
                await asyncio.sleep(0.05)  # polling the server's readiness, not a fixed wait
        async with _worker_when_asked(env, tmp_path) as start_worker:
            yield ScanningServer(origin, process, log, start_worker)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.wait(), 20)
    assert "Traceback" not in log.read_text()


@asynccontextmanager
async def _worker_when_asked(env: dict[str, str], directory: Path) -> AsyncIterator[Callable[[], Awaitable[None]]]:
    """A `codepulse worker` on the server's database, started by the function this yields, and
    stopped (SIGTERM, as in production) at the end."""
    processes: list[asyncio.subprocess.Process] = []
    log = directory / "worker.log"

    async def start() -> None:
        command = (sys.executable, "-m", "codepulse", "worker", "--concurrency", "1")
        with log.open("wb") as output:
            worker = await asyncio.create_subprocess_exec(
                *command, env={**env, "TASK_POLL_SECONDS": "0.2"}, cwd=directory, stdout=output, stderr=output
            )
        processes.append(worker)

    try:
        yield start
    finally:
        for process in processes:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
                await asyncio.wait_for(process.wait(), 20)
        if log.exists():
            assert "Traceback" not in log.read_text()


async def _sign_up(page: Page, origin: str) -> None:
    await page.goto(origin + "/sign-up")
    await page.fill("#email", "ada@example.com")
    await page.fill("#username", "ada")
    await page.fill("#name", "Ada Lovelace")
    await page.fill("#password", PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_url(origin + "/")


async def _create_org(origin: str) -> None:
    async with httpx.AsyncClient(base_url=origin, timeout=10) as api:
        login = await api.post("/api/v1/auth/login", json={"login": "ada", "password": PASSWORD})
        bearer = {"Authorization": f"Bearer {login.json()['token']}"}
        made = await api.post("/api/v1/orgs", json={"name": "Engines", "slug": "engines"}, headers=bearer)
        assert made.status_code == 201, made.text


async def test_connect_scan_triage_and_download_sarif(
    scanning_server: ScanningServer, database_server: DatabaseServer, tmp_path: Path
) -> None:
    shots = Path(os.environ.get("SCREENSHOT_DIR", ROOT / "var" / "screenshots")) / database_server.dialect
    shots.mkdir(parents=True, exist_ok=True)
    origin = scanning_server.origin
    repos_url = f"{origin}/orgs/engines/repositories"
    watch = Watch(expected_4xx={repos_url})
    repo = GitRepo(tmp_path / "payments")
    repo.commit({"app/settings.py": config_file(aws_key(11)), "README.md": "# payments\n"}, message="settings")
    streams: list[str] = []

    def on_request(request: Request) -> None:
        if request.url.endswith("/events"):
            streams.append(request.url)

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            context = await browser.new_context(viewport={"width": 1440, "height": 900}, accept_downloads=True)
            page = await context.new_page()
            page.on("console", watch.console)
            page.on("pageerror", watch.page_error)
            page.on("request", on_request)

            await _sign_up(page, origin)
            await page.click("nav >> text=Repositories")
            await page.wait_for_selector("[data-testid=no-organization]")
            await _create_org(origin)

            # The header's link goes to the organization's repositories: none yet.
            await page.click("nav >> text=Repositories")
            await page.wait_for_url(repos_url)
            await page.wait_for_selector("[data-testid=empty]")
            await _shoot(page, shots, "repositories-empty")

            # Connect: a relative path is refused beside the field; the absolute path connects.
            await page.fill("#clone_url", "payments")
            await page.click("[data-testid=connect]")
            await page.wait_for_selector("[data-field=clone_url]")
            await _shoot(page, shots, "repositories-connect-error")
            await page.fill("#clone_url", str(repo.root))
            await page.click("[data-testid=connect]")
            await page.wait_for_selector("[data-testid=never-scanned]")
            assert await page.inner_text("h1") == "payments"
            await _shoot(page, shots, "repository-new")

            # Scan now: the scan's page follows it live, then shows what it found.
            await page.click("[data-testid=scan-now]")
            await page.wait_for_url(f"{origin}/orgs/engines/scans/*")
            scan_url = page.url
            await page.wait_for_selector("#scan-progress progress")
            # Queued, with the page following it: only now may a worker take it.
            async with asyncio.timeout(30):
                while streams != [f"{scan_url}/events"]:  # noqa: ASYNC110 - the browser's requests, no event
                    await asyncio.sleep(0.02)
            await scanning_server.start_worker()
            row = page.locator("tr[data-rule=aws-access-key-id]")
            await row.wait_for(timeout=60_000)
            assert await page.get_attribute("#scan-progress", "data-status") == "succeeded"
            assert streams == [f"{scan_url}/events"], "the page did not follow the scan live"
            assert await page.inner_text("#scan-progress [data-role=percent]") == "100.0"
            assert "app/settings.py:3" in await row.inner_text()
            await _shoot(page, shots, "scan")
            await page.emulate_media(color_scheme="dark")
            await _shoot(page, shots, "scan-dark")
            await page.emulate_media(color_scheme="light")

            # Triage: a false positive, with a reason (htmx swaps the table).
            await row.locator("select[name=status]").select_option("false_positive")
            await row.locator("input[name=reason]").fill("A test fixture, not a real key")
            await row.locator("[data-testid=dismiss]").click()
            await page.wait_for_selector("tr[data-rule=aws-access-key-id][data-status=false_positive]")
            await page.wait_for_selector("tr[data-rule=aws-access-key-id] [data-testid=reopen]")

            # Filters: by status, then a severity with nothing.
            await page.select_option("#finding-filters select[name=status]", "open")
            await page.wait_for_selector("[data-testid=no-findings]")
            await page.select_option("#finding-filters select[name=status]", "false_positive")
            await page.wait_for_selector("tr[data-rule=aws-access-key-id][data-status=false_positive]")
            await page.fill("#finding-filters input[name=path]", "app/")
            await page.press("#finding-filters input[name=path]", "Enter")
            await page.wait_for_selector("tr[data-rule=aws-access-key-id]")
            await _shoot(page, shots, "scan-filtered")

            # The SARIF download: the finding, suppressed with its reason.
            async with page.expect_download() as download_info:
                await page.click("[data-testid=sarif]")
            download = await download_info.value
            assert download.suggested_filename.endswith(".sarif")
            sarif = json.loads(await asyncio.to_thread(Path(await download.path()).read_text))
            [result] = sarif["runs"][0]["results"]
            assert result["ruleId"] == "aws-access-key-id"
            assert result["suppressions"][0]["justification"] == "A test fixture, not a real key"

            # The list shows the last scan; the repository's page its scans.
            await page.goto(repos_url)
            await page.wait_for_selector("[data-testid=repositories] [data-status=succeeded]")
            await _shoot(page, shots, "repositories")
            await page.emulate_media(color_scheme="dark")
            await _shoot(page, shots, "repositories-dark")
            await page.emulate_media(color_scheme="light")
            await page.click("[data-testid=repositories] tbody th a")
            await page.wait_for_selector("[data-testid=scans] tbody tr")
            await _shoot(page, shots, "repository")
            await context.close()
        finally:
            await browser.close()
    assert watch.problems == []
