"""Organizations in a real browser (Chromium from the system's packages, driven by Playwright,
against a real `codepulse serve` whose mail goes to the tests' SMTP stub and whose links point at
itself): the owner creates an organization and invites a member by email; the member opens the
mailed link in a second browser context, signs up from it, verifies the email (the mailed link's
page) and accepts; the
owner sees the member, changes their role, looks at the audit log and settings, and signs out.
Screenshots of every page at 360 px and 1440 px, light and dark, go where `test_browser.py` puts its own; any
console error (a CSP violation is one) fails the test.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from email.message import Message
from pathlib import Path

import httpx
import pytest
from playwright.async_api import BrowserContext, Page, async_playwright

from tests.auth.helpers import PASSWORD
from tests.databases import DatabaseServer
from tests.stubs.smtp import SmtpServer
from tests.web.test_browser import CHROMIUM, ROOT, Server, Watch, _free_port, _shoot

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium; .ci/run does)"
)


@pytest.fixture
async def mail_server(
    tmp_path: Path, database_server: DatabaseServer, smtp_server: SmtpServer
) -> AsyncIterator[Server]:
    """`codepulse serve` with a worker delivering its mail to the SMTP stub, and FRONTEND_URL its
    own origin (so the mailed links open the dashboard)."""
    smtp_server.clear()
    url = await database_server.clone("browser-orgs")
    port = _free_port()
    origin = f"http://127.0.0.1:{port}"
    log = tmp_path / "server.log"
    env = {
        **os.environ,
        **{name: str(value) for name, value in smtp_server.settings().items()},
        "DATABASE_URL": url,
        "VAR_DIR": str(tmp_path / "var"),
        "ENVIRONMENT": "development",
        "FRONTEND_URL": origin,
        "SCHEDULER_ENABLED": "false",
        "WORKER_CONCURRENCY": "1",
        "TASK_POLL_SECONDS": "0.2",
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


async def _mail(smtp: SmtpServer, address: str, marker: str, server: Server) -> Message:
    """The first message to `address` whose text holds `marker`, once the server's worker sent it."""
    deadline = time.monotonic() + 30
    while True:
        for message in smtp.messages_to(address):
            if marker in SmtpServer._body(message):
                return message
        assert time.monotonic() < deadline, f"no mail to {address} with {marker}:\n" + server.log.read_text()[-4000:]
        await asyncio.sleep(0.05)


async def _shoot_themes(page: Page, directory: Path, name: str) -> None:
    """Screenshots at both widths, in the light theme and in the dark one (as the system picks)."""
    await _shoot(page, directory, name)
    await page.emulate_media(color_scheme="dark")
    await _shoot(page, directory, f"{name}-dark")
    await page.emulate_media(color_scheme="light")


async def _watched(context: BrowserContext, watch: Watch) -> Page:
    page = await context.new_page()
    page.on("console", watch.console)
    page.on("pageerror", watch.page_error)
    return page


async def _sign_up(page: Page, username: str) -> None:
    await page.fill("#email", f"{username}@example.com")
    await page.fill("#username", username)
    await page.fill("#name", username.title())
    await page.fill("#password", PASSWORD)
    await page.click("button[type=submit]")


