"""The browser tests' steps (Playwright driving the system's Chromium against the `serve`
fixture's server): what the browser complained about (`Watch`: console errors, CSP violations
among them, page errors), screenshots at both widths and both colour schemes without horizontal
scroll (`Shots`), signing up and in, the overview's numbers, a repository connected, a scan
followed live and triaged, an invitation sent and accepted.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from playwright.async_api import Browser, ConsoleMessage, Page, Request

from tests.auth.helpers import PASSWORD
from tests.stubs.smtp import SmtpServer
from tests.web.helpers import ROOT, Server, wait_for_mail

WIDTHS = {360: 780, 1440: 900}


# The README's screenshots (1440 px, light), rewritten by the journey test when this is set to 1.
README_SCREENSHOTS_ENV = "CODEPULSE_README_SCREENSHOTS"


README_SCREENSHOTS = ROOT / "src" / "codepulse" / "web" / "screenshots"


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

    async def page(self, browser: Browser, **context_options: Any) -> Page:
        """A page in a browser context of its own (its own cookies), 1440 px wide, watched."""
        context = await browser.new_context(viewport={"width": 1440, "height": 900}, **context_options)
        page = await context.new_page()
        page.on("console", self.console)
        page.on("pageerror", self.page_error)
        return page


async def no_horizontal_scroll(page: Page) -> None:
    overflow = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"{page.url} is {overflow}px wider than a {page.viewport_size} viewport"


async def _chart_sized(page: Page) -> None:
    """Once the trends chart (if any) has the size of its box at this width."""
    await page.wait_for_function(
        """() => {
            const box = document.querySelector('#trends-chart');
            const plot = box && box.querySelector('.uplot');
            return !plot || Math.abs(plot.offsetWidth - box.clientWidth) <= 2;
        }"""
    )


@dataclass
class Shots:
    """Full-page screenshots for review, in `var/screenshots/<dialect>/` (ignored by git;
    SCREENSHOT_DIR puts them elsewhere): `<name>-360.png` and `<name>-1440.png`, with
    `<name>-dark-*` too when asked; each width without horizontal scroll."""

    directory: Path

    @classmethod
    def for_dialect(cls, dialect: str) -> Shots:
        directory = Path(os.environ.get("SCREENSHOT_DIR", ROOT / "var" / "screenshots")) / dialect
        directory.mkdir(parents=True, exist_ok=True)
        return cls(directory)

    async def take(self, page: Page, name: str, *, dark: bool = False) -> None:
        await self._widths(page, name)
        if dark:
            await page.emulate_media(color_scheme="dark")
            await self._widths(page, f"{name}-dark")
            await page.emulate_media(color_scheme="light")

    async def _widths(self, page: Page, name: str) -> None:
        for width, height in WIDTHS.items():
            await page.set_viewport_size({"width": width, "height": height})
            await _chart_sized(page)
            await no_horizontal_scroll(page)
            await page.screenshot(path=str(self.directory / f"{name}-{width}.png"), full_page=True)

    @staticmethod
    async def readme(page: Page, name: str) -> None:
        """The README's `<name>.png` (1440 px, light, the first screen), only when
        CODEPULSE_README_SCREENSHOTS=1 asks for it."""
        if os.environ.get(README_SCREENSHOTS_ENV) != "1":
            return
        await page.set_viewport_size({"width": 1440, "height": WIDTHS[1440]})
        await _chart_sized(page)
        README_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(README_SCREENSHOTS / f"{name}.png"), full_page=True)


async def fill_sign_up(page: Page, username: str, name: str | None = None, password: str = PASSWORD) -> None:
    """Fill the sign-up form on the page and submit it."""
    await page.fill("#email", f"{username}@example.com")
    await page.fill("#username", username)
    await page.fill("#name", name or username.title())
    await page.fill("#password", password)
    await page.click("button[type=submit]")


async def sign_up_in(page: Page, origin: str, username: str, name: str | None = None) -> None:
    """Sign up from the sign-up page, landing on the overview."""
    await page.goto(origin + "/sign-up")
    await fill_sign_up(page, username, name)
    await page.wait_for_url(origin + "/")


async def sign_in(page: Page, origin: str, login: str, password: str = PASSWORD) -> None:
    await page.goto(origin + "/sign-in")
    await page.fill("#login", login)
    await page.fill("#password", password)
    await page.click("button[type=submit]")
    await page.wait_for_url(origin + "/")


async def see_usage_records(page: Page) -> None:
    """The overview shows `usage_records` synced: the cards, the chart, the breakdowns (totals
    computed by hand), the unpriced model flagged."""
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


_PROGRESS_OBSERVER = """() => {
    const panel = document.getElementById('scan-progress');
    const report = () => window.codepulseProgress(
        panel.dataset.status, panel.querySelector('[data-role=percent]').textContent
    );
    report();
    const all = {attributes: true, subtree: true, childList: true, characterData: true};
    new MutationObserver(report).observe(panel, all);
}"""


async def scan_followed_live(page: Page, server: Server) -> list[tuple[str, str]]:
    """Scan now (on a repository's page), with no worker yet: the scan's page follows the queued
    scan through its event stream, and only then does a worker start, so the scan cannot finish
    before the page looks. Returns what the progress panel showed, (status, percent) as it
    changed, until the stream's last event; the page then reloads with the findings."""
    streams: list[str] = []

    def on_request(request: Request) -> None:
        if request.url.endswith("/events"):
            streams.append(request.url)

    page.on("request", on_request)
    async with page.expect_request(lambda request: request.url.endswith("/events")) as stream:
        await page.click("[data-testid=scan-now]")
    await page.wait_for_url(f"{server.origin}/orgs/*/scans/*")
    scan_url = page.url
    assert (await stream.value).url == f"{scan_url}/events"
    await page.wait_for_selector("#scan-progress progress")
    seen: list[tuple[str, str]] = []
    await page.expose_function("codepulseProgress", lambda status, percent: seen.append((status, percent)))
    await page.evaluate(_PROGRESS_OBSERVER)
    # Queued, with the page following it: only now may a worker take it.
    await server.start_worker()
    # The finished scan's page, reloaded by the stream's last event, follows nothing.
    await page.wait_for_selector("#scan-progress[data-status=succeeded]:not([data-stream])", timeout=60_000)
    page.remove_listener("request", on_request)
    assert streams == [f"{scan_url}/events"], "the page did not follow the scan live"
    assert await page.inner_text("#scan-progress [data-role=percent]") == "100.0"
    return seen


async def invite(page: Page, email: str) -> None:
    """On an organization's members page: invite `email` as a member."""
    await page.fill("#email", email)
    await page.select_option("#role", "member")
    await page.click("[data-testid=send-invitation]")
    await page.wait_for_selector(f"[data-invitation='{email}']")


async def sign_up_and_accept(
    page: Page, server: Server, smtp: SmtpServer, link: str, shots: Shots, *, dark: bool = False
) -> None:
    """mia, in a browser of her own, opens the invitation to "engines" (Analytical Engines) as a
    member signed out, signs up from it and comes back, verifies her email (the mailed link) and
    accepts; she is a member with no write controls. A screenshot of every page."""
    origin = server.origin
    await page.goto(link)
    assert await page.inner_text("[data-testid=invitation-org]") == "Analytical Engines"
    assert await page.inner_text("[data-testid=invitation-role]") == "member"
    await shots.take(page, "invitation-signed-out", dark=dark)
    await page.click("[data-testid=invitation-sign-up]")
    await page.wait_for_url(lambda url: url.startswith(origin + "/sign-up?next=/invitations/"))
    await fill_sign_up(page, "mia")
    await page.wait_for_url(link)
    await page.wait_for_selector("[data-testid=verify-first]")
    await shots.take(page, "invitation-verify-first", dark=dark)
    verification = await wait_for_mail(smtp, "mia@example.com", "/verify-email?token=", server)
    token = SmtpServer.link_token(verification, "/verify-email")
    assert f"{origin}/verify-email?token={token}" in SmtpServer._body(verification)
    await page.goto(f"{origin}/verify-email?token={token}")
    await shots.take(page, "verify-email", dark=dark)
    await page.click("[data-testid=verify]")
    await page.wait_for_url(origin + "/orgs?verified=1")
    await page.wait_for_selector("[data-testid=accept-engines]")
    await shots.take(page, "orgs-invited", dark=dark)
    await page.goto(link)
    await page.wait_for_selector("[data-testid=accept]")
    assert await page.locator("[data-testid=verify-first]").count() == 0
    await shots.take(page, "invitation", dark=dark)
    await page.click("[data-testid=accept]")
    await page.wait_for_url(origin + "/orgs/engines/members")
    assert await page.inner_text("[data-testid=my-role]") == "member"
    assert await page.locator("[data-testid=invite-form]").count() == 0
    assert await page.locator("[data-testid^=change-role-]").count() == 0
    await shots.take(page, "org-members-member", dark=dark)


async def connect_local_repository(page: Page, repos_url: str, path: Path, shots: Shots) -> None:
    """The header's link to the organization's repositories (none yet); there a relative path is
    refused beside the field; the absolute path connects, and the repository's page says it was
    never scanned."""
    await page.click("nav >> text=Repositories")
    await page.wait_for_url(repos_url)
    await page.wait_for_selector("[data-testid=empty]")
    await shots.take(page, "repositories-empty")
    await page.fill("#clone_url", path.name)
    await page.click("[data-testid=connect]")
    await page.wait_for_selector("[data-field=clone_url]")
    await shots.take(page, "repositories-connect-error")
    await page.fill("#clone_url", str(path))
    await page.click("[data-testid=connect]")
    await page.wait_for_selector("[data-testid=never-scanned]")
    assert await page.inner_text("h1") == path.name
    await shots.take(page, "repository-new")


TRIAGE_REASON = "A test fixture, not a real key"


async def scan_and_triage(
    page: Page, server: Server, shots: Shots, *, dark: bool = False, readme: bool = False
) -> None:
    """Scan the repository whose page this is (it holds a fake AWS key at app/settings.py:3),
    following it live (`scan_followed_live`), then dismiss the finding as a false positive with
    a reason (htmx swaps the table): its status and reason show. Screenshots of the scan found
    ("scan", the README's too when `readme`) and triaged."""
    progress = await scan_followed_live(page, server)
    # The panel moved live from queued to done, never backwards, without reloading on the way.
    statuses = [status for status, _ in progress]
    percents = [float(percent) for _, percent in progress]
    assert (statuses[0], percents[0], statuses[-1], percents[-1]) == ("queued", 0, "succeeded", 100), progress
    assert percents == sorted(percents), progress
    row = page.locator("tr[data-rule=aws-access-key-id]")
    await row.wait_for()
    assert await row.get_attribute("data-status") == "open"
    assert "app/settings.py:3" in await row.inner_text()
    await shots.take(page, "scan", dark=dark)
    if readme:
        await Shots.readme(page, "scan")
    await row.locator("select[name=status]").select_option("false_positive")
    await row.locator("input[name=reason]").fill(TRIAGE_REASON)
    await row.locator("[data-testid=dismiss]").click()
    await page.wait_for_selector("tr[data-rule=aws-access-key-id][data-status=false_positive]")
    await page.wait_for_selector("tr[data-rule=aws-access-key-id] [data-testid=reopen]")
    assert await row.locator("[data-testid=dismissed-reason]").inner_text() == TRIAGE_REASON
    assert "false positive" in await row.locator("td[data-label=Status]").inner_text()
    await shots.take(page, "scan-triaged")
