"""Settings and the password reset in a real browser (against the `codepulse serve` of
`test_browser_orgs.py`, whose mail goes to the SMTP stub and whose links point at itself): sign up,
save the profile (an error beside a field first), sign out; "Forgot password?", the mailed link,
a new password, sign in with it; delete the account. Screenshots as the other browser tests take them; any console
error (a CSP violation is one) fails the test.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from playwright.async_api import async_playwright

from tests.auth.helpers import PASSWORD
from tests.databases import DatabaseServer
from tests.stubs.smtp import SmtpServer
from tests.web.test_browser import CHROMIUM, ROOT, Server, Watch
from tests.web.test_browser_orgs import _mail, _shoot_themes, _sign_up, _watched
from tests.web.test_browser_orgs import mail_server as mail_server

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium; .ci/run does)"
)

NEW_PASSWORD = "a-brand-new-passphrase-7"


async def test_settings_and_password_reset(
    mail_server: Server, database_server: DatabaseServer, smtp_server: SmtpServer
) -> None:
    shots = Path(os.environ.get("SCREENSHOT_DIR", ROOT / "var" / "screenshots")) / database_server.dialect
    shots.mkdir(parents=True, exist_ok=True)
    origin = mail_server.origin
    watch = Watch(expected_4xx={f"{origin}/settings/profile", f"{origin}/sign-in"})
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            context = await browser.new_context(viewport={"width": 1440, "height": 900})
            page = await _watched(context, watch)
            await page.goto(origin + "/sign-up")
            await _sign_up(page, "rita")
            await page.wait_for_url(origin + "/")

            # The profile: a bad username beside its field, then saved with a time zone.
            await page.goto(origin + "/settings")
            await page.fill("#username", "no spaces")
            await page.click("[data-testid=save-profile]")
            await page.wait_for_selector("#username-errors")
            await _shoot_themes(page, shots, "settings-profile-errors")
            await page.fill("#username", "rita-l")
            await page.select_option("#timezone", "Europe/Lisbon")
            await page.click("[data-testid=save-profile]")
            await page.wait_for_url(origin + "/settings?saved=profile")
            assert await page.inner_text("[data-testid=notice]") == "Your profile is saved."
            assert await page.input_value("#timezone") == "Europe/Lisbon"
            await _shoot_themes(page, shots, "settings-saved")
            await page.click("[data-testid=sign-out]")
            await page.wait_for_url(origin + "/sign-in")

            # Forgot password: the mailed link, a new password, then sign in with it.
            await page.click("[data-testid=forgot-password]")
            await page.wait_for_url(origin + "/forgot-password")
            await page.fill("#email", "rita@example.com")
            await page.click("[data-testid=send-reset]")
            await page.wait_for_selector("[data-testid=notice]")
            message = await _mail(smtp_server, "rita@example.com", "/reset-password", mail_server)
            link = f"{origin}/reset-password?token={SmtpServer.link_token(message, '/reset-password')}"
            await page.goto(link)
            await _shoot_themes(page, shots, "reset-password")
            await page.fill("#new_password", NEW_PASSWORD)
            await page.click("[data-testid=reset]")
            await page.wait_for_url(origin + "/sign-in?done=reset")
            await page.fill("#login", "rita-l")
            await page.fill("#password", PASSWORD)
            await page.click("button[type=submit]")
            await page.wait_for_selector("[data-field=form]")  # the old password no longer works
            await page.fill("#password", NEW_PASSWORD)
            await page.click("button[type=submit]")
            await page.wait_for_url(origin + "/")

            # Delete the account: the button waits for the username.
            await page.goto(origin + "/settings")
            delete = page.locator("[data-testid=delete-account]")
            assert await delete.is_disabled()
            await page.fill("#confirm_username", "rita-l")
            assert await delete.is_enabled()
            await delete.click()
            await page.wait_for_url(origin + "/sign-in?done=deleted")
            await page.goto(origin + "/settings")
            await page.wait_for_url(origin + "/sign-in?next=/settings")
            await context.close()
        finally:
            await browser.close()
    assert watch.problems == []
