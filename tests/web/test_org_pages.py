"""Organizations in the browser, route by route: every page for each role (owner, admin, member,
viewer, an outsider, a member of another organization), CSRF refusal and the role rules on every
form, creating, renaming and deleting an organization, members' roles and removal, invitations
(sent, revoked; answered from the mailed link or the organizations page), the audit log's pages.
"""

from __future__ import annotations

import re
import uuid

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession

from codepulse.web import orgs as web_orgs
from tests.auth.helpers import PASSWORD
from tests.factories import MakeMember, MakeOrg, MakeUser
from tests.helpers import FakeClock, Mailbox
from tests.orgs.helpers import put_on_plan
from tests.web.conftest import Clients, Team
from tests.web.helpers import csrf_of, error_page, html_of


@pytest.fixture
async def team(team: Team, session: AsyncSession) -> Team:
    """The shared team, on the team plan: seats for the invitations."""
    await put_on_plan(session, "engines", "team")
    return team


PAGES = ("/orgs/engines/members", "/orgs/engines/audit", "/orgs/engines/settings")


async def test_every_page_for_each_role(team: Team, browser: Clients) -> None:
    owner, admin, member, viewer, outsider = (
        await browser(team.owner), await browser(team.admin), await browser(team.member),
        await browser(team.viewer), await browser(team.outsider),
    )  # fmt: skip
    for client in (owner, admin):
        members = html_of(await client.get("/orgs/engines/members"), 200)
        assert 'data-testid="invite-form"' in members
        assert 'data-testid="role-mia"' in members
        assert 'data-testid="remove-mia"' in members
        assert "Analytical Engines" in html_of(await client.get("/orgs/engines/audit"), 200)
        settings = html_of(await client.get("/orgs/engines/settings"), 200)
        assert 'data-testid="rename-form"' in settings
        assert ('data-testid="delete-form"' in settings) is (client is owner)
    # An admin manages everyone below owner; only owners manage owners.
    assert 'data-testid="role-olive"' in html_of(await owner.get("/orgs/engines/members"), 200)
    assert 'data-testid="role-olive"' not in html_of(await admin.get("/orgs/engines/members"), 200)

    for client in (member, viewer):
        page = html_of(await client.get("/orgs/engines/members"), 200)
        assert 'data-member="olive"' in page
        assert 'data-member="vic"' in page
        for write in ('data-testid="invite-form"', 'data-testid="role-', 'data-testid="remove-', "/invitations"):
            assert write not in page
        assert 'data-testid="leave"' in page  # anyone may leave, as in the API
        assert "/orgs/engines/settings" not in page
        assert "/orgs/engines/audit" not in page
        error_page(await client.get("/orgs/engines/audit"), 403)
        error_page(await client.get("/orgs/engines/settings"), 403)

    # An outsider (a member of another organization) and a missing organization: the 404 page.
    for path in (*PAGES, "/orgs/engines", "/orgs/no-such-org/members", f"/orgs/{uuid.uuid4()}/members"):
        response = await outsider.get(path)
        error_page(response, 404)
        assert "Analytical Engines" not in response.text
    assert (await owner.get("/orgs/engines")).headers["location"] == "/orgs/engines/members"

    # Signed out: to the sign-in page, and back here after.
    anonymous = await browser(None)
    signed_out = await anonymous.get("/orgs/engines/members")
    assert (signed_out.status_code, signed_out.headers["location"]) == (303, "/sign-in?next=/orgs/engines/members")


async def test_the_switcher_lists_my_organizations(team: Team, browser: Clients, make_org: MakeOrg) -> None:
    await make_org(team.owner, slug="mills", name="Difference Mills")
    page = html_of(await (await browser(team.owner)).get("/orgs/engines/members"), 200)
    switcher = page[page.index('data-testid="org-switcher"') :]
    switcher = switcher[: switcher.index("</details>")]
    assert re.findall(r'data-org="([a-z-]+)"', switcher) == ["engines", "mills"]
    assert re.search(r'aria-current="true" data-org="engines"', switcher)
    assert "looms" not in switcher


