"""Settings' account forms (profile, privacy, password, GitHub, deleting the account) and the
password reset pages: each form's success, its field errors (the API's), CSRF refusal and the
signed-out redirect; the reset end to end through the mailed link."""

from __future__ import annotations

import re

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from codepulse.auth.models import OAuthAccount
from codepulse.config import Settings
from codepulse.security import SecretBox
from tests.factories import Account, MakeOrg, MakeUser
from tests.helpers import Mailbox
from tests.web.helpers import csrf_of, form_token, use_session

PASSWORD = "correct-horse-battery-1"
NEW_PASSWORD = "a-brand-new-passphrase-7"

FORMS = {
    "/settings/profile": {"display_name": "Ada", "username": "ada", "timezone": "UTC"},
    "/settings/privacy": {},
    "/settings/password": {"current_password": PASSWORD, "new_password": NEW_PASSWORD},
    "/settings/github/unlink": {},
    "/settings/delete": {"confirm_username": "ada"},
}


async def _signed_in(client: httpx.AsyncClient, account: Account) -> str:
    use_session(client, account.token)
    return await form_token(client, "/settings")


def _field_errors(html: str, field: str) -> list[str]:
    match = re.search(rf'<ul class="errors" id="{field}-errors" data-field="{field}">(.*?)</ul>', html, re.S)
    return re.findall(r"<li>(.*?)</li>", match.group(1)) if match else []


async def _me(client: httpx.AsyncClient, account: Account) -> httpx.Response:
    return await client.get("/api/v1/users/me", headers=account.headers)


@pytest.mark.parametrize("path", sorted(FORMS))
async def test_every_form_refuses_without_csrf_and_signed_out(
    client: httpx.AsyncClient, make_user: MakeUser, path: str
) -> None:
    ada = await make_user("ada", password=PASSWORD)
    signed_out = await client.post(path, data=FORMS[path])
    assert (signed_out.status_code, signed_out.headers["location"]) == (303, "/sign-in")
    csrf = await _signed_in(client, ada)
    refused = await client.post(path, data=FORMS[path])
    assert refused.status_code == 403
    forged = await client.post(path, data=FORMS[path] | {"csrf_token": "0" * len(csrf)})
    assert forged.status_code == 403
    assert (await _me(client, ada)).status_code == 200  # nothing happened


async def test_the_page_shows_the_account(client: httpx.AsyncClient, make_user: MakeUser) -> None:
    ada = await make_user("ada", password=PASSWORD, name="Ada Lovelace", timezone="Europe/London")
    assert (await client.get("/settings")).headers["location"] == "/sign-in?next=/settings"
    use_session(client, ada.token)
    page = (await client.get("/settings")).text
    assert 'id="display_name" name="display_name" type="text" value="Ada Lovelace"' in page
    assert '<option value="Europe/London" selected>' in page
    assert 'id="current_password"' in page
    assert 'data-testid="github-none"' in page


async def test_profile(client: httpx.AsyncClient, make_user: MakeUser) -> None:
    ada = await make_user("ada", password=PASSWORD)
    await make_user("bob")
    csrf = await _signed_in(client, ada)
    data = {"csrf_token": csrf, "display_name": "Ada L.", "username": "ada-l", "timezone": "Asia/Tokyo"}

    invalid = await client.post(
        "/settings/profile", data=data | {"display_name": " ", "username": "a b!", "timezone": "Mars/Olympus"}
    )
    assert invalid.status_code == 422
    assert _field_errors(invalid.text, "display_name")
    assert _field_errors(invalid.text, "username")
    assert re.search(r'data-field="timezone"><li>.*Mars/Olympus.*IANA', invalid.text)
    assert 'value="a b!"' in invalid.text  # the typed values stay
    taken = await client.post("/settings/profile", data=data | {"username": "bob"})
    assert taken.status_code == 409
    assert _field_errors(taken.text, "username") == ["This username is taken."]
    assert (await _me(client, ada)).json()["username"] == "ada"

    saved = await client.post("/settings/profile", data=data)
    assert (saved.status_code, saved.headers["location"]) == (303, "/settings?saved=profile")
    me = (await _me(client, ada)).json()
    assert (me["name"], me["username"], me["timezone"]) == ("Ada L.", "ada-l", "Asia/Tokyo")
    page = (await client.get(saved.headers["location"])).text
    assert "Your profile is saved." in page
    assert 'value="ada-l"' in page


async def test_privacy(client: httpx.AsyncClient, make_user: MakeUser) -> None:
    ada = await make_user("ada", profile_public=False)
    csrf = await _signed_in(client, ada)
    settings = (await client.get("/api/v1/usage/settings", headers=ada.headers)).json()
    assert settings["share_usage_with_orgs"] is True
    assert (await _me(client, ada)).json()["profile_public"] is False

    public = await client.post("/settings/privacy", data={"csrf_token": csrf, "profile_public": "on"})
    assert (public.status_code, public.headers["location"]) == (303, "/settings?saved=privacy")
    assert (await _me(client, ada)).json()["profile_public"] is True
    usage = await client.get("/api/v1/usage/settings", headers=ada.headers)
    assert usage.json()["share_usage_with_orgs"] is False  # unchecked
    page = (await client.get("/settings?saved=privacy")).text
    assert "Your privacy settings are saved." in page
    assert re.search(r'name="profile_public" value="on" checked', page)
    assert not re.search(r'name="share_usage_with_orgs" value="on" checked', page)

    await client.post("/settings/privacy", data={"csrf_token": csrf, "share_usage_with_orgs": "on"})
    assert (await _me(client, ada)).json()["profile_public"] is False
    usage = await client.get("/api/v1/usage/settings", headers=ada.headers)
    assert usage.json()["share_usage_with_orgs"] is True


