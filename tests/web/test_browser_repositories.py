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
from pathlib import Path

import httpx
from playwright.async_api import Browser

from tests.web.browsing import TRIAGE_REASON, Shots, Watch, connect_local_repository, scan_and_triage, sign_up_in
from tests.web.conftest import Serve
from tests.web.helpers import api_bearer, repository_with_a_secret


async def test_connect_scan_triage_and_download_sarif(
    serve: Serve, chromium: Browser, shots: Shots, tmp_path: Path
) -> None:
    server = await serve("browser_repos", local_repositories=True)
    origin = server.origin
    repos_url = f"{origin}/orgs/engines/repositories"
    watch = Watch(expected_4xx={repos_url})
    repo = repository_with_a_secret(tmp_path / "payments")
    page = await watch.page(chromium, accept_downloads=True)

    await sign_up_in(page, origin, "ada", "Ada Lovelace")
    await page.click("nav >> text=Repositories")
    await page.wait_for_selector("[data-testid=no-organization]")
    async with httpx.AsyncClient(base_url=origin, timeout=10) as api:
        bearer = await api_bearer(api, "ada")
        made = await api.post("/api/v1/orgs", json={"name": "Engines", "slug": "engines"}, headers=bearer)
        assert made.status_code == 201, made.text

    # Connect (a relative path refused first), scan: the scan's page follows it live, then shows
    # what it found; triage it.
    await connect_local_repository(page, repos_url, repo.root, shots)
    await scan_and_triage(page, server, shots, dark=True)

    # Filters: by status, then a severity with nothing.
    await page.select_option("#finding-filters select[name=status]", "open")
    await page.wait_for_selector("[data-testid=no-findings]")
    await page.select_option("#finding-filters select[name=status]", "false_positive")
    await page.wait_for_selector("tr[data-rule=aws-access-key-id][data-status=false_positive]")
    await page.fill("#finding-filters input[name=path]", "app/")
    await page.press("#finding-filters input[name=path]", "Enter")
    await page.wait_for_selector("tr[data-rule=aws-access-key-id]")
    await shots.take(page, "scan-filtered")

    # The SARIF download: the finding, suppressed with its reason.
    async with page.expect_download() as download_info:
        await page.click("[data-testid=sarif]")
    download = await download_info.value
    assert download.suggested_filename.endswith(".sarif")
    sarif = json.loads(await asyncio.to_thread(Path(await download.path()).read_text))
    [result] = sarif["runs"][0]["results"]
    assert result["ruleId"] == "aws-access-key-id"
    assert result["suppressions"][0]["justification"] == TRIAGE_REASON

    # The list shows the last scan; the repository's page its scans.
    await page.goto(repos_url)
    await page.wait_for_selector("[data-testid=repositories] [data-status=succeeded]")
    await shots.take(page, "repositories", dark=True)
    await page.click("[data-testid=repositories] tbody th a")
    await page.wait_for_selector("[data-testid=scans] tbody tr")
    await shots.take(page, "repository")
    assert watch.problems == []