def _posts(team: Team) -> list[str]:
    member_id, invitation_id = team.member.model.id, uuid.uuid4()
    return [
        f"/orgs/engines/members/{member_id}/role",
        f"/orgs/engines/members/{member_id}/remove",
        "/orgs/engines/invitations",
        f"/orgs/engines/invitations/{invitation_id}/revoke",
        "/orgs/engines/settings",
        "/orgs/engines/delete",
    ]


async def test_every_form_checks_csrf_then_the_organization_then_the_role(team: Team, browser: Clients) -> None:
    owner, viewer, member, outsider = (
        await browser(team.owner), await browser(team.viewer), await browser(team.member), await browser(team.outsider)
    )  # fmt: skip
    form = {
        "role": "owner",
        "email": "x@example.com",
        "name": "Taken over",
        "slug": "stolen",
        "confirm_slug": "engines",
    }
    tokens = {}
    for name, client in (("owner", owner), ("viewer", viewer), ("member", member), ("outsider", outsider)):
        tokens[name] = csrf_of((await client.get("/orgs")).text)
    for path in _posts(team):
        # No token, or another session's token: the 403 page, nothing done.
        for data in (form, {**form, "csrf_token": tokens["viewer"]}, {**form, "csrf_token": "0" * 64}):
            refused = await owner.post(path, data=data)
            assert "This form has expired" in html_of(refused, 403)
        # An outsider with a good token: the 404 page.
        error_page(await outsider.post(path, data={**form, "csrf_token": tokens["outsider"]}), 404)
        # A viewer, or a member, with a good token: the 403 page.
        for name, client in (("viewer", viewer), ("member", member)):
            if path.endswith(f"{team.member.model.id}/remove") and name == "member":
                continue  # leaving: anyone may
            error_page(await client.post(path, data={**form, "csrf_token": tokens[name]}), 403)
    for path in ("/orgs", f"/me/invitations/{uuid.uuid4()}/accept", f"/me/invitations/{uuid.uuid4()}/decline"):
        assert "This form has expired" in html_of(await owner.post(path, data={"name": "x"}), 403)
    # Nothing changed.
    page = html_of(await owner.get("/orgs/engines/members"), 200)
    assert re.search(r'data-member="mia" data-role="member"', page)
    assert "No pending invitations." in page
    assert html_of(await owner.get("/orgs/engines/settings"), 200).count('value="Analytical Engines"') == 1


async def test_create_an_organization(browser: Clients, make_user: MakeUser, make_org: MakeOrg) -> None:
    ada = await make_user("ada")
    await make_org(slug="taken")
    client = await browser(ada)
    page = html_of(await client.get("/orgs"), 200)
    assert 'data-testid="no-orgs"' in page
    csrf = csrf_of(page)
    invalid = html_of(await client.post("/orgs", data={"csrf_token": csrf, "name": "", "slug": "a"}), 422)
    assert 'data-field="name"' in invalid
    assert 'data-field="slug"' in invalid
    reserved = html_of(await client.post("/orgs", data={"csrf_token": csrf, "name": "Mine", "slug": "settings"}), 422)
    assert "&#39;settings&#39; is reserved" in reserved
    taken = html_of(await client.post("/orgs", data={"csrf_token": csrf, "name": "Mine", "slug": "taken"}), 409)
    assert re.search(r'data-field="slug">\s*<li>This slug is taken.', taken)
    assert 'value="Mine"' in taken  # the values stay in the form

    created = await client.post("/orgs", data={"csrf_token": csrf, "name": "Ada's Engines", "slug": ""})
    assert (created.status_code, created.headers["location"]) == (303, "/orgs/ada-s-engines/members")
    members = html_of(await client.get(created.headers["location"]), 200)
    assert re.search(r'data-member="ada" data-role="owner"', members)
    assert 'data-org="ada-s-engines"' in html_of(await client.get("/orgs"), 200)


