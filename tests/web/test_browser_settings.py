"""Settings and the password reset in a real browser (against a `codepulse serve` whose mail goes
to the SMTP stub and whose links point at itself): sign up, save the profile (an error beside a
field first), sign out; "Forgot password?", the mailed link, a new password, sign in with it;
delete the account. Screenshots as the other browser tests take them; any console error (a CSP
violation is one) fails the test.
"""

from __future__ import annotations

from playwright.async_api import Browser

from tests.auth.helpers import PASSWORD
from tests.stubs.smtp import SmtpServer
from tests.web.browsing import Shots, Watch, sign_up_in
from tests.web.conftest import Serve
from tests.web.helpers import wait_for_mail

NEW_PASSWORD = "a-brand-new-passphrase-7"


async def test_settings_and_password_reset(
    serve: Serve, chromium: Browser, shots: Shots, smtp_server: SmtpServer
) -> None:
    server = await serve("browser-settings", smtp=smtp_server, workers=1)
    origin = server.origin
    watch = Watch(expected_4xx={f"{origin}/settings/profile", f"{origin}/sign-in"})
    page = await watch.page(chromium)
    await sign_up_in(page, origin, "rita")

    # The profile: a bad username beside its field, then saved with a time zone.
    await page.goto(origin + "/settings")
    await page.fill("#username", "no spaces")
    await page.click("[data-testid=save-profile]")
    await page.wait_for_selector("#username-errors")
    await shots.take(page, "settings-profile-errors", dark=True)
    await page.fill("#username", "rita-l")
    await page.select_option("#timezone", "Europe/Lisbon")
    await page.click("[data-testid=save-profile]")
    await page.wait_for_url(origin + "/settings?saved=profile")
    assert await page.inner_text("[data-testid=notice]") == "Your profile is saved."
    assert await page.input_value("#timezone") == "Europe/Lisbon"
    await shots.take(page, "settings-saved", dark=True)
    await page.click("[data-testid=sign-out]")
    await page.wait_for_url(origin + "/sign-in")

    # Forgot password: the mailed link, a new password, then sign in with it.
    await page.click("[data-testid=forgot-password]")
    await page.wait_for_url(origin + "/forgot-password")
    await page.fill("#email", "rita@example.com")
    await page.click("[data-testid=send-reset]")
    await page.wait_for_selector("[data-testid=notice]")
    message = await wait_for_mail(smtp_server, "rita@example.com", "/reset-password", server)
    link = f"{origin}/reset-password?token={SmtpServer.link_token(message, '/reset-password')}"
    await page.goto(link)
    await shots.take(page, "reset-password", dark=True)
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
    assert watch.problems == []
