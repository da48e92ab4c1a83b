"""Settings: CLI tokens (created and shown once, revoked) and browser sessions (revoked), with
CSRF on every form."""

from __future__ import annotations

import re

import httpx

from tests.factories import MakeUser
from tests.web.helpers import csrf_of, use_session


async def test_create_a_cli_token_shown_once_then_revoke_it(client: httpx.AsyncClient, make_user: MakeUser) -> None:
    ada = await make_user("ada")
    use_session(client, ada.token)
    page = await client.get("/settings")
    assert page.status_code == 200
    assert "No CLI tokens." in page.text
    csrf = csrf_of(page.text)

    refused = await client.post("/settings/tokens", data={"name": "laptop", "expires_in_days": "30"})
    assert refused.status_code == 403
    invalid = await client.post("/settings/tokens", data={"csrf_token": csrf, "name": "", "expires_in_days": "999"})
    assert invalid.status_code == 422
    assert re.search(r'data-field="name"', invalid.text)
    assert re.search(r'data-field="expires_in_days"', invalid.text)

    created = await client.post(
        "/settings/tokens", data={"csrf_token": csrf, "name": "laptop", "expires_in_days": "30"}
    )
    assert created.status_code == 201
    [token] = re.findall(r'<code id="issued-token-value">(cp_[^<]+)</code>', created.text)
    cli = {"Authorization": f"Bearer {token}"}
    assert (await client.get("/api/v1/auth/me", headers=cli)).json()["username"] == "ada"
    listed = await client.get("/settings")
    assert token not in listed.text  # shown once
    [token_id] = re.findall(r'<tr data-session="([0-9a-f-]+)">\s*<th scope="row">laptop</th>', listed.text)

    revoked = await client.post(f"/settings/sessions/{token_id}/revoke", data={"csrf_token": csrf})
    assert (revoked.status_code, revoked.headers["location"]) == (303, "/settings")
    assert (await client.get("/api/v1/auth/me", headers=cli)).status_code == 401
    assert "No CLI tokens." in (await client.get("/settings")).text


async def test_revoke_sessions(client: httpx.AsyncClient, make_user: MakeUser) -> None:
    ada, bob = await make_user("ada"), await make_user("bob")
    other = (await client.post("/api/v1/auth/tokens", json={"name": "other"}, headers=ada.headers)).json()
    use_session(client, ada.token)
    page = await client.get("/settings")
    csrf = csrf_of(page.text)
    assert "this browser" in page.text

    # Someone else's session: the 404 page, and it lives on.
    bobs = (await client.get("/api/v1/auth/sessions", headers=bob.headers)).json()["items"][0]["id"]
    missing = await client.post(f"/settings/sessions/{bobs}/revoke", data={"csrf_token": csrf})
    assert (missing.status_code, missing.headers["content-type"][:9]) == (404, "text/html")
    assert (await client.get("/api/v1/auth/me", headers=bob.headers)).status_code == 200

    revoked = await client.post(f"/settings/sessions/{other['id']}/revoke", data={"csrf_token": csrf})
    assert revoked.status_code == 303
    # The current session: signed out here.
    current = re.findall(
        r'<tr data-session="([0-9a-f-]+)">\s*<th scope="row">[^<]*<span class="badge current">', page.text
    )
    [current_id] = current
    signed_out = await client.post(f"/settings/sessions/{current_id}/revoke", data={"csrf_token": csrf})
    assert (signed_out.status_code, signed_out.headers["location"]) == (303, "/sign-in")
    assert (await client.get("/api/v1/auth/me", headers=ada.headers)).status_code == 401
    assert (await client.get("/settings")).headers["location"] == "/sign-in?next=/settings"


async def test_the_page_is_one_panel_per_section(client: httpx.AsyncClient, make_user: MakeUser) -> None:
    use_session(client, (await make_user("ada")).token)
    page = (await client.get("/settings")).text
    assert "<title>Settings · codepulse</title>" in page  # the title is the title alone
    sections = re.findall(r'<section class="panel[^"]*" aria-labelledby="([a-z]+)-title">\s*<h2 id="\1-title">', page)
    assert sections == ["profile", "privacy", "password", "github", "tokens", "sessions", "delete"]
    assert page.count('<section class="panel danger-zone"') == 1
    # Without GitHub sign-in configured there is nothing to link.
    assert 'data-testid="github-none"' in page
    assert 'data-testid="link-github"' not in page
    refused = await client.post("/settings/github/link", data={"csrf_token": csrf_of(page)})
    assert (refused.status_code, refused.headers["content-type"][:9]) == (404, "text/html")