async def test_change_roles_and_remove_members(team: Team, browser: Clients, clock: FakeClock) -> None:
    owner, admin, viewer = await browser(team.owner), await browser(team.admin), await browser(team.viewer)
    csrf = csrf_of((await owner.get("/orgs/engines/members")).text)
    mia, olive, vic = team.member.model.id, team.owner.model.id, team.viewer.model.id

    changed = await owner.post(f"/orgs/engines/members/{mia}/role", data={"csrf_token": csrf, "role": "admin"})
    assert (changed.status_code, changed.headers["location"]) == (303, "/orgs/engines/members")
    assert re.search(r'data-member="mia" data-role="admin"', html_of(await owner.get("/orgs/engines/members"), 200))
    bad = await owner.post(f"/orgs/engines/members/{mia}/role", data={"csrf_token": csrf, "role": "emperor"})
    assert 'data-field="members"' in html_of(bad, 422)
    # The last owner cannot step down: the API's 409, on the page.
    last = await owner.post(f"/orgs/engines/members/{olive}/role", data={"csrf_token": csrf, "role": "member"})
    assert "An organization needs an owner" in html_of(last, 409)
    # An admin cannot touch an owner, nor make one.
    admin_csrf = csrf_of((await admin.get("/orgs/engines/members")).text)
    for target, role in ((olive, "member"), (vic, "owner")):
        refused = await admin.post(
            f"/orgs/engines/members/{target}/role", data={"csrf_token": admin_csrf, "role": role}
        )
        assert "Only owners can change owners or make owners." in html_of(refused, 403)
    refused = await admin.post(f"/orgs/engines/members/{olive}/remove", data={"csrf_token": admin_csrf})
    assert "Only owners can remove owners." in html_of(refused, 403)
    missing = await admin.post(f"/orgs/engines/members/{uuid.uuid4()}/remove", data={"csrf_token": admin_csrf})
    error_page(missing, 404)

    clock.advance(seconds=1)
    removed = await admin.post(f"/orgs/engines/members/{mia}/remove", data={"csrf_token": admin_csrf})
    assert (removed.status_code, removed.headers["location"]) == (303, "/orgs/engines/members")
    assert 'data-member="mia"' not in html_of(await owner.get("/orgs/engines/members"), 200)
    # A viewer leaves: back to the organizations page, and the organization is gone for them.
    viewer_csrf = csrf_of((await viewer.get("/orgs/engines/members")).text)
    clock.advance(seconds=1)
    left = await viewer.post(f"/orgs/engines/members/{vic}/remove", data={"csrf_token": viewer_csrf})
    assert (left.status_code, left.headers["location"]) == (303, "/orgs")
    error_page(await viewer.get("/orgs/engines/members"), 404)
    audit = html_of(await owner.get("/orgs/engines/audit"), 200)
    actions = re.findall(r'<tr data-action="([a-z._]+)">', audit)
    assert actions == ["member.left", "member.removed", "member.role_changed"]  # newest first


async def test_send_and_revoke_invitations(team: Team, browser: Clients, make_user: MakeUser) -> None:
    admin = await browser(team.admin)
    csrf = csrf_of((await admin.get("/orgs/engines/members")).text)
    invalid = html_of(await admin.post("/orgs/engines/invitations", data={"csrf_token": csrf, "email": "nope"}), 422)
    assert re.search(r'data-field="email"', invalid)
    assert 'value="nope"' in invalid
    above = await admin.post(
        "/orgs/engines/invitations", data={"csrf_token": csrf, "email": "g@example.com", "role": "owner"}
    )
    assert re.search(r'data-field="role">\s*<li>You cannot invite someone above your own role.', html_of(above, 403))
    already = await admin.post("/orgs/engines/invitations", data={"csrf_token": csrf, "email": "mia@example.com"})
    assert re.search(r'data-field="email">\s*<li>This person is already a member.', html_of(already, 409))

    sent = await admin.post(
        "/orgs/engines/invitations", data={"csrf_token": csrf, "email": "grace@example.com", "role": "admin"}
    )
    assert (sent.status_code, sent.headers["location"]) == (303, "/orgs/engines/members?invited=1")
    assert 'data-testid="notice">Invitation sent.<' in html_of(await admin.get(sent.headers["location"]), 200)
    again = await admin.post("/orgs/engines/invitations", data={"csrf_token": csrf, "email": "grace@example.com"})
    assert "already has a pending invitation" in html_of(again, 409)
    page = html_of(await admin.get("/orgs/engines/members"), 200)
    [invitation_id] = re.findall(r'action="/orgs/engines/invitations/([0-9a-f-]+)/revoke"', page)
    assert re.search(r'data-invitation="grace@example.com">\s*<th scope="row">grace@example.com</th>\s*<td>admin', page)

    revoked = await admin.post(f"/orgs/engines/invitations/{invitation_id}/revoke", data={"csrf_token": csrf})
    assert revoked.status_code == 303
    assert "No pending invitations." in html_of(await admin.get("/orgs/engines/members"), 200)
    again_revoked = await admin.post(f"/orgs/engines/invitations/{invitation_id}/revoke", data={"csrf_token": csrf})
    error_page(again_revoked, 404)


