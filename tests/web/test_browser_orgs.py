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

from playwright.async_api import Browser

from tests.stubs.smtp import SmtpServer
from tests.web.browsing import Shots, Watch, fill_sign_up, invite, sign_up_and_accept
from tests.web.conftest import Serve
from tests.web.helpers import mailed_invitation


async def test_create_invite_accept_and_change_a_role(
    serve: Serve, chromium: Browser, shots: Shots, smtp_server: SmtpServer
) -> None:
    server = await serve("browser-orgs", smtp=smtp_server, workers=1)
    origin = server.origin
    failing_forms = ("/orgs", "/orgs/engines/invitations")
    watch = Watch(expected_4xx={f"{origin}{path}" for path in failing_forms})
    owner = await watch.page(chromium)

    # The owner signs up and creates an organization (a taken-looking slug first).
    await owner.goto(origin + "/sign-up")
    await fill_sign_up(owner, "olive")
    await owner.wait_for_url(origin + "/")
    await owner.click("[data-testid=nav-orgs]")
    await owner.wait_for_url(origin + "/orgs")
    await owner.wait_for_selector("[data-testid=no-orgs]")
    await shots.take(owner, "orgs-empty", dark=True)
    await owner.fill("#name", "Analytical Engines")
    await owner.fill("#slug", "settings")
    await owner.click("[data-testid=create-org]")
    await owner.wait_for_selector("#slug-errors")
    await shots.take(owner, "orgs-create-errors", dark=True)
    await owner.fill("#slug", "engines")
    await owner.click("[data-testid=create-org]")
    await owner.wait_for_url(origin + "/orgs/engines/members")
    assert await owner.inner_text("[data-testid=my-role]") == "owner"

    # Invite: a wrong address is shown beside the field, then the real one.
    await owner.fill("#email", "not-an-email")
    await owner.click("[data-testid=send-invitation]")
    await owner.wait_for_selector("#email-errors")
    await shots.take(owner, "org-invite-errors", dark=True)
    await invite(owner, "mia@example.com")
    await shots.take(owner, "org-members-owner", dark=True)

    # The member, in a browser of their own: the mailed link, signed out; sign up from there and
    # come back; verify the email (the mailed link); accept.
    link = await mailed_invitation(smtp_server, server, "mia@example.com")
    member = await watch.page(chromium)
    await sign_up_and_accept(member, server, smtp_server, link, shots, dark=True)

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
    await shots.take(owner, "org-switcher", dark=True)
    await owner.click("nav.tabs >> text=Audit log")
    await owner.wait_for_url(origin + "/orgs/engines/audit")
    actions = await owner.eval_on_selector_all(
        "[data-testid=audit] tbody tr", "rows => rows.map(r => r.dataset.action)"
    )
    assert actions[:3] == ["member.role_changed", "member.joined", "invitation.created"]
    await shots.take(owner, "org-audit", dark=True)
    await owner.click("nav.tabs >> text=Settings")
    await owner.wait_for_url(origin + "/orgs/engines/settings")
    # Deleting waits for the slug typed (the server checks it too: route tests).
    delete = owner.locator("[data-testid=delete-org]")
    assert await delete.is_disabled()
    await owner.fill("#confirm_slug", "engines")
    assert await delete.is_enabled()
    await owner.fill("#confirm_slug", "wrong")
    assert await delete.is_disabled()
    await shots.take(owner, "org-settings", dark=True)
    await owner.click("[data-testid=nav-orgs]")
    await owner.wait_for_url(origin + "/orgs")
    await owner.wait_for_selector("[data-testid=my-orgs] [data-org=engines]")
    await shots.take(owner, "orgs", dark=True)

    # Sign out.
    await owner.click("[data-testid=sign-out]")
    await owner.wait_for_url(origin + "/sign-in")
    await owner.goto(origin + "/orgs/engines/members")
    await owner.wait_for_url(origin + "/sign-in?next=/orgs/engines/members")
    assert watch.problems == []