async def test_create_invite_accept_and_change_a_role(
    mail_server: Server, database_server: DatabaseServer, smtp_server: SmtpServer
) -> None:
    shots = Path(os.environ.get("SCREENSHOT_DIR", ROOT / "var" / "screenshots")) / database_server.dialect
    shots.mkdir(parents=True, exist_ok=True)
    origin = mail_server.origin
    failing_forms = ("/orgs", "/orgs/engines/invitations")
    watch = Watch(expected_4xx={f"{origin}{path}" for path in failing_forms})
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            owner_context = await browser.new_context(viewport={"width": 1440, "height": 900})
            owner = await _watched(owner_context, watch)

            # The owner signs up and creates an organization (a taken-looking slug first).
            await owner.goto(origin + "/sign-up")
            await _sign_up(owner, "olive")
            await owner.wait_for_url(origin + "/")
            await owner.click("[data-testid=nav-orgs]")
            await owner.wait_for_url(origin + "/orgs")
            await owner.wait_for_selector("[data-testid=no-orgs]")
            await _shoot_themes(owner, shots, "orgs-empty")
            await owner.fill("#name", "Analytical Engines")
            await owner.fill("#slug", "settings")
            await owner.click("[data-testid=create-org]")
            await owner.wait_for_selector("#slug-errors")
            await _shoot_themes(owner, shots, "orgs-create-errors")
            await owner.fill("#slug", "engines")
            await owner.click("[data-testid=create-org]")
            await owner.wait_for_url(origin + "/orgs/engines/members")
            assert await owner.inner_text("[data-testid=my-role]") == "owner"

            # Invite: a wrong address is shown beside the field, then the real one.
            await owner.fill("#email", "not-an-email")
            await owner.click("[data-testid=send-invitation]")
            await owner.wait_for_selector("#email-errors")
            await _shoot_themes(owner, shots, "org-invite-errors")
            await owner.fill("#email", "mia@example.com")
            await owner.select_option("#role", "member")
            await owner.click("[data-testid=send-invitation]")
            await owner.wait_for_selector("[data-invitation='mia@example.com']")
            await _shoot_themes(owner, shots, "org-members-owner")

            # The mailed link points at this dashboard.
            invitation = await _mail(smtp_server, "mia@example.com", "/invitations/", mail_server)
            link = f"{origin}/invitations/{SmtpServer.link_token_in_path(invitation, '/invitations/')}"
            assert link in SmtpServer._body(invitation)

            # The member, in a browser of their own: the link, signed out; sign up from there and
            # come back; verify the email (the mailed link, through the API); accept.
            member_context = await browser.new_context(viewport={"width": 1440, "height": 900})
            member = await _watched(member_context, watch)
            await member.goto(link)
            assert await member.inner_text("[data-testid=invitation-org]") == "Analytical Engines"
            assert await member.inner_text("[data-testid=invitation-role]") == "member"
            await _shoot_themes(member, shots, "invitation-signed-out")
            await member.click("[data-testid=invitation-sign-up]")
            await member.wait_for_url(lambda url: url.startswith(origin + "/sign-up?next=/invitations/"))
            await _sign_up(member, "mia")
            await member.wait_for_url(link)
            await member.wait_for_selector("[data-testid=verify-first]")
            await _shoot_themes(member, shots, "invitation-verify-first")
            verification = await _mail(smtp_server, "mia@example.com", "/verify-email?token=", mail_server)
            token = SmtpServer.link_token(verification, "/verify-email")
            assert f"{origin}/verify-email?token={token}" in SmtpServer._body(verification)
            await member.goto(f"{origin}/verify-email?token={token}")
            await _shoot_themes(member, shots, "verify-email")
            await member.click("[data-testid=verify]")
            await member.wait_for_url(origin + "/orgs?verified=1")
            await member.wait_for_selector("[data-testid=accept-engines]")
            await _shoot_themes(member, shots, "orgs-invited")
            await member.goto(link)
            await member.wait_for_selector("[data-testid=accept]")
            assert await member.locator("[data-testid=verify-first]").count() == 0
            await _shoot_themes(member, shots, "invitation")
            await member.click("[data-testid=accept]")
            await member.wait_for_url(origin + "/orgs/engines/members")
            assert await member.inner_text("[data-testid=my-role]") == "member"
            assert await member.locator("[data-testid=invite-form]").count() == 0
            assert await member.locator("[data-testid^=change-role-]").count() == 0
            await _shoot_themes(member, shots, "org-members-member")

            # The owner sees the member and makes them an admin.
            await owner.reload()
            row = owner.locator("[data-member=mia]")
            await row.wait_for()
            assert await row.get_attribute("data-role") == "member"
            assert await owner.locator("[data-invitation='mia@example.com']").count() == 0
            await owner.select_option("[data-testid=role-mia]", "admin")
            await owner.click("[data-testid=change-role-mia]")
            await owner.wait_for_selector("[data-member=mia][data-role=admin]")

            # The switcher, the audit log and the settings.
            await owner.click("[data-testid=org-switcher] summary")
            await owner.wait_for_selector("[data-testid=org-switcher] [data-org=engines]")
            await _shoot_themes(owner, shots, "org-switcher")
            await owner.click("nav.tabs >> text=Audit log")
            await owner.wait_for_url(origin + "/orgs/engines/audit")
            actions = await owner.eval_on_selector_all(
                "[data-testid=audit] tbody tr", "rows => rows.map(r => r.dataset.action)"
            )
            assert actions[:3] == ["member.role_changed", "member.joined", "invitation.created"]
            await _shoot_themes(owner, shots, "org-audit")
            await owner.click("nav.tabs >> text=Settings")
            await owner.wait_for_url(origin + "/orgs/engines/settings")
            # Deleting waits for the slug typed (the server checks it too: route tests).
            delete = owner.locator("[data-testid=delete-org]")
            assert await delete.is_disabled()
            await owner.fill("#confirm_slug", "engines")
            assert await delete.is_enabled()
            await owner.fill("#confirm_slug", "wrong")
            assert await delete.is_disabled()
            await _shoot_themes(owner, shots, "org-settings")
            await owner.click("[data-testid=nav-orgs]")
            await owner.wait_for_url(origin + "/orgs")
            await owner.wait_for_selector("[data-testid=my-orgs] [data-org=engines]")
            await _shoot_themes(owner, shots, "orgs")

            # Sign out.
            await owner.click("[data-testid=sign-out]")
            await owner.wait_for_url(origin + "/sign-in")
            await owner.goto(origin + "/orgs/engines/members")
            await owner.wait_for_url(origin + "/sign-in?next=/orgs/engines/members")
            await member_context.close()
            await owner_context.close()
        finally:
            await browser.close()
    assert watch.problems == []