async def test_the_seat_quota_is_shown_on_the_form(
    browser: Clients, make_user: MakeUser, make_org: MakeOrg, make_member: MakeMember
) -> None:
    owner = await make_user("olive")
    org = await make_org(owner, slug="small")  # the free plan: 3 seats
    await make_member(org, "member", "mia")
    await make_member(org, "member", "max")
    client = await browser(owner)
    csrf = csrf_of((await client.get("/orgs/small/members")).text)
    full = await client.post("/orgs/small/invitations", data={"csrf_token": csrf, "email": "grace@example.com"})
    page = html_of(full, 402)
    assert re.search(r'<div class="alert" role="alert" data-field="form">\s*<p>[^<]*seats', page)
    assert 'value="grace@example.com"' in page


async def _invite(client: httpx.AsyncClient, mailbox: Mailbox, email: str, role: str = "member") -> str:
    """Invite `email` from the members page; the token of the mailed link."""
    csrf = csrf_of((await client.get("/orgs/engines/members")).text)
    sent = await client.post("/orgs/engines/invitations", data={"csrf_token": csrf, "email": email, "role": role})
    assert sent.status_code == 303, sent.text
    await mailbox.deliver()
    message = mailbox.messages_to(email)[-1]
    return mailbox.link_token_in_path(message, "/invitations/")


async def test_accept_from_the_mailed_link_after_signing_in(
    team: Team, browser: Clients, make_user: MakeUser, mailbox: Mailbox
) -> None:
    await make_user("grace", password=PASSWORD)
    token = await _invite(await browser(team.owner), mailbox, "grace@example.com", "admin")
    link = f"/invitations/{token}"

    grace = await browser(None)
    page = html_of(await grace.get(link), 200)
    assert 'data-testid="invitation-org">Analytical Engines<' in page
    assert 'data-testid="invitation-role">admin<' in page
    assert f'href="/sign-in?next={link}"' in page
    assert f'href="/sign-up?next={link}"' in page
    assert 'data-testid="accept"' not in page
    # Sign in from there: back to the invitation.
    sign_in = html_of(await grace.get(f"/sign-in?next={link}"), 200)
    assert f'href="/sign-up?next={link}"' in sign_in
    data = {"csrf_token": csrf_of(sign_in), "login": "grace", "password": PASSWORD, "next": link}
    signed_in = await grace.post("/sign-in", data=data)
    assert (signed_in.status_code, signed_in.headers["location"]) == (303, link)
    page = html_of(await grace.get(link), 200)
    assert 'data-testid="accept"' in page
    assert 'data-testid="decline"' in page
    csrf = csrf_of(page)

    assert "This form has expired" in html_of(await grace.post(f"{link}/accept", data={}), 403)
    accepted = await grace.post(f"{link}/accept", data={"csrf_token": csrf})
    assert (accepted.status_code, accepted.headers["location"]) == (303, "/orgs/engines/members")
    assert re.search(r'data-member="grace" data-role="admin"', html_of(await grace.get("/orgs/engines/members"), 200))
    # Used: the link is dead, and so are its forms.
    assert 'data-testid="accept"' not in html_of(await grace.get(link), 404)
    error_page(await grace.post(f"{link}/decline", data={"csrf_token": csrf}), 404)
    used = html_of(await grace.post(f"{link}/accept", data={"csrf_token": csrf}), 404)
    assert "cannot be used" in used
    html_of(await grace.get("/invitations/not-a-token"), 404)