async def test_password_change_signs_out_the_other_sessions(client: httpx.AsyncClient, make_user: MakeUser) -> None:
    ada = await make_user("ada", password=PASSWORD)
    other = (await client.post("/api/v1/auth/tokens", json={"name": "laptop"}, headers=ada.headers)).json()
    csrf = await _signed_in(client, ada)

    wrong = await client.post(
        "/settings/password", data={"csrf_token": csrf, "current_password": "nope", "new_password": NEW_PASSWORD}
    )
    assert wrong.status_code == 422
    assert _field_errors(wrong.text, "current_password") == ["This is not your password."]
    weak = await client.post(
        "/settings/password", data={"csrf_token": csrf, "current_password": PASSWORD, "new_password": "short"}
    )
    assert weak.status_code == 422
    assert _field_errors(weak.text, "new_password")

    changed = await client.post(
        "/settings/password", data={"csrf_token": csrf, "current_password": PASSWORD, "new_password": NEW_PASSWORD}
    )
    assert (changed.status_code, changed.headers["location"]) == (303, "/settings?saved=password")
    assert "Your password is changed" in (await client.get("/settings?saved=password")).text  # still signed in
    cli = {"Authorization": f"Bearer {other['token']}"}
    assert (await client.get("/api/v1/auth/me", headers=cli)).status_code == 401
    old = await client.post("/api/v1/auth/login", json={"login": "ada", "password": PASSWORD})
    assert old.status_code == 401
    new = await client.post("/api/v1/auth/login", json={"login": "ada", "password": NEW_PASSWORD})
    assert new.status_code == 200


async def test_an_account_without_password_sets_one(client: httpx.AsyncClient, make_user: MakeUser) -> None:
    ada = await make_user("ada")
    csrf = await _signed_in(client, ada)
    assert 'id="current_password"' not in (await client.get("/settings")).text
    done = await client.post("/settings/password", data={"csrf_token": csrf, "new_password": NEW_PASSWORD})
    assert done.status_code == 303
    assert (await _me(client, ada)).json()["has_password"] is True


async def test_github_is_shown_and_unlinked(
    client: httpx.AsyncClient, make_user: MakeUser, session: AsyncSession, settings: Settings
) -> None:
    ada, bob = await make_user("ada", password=PASSWORD), await make_user("bob")
    box = SecretBox(settings.secret_key)
    for account, login in ((ada, "ada-gh"), (bob, "bob-gh")):
        session.add(
            OAuthAccount(
                user_id=account.model.id,
                provider="github",
                provider_user_id=login,
                login=login,
                access_token_encrypted=box.encrypt("gho_x"),
                scopes="read:user",
            )
        )
    await session.flush()

    # Bob has no password: GitHub is his only way in, the API's refusal beside the section.
    bob_csrf = await _signed_in(client, bob)
    assert 'data-testid="github-login">bob-gh<' in (await client.get("/settings")).text
    refused = await client.post("/settings/github/unlink", data={"csrf_token": bob_csrf})
    assert refused.status_code == 409
    assert re.search(r'data-field="github_form">\s*<p>github is your only way to sign in', refused.text)

    csrf = await _signed_in(client, ada)
    assert 'data-testid="github-login">ada-gh<' in (await client.get("/settings")).text
    unlinked = await client.post("/settings/github/unlink", data={"csrf_token": csrf})
    assert (unlinked.status_code, unlinked.headers["location"]) == (303, "/settings?saved=github")
    page = (await client.get("/settings?saved=github")).text
    assert "GitHub is unlinked from your account." in page
    assert 'data-testid="github-none"' in page


async def test_delete_the_account_then_the_cookie_is_dead(client: httpx.AsyncClient, make_user: MakeUser) -> None:
    ada = await make_user("ada", password=PASSWORD)
    csrf = await _signed_in(client, ada)
    mistyped = await client.post("/settings/delete", data={"csrf_token": csrf, "confirm_username": "bob"})
    assert mistyped.status_code == 422
    assert _field_errors(mistyped.text, "confirm_username") == ["Type your username, ada, to confirm."]
    assert 'value="bob"' in mistyped.text
    assert (await _me(client, ada)).status_code == 200
    settings_html = (await client.get("/settings")).text
    assert 'data-confirm="ada"' in settings_html  # the button waits for it (static/app.js)

    deleted = await client.post("/settings/delete", data={"csrf_token": csrf, "confirm_username": " Ada "})
    assert (deleted.status_code, deleted.headers["location"]) == (303, "/sign-in?done=deleted")
    assert any(h.startswith("codepulse_session=") for h in deleted.headers.get_list("set-cookie"))
    assert (await _me(client, ada)).status_code == 401
    use_session(client, ada.token)  # the old cookie, kept by someone: signed out
    assert (await client.get("/settings")).headers["location"] == "/sign-in?next=/settings"
    client.cookies.clear()
    page = await client.get("/sign-in?done=deleted")
    assert "Your account and its personal data are deleted." in page.text
    login = await client.post("/api/v1/auth/login", json={"login": "ada", "password": PASSWORD})
    assert login.status_code == 401


