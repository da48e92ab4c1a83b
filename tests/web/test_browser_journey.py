"""The whole journey in one go, in a real browser (the system's Chromium, driven by Playwright)
against a real `codepulse serve` on the run's database engine, whose mail goes to the SMTP stub:
sign up → create an organization → connect a local git repository (ALLOW_LOCAL_REPOSITORIES=true)
holding a committed fake secret → scan it, the page following the progress live (a `codepulse
worker` starts only once the page follows the scan) → triage the finding (false positive, with a
reason) → sync usage through the API with a CLI token and see the numbers on the overview →
invite a member, who signs up and accepts in a second browser context → sign out, after which the
old session cookie opens nothing. Screenshots of every page at 360 px and 1440 px go to
`var/screenshots/<dialect>/journey/`; with CODEPULSE_README_SCREENSHOTS=1 the README's two screenshots
(the overview and the scan, 1440 px, light) are rewritten in src/codepulse/web/screenshots/. Any
console error (a CSP violation is one) fails the test. Every wait is on the page, never a sleep.
"""

from __future__ import annotations

from pathlib import Path

import httpx
from playwright.async_api import Browser

from codepulse.web.session import SESSION_COOKIE
from tests.stubs.smtp import SmtpServer
from tests.web.browsing import (
    README_SCREENSHOTS,
    Shots,
    Watch,
    connect_local_repository,
    fill_sign_up,
    invite,
    scan_and_triage,
    see_usage_records,
    sign_up_and_accept,
)
from tests.web.conftest import Serve
from tests.web.helpers import mailed_invitation, repository_with_a_secret, sync_usage_records


async def test_the_whole_journey(
    serve: Serve, chromium: Browser, shots: Shots, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    # No worker in the server: the scan's own starts once the page follows the scan, and then
    # delivers the mail too.
    server = await serve("journey", smtp=smtp_server, local_repositories=True)
    origin = server.origin
    members_url = f"{origin}/orgs/engines/members"
    repos_url = f"{origin}/orgs/engines/repositories"
    repo = repository_with_a_secret(tmp_path / "payments")
    watch = Watch(expected_4xx={repos_url})  # the connect form's refusal
    owner = await watch.page(chromium)
    shots = Shots.for_dialect(f"{shots.directory.name}/journey")  # this test's pages, apart

    # Sign up: the overview, empty, says how to connect the CLI.
    await owner.goto(origin + "/sign-up")
    await shots.take(owner, "sign-up")
    await fill_sign_up(owner, "ada", "Ada Lovelace")
    await owner.wait_for_url(origin + "/")
    await owner.locator("[data-testid=connect-cli]").wait_for()
    await shots.take(owner, "overview-empty")

    # Create an organization.
    await owner.click("[data-testid=nav-orgs]")
    await owner.wait_for_url(origin + "/orgs")
    await owner.wait_for_selector("[data-testid=no-orgs]")
    await shots.take(owner, "orgs-empty")
    await owner.fill("#name", "Analytical Engines")
    await owner.fill("#slug", "engines")
    await owner.click("[data-testid=create-org]")
    await owner.wait_for_url(members_url)
    assert await owner.inner_text("[data-testid=my-role]") == "owner"
    await shots.take(owner, "org-members")

    # Connect the local repository, scan it live, triage the finding.
    await connect_local_repository(owner, repos_url, repo.root, shots)
    await scan_and_triage(owner, server, shots, readme=True)
    await owner.goto(repos_url)
    await owner.wait_for_selector("[data-testid=repositories] [data-status=succeeded]")
    await shots.take(owner, "repositories")

    # Usage synced through the API with a CLI token, on the overview.
    assert (await sync_usage_records(origin, "ada"))["inserted"] == 4
    await owner.click("nav >> text=Overview")
    await owner.wait_for_url(origin + "/")
    await see_usage_records(owner)
    await shots.take(owner, "overview")
    await Shots.readme(owner, "overview")

    # Invite a member, who signs up and accepts in a browser context of her own.
    await owner.click("[data-testid=nav-orgs]")
    await owner.wait_for_url(origin + "/orgs")
    await shots.take(owner, "orgs")
    await owner.click("[data-testid=my-orgs] [data-org=engines] a")
    await owner.wait_for_url(members_url)
    await invite(owner, "mia@example.com")
    await shots.take(owner, "org-invited")
    link = await mailed_invitation(smtp_server, server, "mia@example.com")
    member = await watch.page(chromium)
    await sign_up_and_accept(member, server, smtp_server, link, shots)
    await owner.reload()
    await owner.wait_for_selector("[data-member=mia][data-role=member]")
    assert await owner.locator("[data-invitation='mia@example.com']").count() == 0
    await shots.take(owner, "org-members-joined")

    # Sign out: the session is over, so its cookie, even put back, opens nothing.
    [cookie] = [cookie for cookie in await owner.context.cookies() if cookie["name"] == SESSION_COOKIE]
    await owner.click("[data-testid=sign-out]")
    await owner.wait_for_url(origin + "/sign-in")
    await shots.take(owner, "signed-out")
    await owner.context.add_cookies([{"name": SESSION_COOKIE, "value": cookie["value"], "url": origin}])
    await owner.goto(members_url)
    await owner.wait_for_url(origin + "/sign-in?next=/orgs/engines/members")
    async with httpx.AsyncClient(base_url=origin, cookies={SESSION_COOKIE: cookie["value"]}) as old_session:
        refused = await old_session.get("/")
    assert (refused.status_code, refused.headers["location"]) == (303, "/sign-in")
    assert watch.problems == []


async def test_the_readme_screenshots_are_small_and_not_served(client: httpx.AsyncClient) -> None:
    for name in ("overview", "scan"):
        path = README_SCREENSHOTS / f"{name}.png"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert path.stat().st_size < 300_000, f"{path} is over 300 KB"
        for url in (
            f"/static/screenshots/{name}.png",
            f"/screenshots/{name}.png",
            f"/static/../screenshots/{name}.png",
        ):
            assert (await client.get(url)).status_code == 404