async def test_sign_up_from_the_link_then_verify_and_accept(team: Team, browser: Clients, mailbox: Mailbox) -> None:
    token = await _invite(await browser(team.admin), mailbox, "hedy@example.com")
    link = f"/invitations/{token}"
    hedy = await browser(None)
    sign_up = html_of(await hedy.get(f"/sign-up?next={link}"), 200)
    assert f'name="next" value="{link}"' in sign_up
    data = {
        "csrf_token": csrf_of(sign_up), "email": "hedy@example.com", "username": "hedy", "name": "Hedy",
        "password": PASSWORD, "next": link,
    }  # fmt: skip
    signed_up = await hedy.post("/sign-up", data=data)
    assert (signed_up.status_code, signed_up.headers["location"]) == (303, link)

    # Unverified: told to verify first; accepting and declining are refused with the API's reasons.
    page = html_of(await hedy.get(link), 200)
    assert 'data-testid="verify-first"' in page
    csrf = csrf_of(page)
    refused = await hedy.post(f"{link}/accept", data={"csrf_token": csrf})
    assert "Verify your email before accepting an invitation." in html_of(refused, 403)
    refused = await hedy.post(f"{link}/decline", data={"csrf_token": csrf})
    assert "Verify your email before answering an invitation." in html_of(refused, 403)
    mine = html_of(await hedy.get("/orgs"), 200)
    assert 'data-testid="verify-first"' in mine
    assert "Analytical Engines" not in mine

    # The verification mail's link: a page whose button verifies (opening it does nothing).
    await mailbox.deliver()
    verify = mailbox.link_token(mailbox.messages_to("hedy@example.com")[-1], "/verify-email")
    landing = html_of(await hedy.get(f"/verify-email?token={verify}"), 200)
    assert 'data-testid="verify"' in landing
    assert 'data-testid="verify-first"' in html_of(await hedy.get(link), 200)
    assert "This form has expired" in html_of(await hedy.post("/verify-email", data={"token": verify}), 403)
    verified = await hedy.post("/verify-email", data={"csrf_token": csrf_of(landing), "token": verify})
    assert (verified.status_code, verified.headers["location"]) == (303, "/orgs?verified=1")
    mine = html_of(await hedy.get("/orgs?verified=1"), 200)
    assert 'data-testid="notice">Your email is verified.<' in mine
    assert 'data-testid="accept-engines"' in mine  # the invitation, now answerable here too
    assert 'data-testid="verify-first"' not in html_of(await hedy.get(link), 200)
    accepted = await hedy.post(f"{link}/accept", data={"csrf_token": csrf})
    assert accepted.headers["location"] == "/orgs/engines/members"


async def test_decline_and_the_wrong_account(
    team: Team, browser: Clients, make_user: MakeUser, mailbox: Mailbox
) -> None:
    owner = await browser(team.owner)
    token = await _invite(owner, mailbox, "grace@example.com")
    link = f"/invitations/{token}"
    # Signed in as someone else: told so, no buttons; a forged decline is refused.
    otto = await browser(team.outsider)
    page = html_of(await otto.get(link), 200)
    assert 'data-testid="other-email"' in page
    assert 'data-testid="accept"' not in page
    refused = await otto.post(f"{link}/accept", data={"csrf_token": csrf_of(page)})
    assert "sent to another email address" in html_of(refused, 403)
    html_of(await otto.post(f"{link}/decline", data={"csrf_token": csrf_of(page)}), 404)

    grace = await browser(await make_user("grace"))
    csrf = csrf_of(html_of(await grace.get(link), 200))
    assert "This form has expired" in html_of(await grace.post(f"{link}/decline", data={}), 403)
    declined = await grace.post(f"{link}/decline", data={"csrf_token": csrf})
    assert (declined.status_code, declined.headers["location"]) == (303, "/orgs?declined=1")
    assert 'data-testid="notice">Invitation declined.<' in html_of(await grace.get("/orgs?declined=1"), 200)
    html_of(await grace.get(link), 404)
    assert "No pending invitations." in html_of(await owner.get("/orgs/engines/members"), 200)
    assert '<tr data-action="invitation.declined">' in html_of(await owner.get("/orgs/engines/audit"), 200)