async def test_the_last_owner_of_an_organization_cannot_delete(
    client: httpx.AsyncClient, make_user: MakeUser, make_org: MakeOrg
) -> None:
    ada = await make_user("ada", password=PASSWORD)
    await make_org(ada, slug="acme")
    csrf = await _signed_in(client, ada)
    refused = await client.post("/settings/delete", data={"csrf_token": csrf, "confirm_username": "ada"})
    assert refused.status_code == 409
    assert re.search(r'data-field="delete_form">\s*<p>You are the last owner of acme', refused.text)
    assert (await _me(client, ada)).status_code == 200
    assert (await client.get("/settings")).status_code == 200


# --- password reset ----------------------------------------------------------------------------


async def test_forgot_password_link_and_the_same_answer(client: httpx.AsyncClient, mailbox: Mailbox) -> None:
    sign_in = (await client.get("/sign-in")).text
    assert 'href="/forgot-password"' in sign_in
    csrf = csrf_of(sign_in)
    refused = await client.post("/forgot-password", data={"email": "nobody@example.com"})
    assert refused.status_code == 403
    invalid = await client.post("/forgot-password", data={"csrf_token": csrf, "email": "not-an-email"})
    assert invalid.status_code == 422
    assert _field_errors(invalid.text, "email")
    unknown = await client.post("/forgot-password", data={"csrf_token": csrf, "email": "nobody@example.com"})
    assert unknown.status_code == 202
    assert "If an account uses this email, a reset link is on its way." in unknown.text
    await mailbox.deliver()
    assert mailbox.messages_to("nobody@example.com") == []


async def test_forgot_password_is_rate_limited(client: httpx.AsyncClient) -> None:
    csrf = await form_token(client, "/forgot-password")
    answers = [
        (await client.post("/forgot-password", data={"csrf_token": csrf, "email": "ada@example.com"})).status_code
        for _ in range(4)
    ]
    assert answers == [202, 202, 202, 429]


async def test_password_reset_end_to_end(client: httpx.AsyncClient, make_user: MakeUser, mailbox: Mailbox) -> None:
    ada = await make_user("ada", password=PASSWORD, email="ada@example.com")
    csrf = await form_token(client, "/forgot-password")
    sent = await client.post("/forgot-password", data={"csrf_token": csrf, "email": "ADA@example.com"})
    assert sent.status_code == 202
    await mailbox.deliver()
    [message] = mailbox.messages_to("ada@example.com")
    token = mailbox.link_token(message, "/reset-password")

    landing = await client.get(f"/reset-password?token={token}")
    assert landing.status_code == 200
    assert f'name="token" value="{token}"' in landing.text
    reset_csrf = csrf_of(landing.text)
    refused = await client.post("/reset-password", data={"token": token, "new_password": NEW_PASSWORD})
    assert refused.status_code == 403
    weak = await client.post("/reset-password", data={"csrf_token": reset_csrf, "token": token, "new_password": "ada"})
    assert weak.status_code == 422
    assert _field_errors(weak.text, "new_password")
    bad = await client.post(
        "/reset-password", data={"csrf_token": reset_csrf, "token": "x" * 40, "new_password": NEW_PASSWORD}
    )
    assert bad.status_code == 400
    assert "This link is invalid, expired or already used" in bad.text

    # The refused password did not use the token up.
    done = await client.post(
        "/reset-password", data={"csrf_token": reset_csrf, "token": token, "new_password": NEW_PASSWORD}
    )
    assert (done.status_code, done.headers["location"]) == (303, "/sign-in?done=reset")
    assert "Your password is reset" in (await client.get(done.headers["location"])).text
    assert (await _me(client, ada)).status_code == 401  # every session ended
    again = await client.post(
        "/reset-password", data={"csrf_token": reset_csrf, "token": token, "new_password": NEW_PASSWORD}
    )
    assert again.status_code == 400  # used

    sign_in = await client.post(
        "/sign-in", data={"csrf_token": await form_token(client, "/sign-in"), "login": "ada", "password": NEW_PASSWORD}
    )
    assert (sign_in.status_code, sign_in.headers["location"]) == (303, "/")


async def test_the_reset_page_without_a_token(client: httpx.AsyncClient) -> None:
    page = await client.get("/reset-password")
    assert page.status_code == 200
    assert "This link has no token" in page.text
    csrf = csrf_of(page.text)
    empty = await client.post("/reset-password", data={"csrf_token": csrf, "new_password": NEW_PASSWORD})
    assert empty.status_code == 422
    assert "This link is invalid, expired or already used" in empty.text