async def test_answer_my_invitations_from_the_organizations_page(
    team: Team, browser: Clients, make_user: MakeUser, mailbox: Mailbox, make_org: MakeOrg
) -> None:
    grace_account = await make_user("grace")
    await make_org(team.owner, slug="mills", name="Difference Mills")
    owner = await browser(team.owner)
    await _invite(owner, mailbox, "grace@example.com", "viewer")
    csrf_mills = csrf_of((await owner.get("/orgs/mills/members")).text)
    sent = await owner.post("/orgs/mills/invitations", data={"csrf_token": csrf_mills, "email": "grace@example.com"})
    assert sent.status_code == 303

    grace = await browser(grace_account)
    page = html_of(await grace.get("/orgs"), 200)
    assert "Analytical Engines" in page
    assert "Difference Mills" in page
    csrf = csrf_of(page)
    ids = {
        slug: invitation_id
        for invitation_id, slug in re.findall(r'action="/me/invitations/([0-9a-f-]+)/accept"[^>]*>\s*<input[^>]*>\s*'
                                              r'<button type="submit" data-testid="accept-([a-z-]+)"', page)
    }  # fmt: skip
    assert set(ids) == {"engines", "mills"}
    assert "This form has expired" in html_of(await grace.post(f"/me/invitations/{ids['engines']}/accept"), 403)
    accepted = await grace.post(f"/me/invitations/{ids['engines']}/accept", data={"csrf_token": csrf})
    assert accepted.headers["location"] == "/orgs/engines/members"
    declined = await grace.post(f"/me/invitations/{ids['mills']}/decline", data={"csrf_token": csrf})
    assert declined.headers["location"] == "/orgs?declined=1"
    page = html_of(await grace.get("/orgs"), 200)
    assert "my-invitations" not in page
    assert 'data-org="engines"' in page
    assert 'data-org="mills"' not in page
    # Someone else's invitation, or one already answered: the 404 page.
    error_page(await grace.post(f"/me/invitations/{ids['mills']}/accept", data={"csrf_token": csrf}), 404)
    otto = await browser(team.outsider)
    otto_csrf = csrf_of((await otto.get("/orgs")).text)
    error_page(await otto.post(f"/me/invitations/{ids['engines']}/decline", data={"csrf_token": otto_csrf}), 404)


async def test_rename_and_delete(team: Team, browser: Clients, make_org: MakeOrg) -> None:
    await make_org(slug="taken")
    owner, admin = await browser(team.owner), await browser(team.admin)
    csrf = csrf_of((await admin.get("/orgs/engines/settings")).text)
    invalid = await admin.post("/orgs/engines/settings", data={"csrf_token": csrf, "name": " ", "slug": "-x-"})
    text = html_of(invalid, 422)
    assert 'data-field="name"' in text
    assert 'data-field="slug"' in text
    taken = await admin.post("/orgs/engines/settings", data={"csrf_token": csrf, "name": "AE", "slug": "taken"})
    assert re.search(r'data-field="slug">\s*<li>This slug is taken.', html_of(taken, 409))
    renamed = await admin.post(
        "/orgs/engines/settings", data={"csrf_token": csrf, "name": "Engines Ltd", "slug": "ltd"}
    )
    assert (renamed.status_code, renamed.headers["location"]) == (303, "/orgs/ltd/settings")
    assert "Engines Ltd" in html_of(await admin.get("/orgs/ltd/settings"), 200)
    error_page(await admin.get("/orgs/engines/settings"), 404)
    # Only owners delete.
    error_page(await admin.post("/orgs/ltd/delete", data={"csrf_token": csrf, "confirm_slug": "ltd"}), 403)
    owner_csrf = csrf_of((await owner.get("/orgs/ltd/settings")).text)
    wrong = await owner.post("/orgs/ltd/delete", data={"csrf_token": owner_csrf, "confirm_slug": "engines"})
    wrong_text = html_of(wrong, 422)
    assert re.search(r'data-field="confirm_slug">\s*<li>Type the organization&#39;s slug.', wrong_text)
    assert 'value="Engines Ltd"' in wrong_text
    deleted = await owner.post("/orgs/ltd/delete", data={"csrf_token": owner_csrf, "confirm_slug": "ltd"})
    assert (deleted.status_code, deleted.headers["location"]) == (303, "/orgs")
    for client in (owner, admin):
        error_page(await client.get("/orgs/ltd/members"), 404)
    assert 'data-org="ltd"' not in html_of(await owner.get("/orgs"), 200)


async def test_the_audit_log_pages_newest_first(
    team: Team, browser: Clients, monkeypatch: pytest.MonkeyPatch, clock: FakeClock
) -> None:
    monkeypatch.setattr(web_orgs, "AUDIT_PAGE", 2)
    owner = await browser(team.owner)
    csrf = csrf_of((await owner.get("/orgs/engines/settings")).text)
    for name in ("One", "Two", "Three"):
        clock.advance(seconds=1)
        renamed = await owner.post("/orgs/engines/settings", data={"csrf_token": csrf, "name": name, "slug": "engines"})
        assert renamed.status_code == 303
    first = html_of(await owner.get("/orgs/engines/audit"), 200)
    assert re.findall(r"→ (\w+)</span>", first) == ["Three", "Two"]
    assert "olive" in first  # the actor
    [older] = re.findall(r'href="(/orgs/engines/audit\?cursor=[^"]+)" data-testid="older"', first)
    second = html_of(await owner.get(older.replace("&amp;", "&")), 200)
    assert re.findall(r"→ (\w+)</span>", second) == ["One"]
    assert "← Newest" in second


async def test_the_pages_keep_the_strict_csp(team: Team, browser: Clients, mailbox: Mailbox) -> None:
    owner = await browser(team.owner)
    token = await _invite(owner, mailbox, "grace@example.com")
    pages = [await owner.get(path) for path in ("/orgs", *PAGES)]
    pages.append(await (await browser(None)).get(f"/invitations/{token}"))
    for page in pages:
        html = html_of(page, 200)
        assert "script-src 'self'" in page.headers["content-security-policy"]
        for tag in re.findall(r"<script\b[^>]*>", html):
            assert 'src="/static/' in tag, tag
        assert not re.search(r"\son[a-z]+\s*=", html)
        assert " style=" not in html
        assert "<style" not in html


async def test_the_verification_landing_signed_out_and_with_a_bad_token(
    browser: Clients, make_user: MakeUser, mailbox: Mailbox, app: FastAPI
) -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as api:
        registered = await api.post(
            "/api/v1/auth/register",
            json={"email": "kay@example.com", "username": "kay", "name": "Kay", "password": PASSWORD},
        )
        assert registered.status_code == 201, registered.text
    await mailbox.deliver()
    token = mailbox.link_token(mailbox.messages_to("kay@example.com")[-1], "/verify-email")

    anonymous = await browser(None)
    assert "no token" in html_of(await anonymous.get("/verify-email"), 200)
    landing = html_of(await anonymous.get(f"/verify-email?token={token}"), 200)
    csrf = csrf_of(landing)  # the pre-sign-in cookie's
    bad = await anonymous.post("/verify-email", data={"csrf_token": csrf, "token": "not-a-token"})
    assert re.search(r'data-field="form"><p>This link is invalid, expired or already used', html_of(bad, 400))
    verified = await anonymous.post("/verify-email", data={"csrf_token": csrf, "token": token})
    assert (verified.status_code, verified.headers["location"]) == (303, "/sign-in?next=/orgs%3Fverified%3D1")
    again = await anonymous.post("/verify-email", data={"csrf_token": csrf, "token": token})
    assert "already used" in html_of(again, 400)
