"""GitHub sign-in end to end against the stub GitHub (real loopback HTTP) and the real app."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from codepulse.auth.models import OAuthAccount, User
from codepulse.auth.oauth import LINK_COOKIE
from codepulse.config import Settings
from codepulse.security import SecretBox
from tests.auth.helpers import SignedIn, register
from tests.helpers import FakeClock
from tests.stubs.github import ApiFault, GitHubStub, StubEmail

FRONTEND = "http://127.0.0.1:8000"


@pytest.fixture
async def client(
    github_settings: Settings, app_factory: Callable[[Settings], FastAPI]
) -> AsyncIterator[httpx.AsyncClient]:
    app = app_factory(github_settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as client,
    ):
        yield client


async def start(client: httpx.AsyncClient, params: dict[str, str] | None = None, **kwargs: object) -> httpx.URL:
    response = await client.get("/api/v1/auth/oauth/github", params=params, **kwargs)  # type: ignore[arg-type]
    assert response.status_code == 302, response.text
    return httpx.URL(response.headers["location"])


async def consent(authorize_url: httpx.URL) -> httpx.URL:
    """The browser at GitHub: the stub answers with its redirect back to our callback."""
    async with httpx.AsyncClient() as browser:
        response = await browser.get(authorize_url)
    assert response.status_code == 302
    return httpx.URL(response.headers["location"])


async def callback(client: httpx.AsyncClient, back: httpx.URL) -> dict[str, list[str]]:
    response = await client.get(back.path, params=back.params)
    assert response.status_code == 302, response.text
    location = response.headers["location"]
    assert location.startswith(f"{FRONTEND}/auth/callback?")
    return parse_qs(urlsplit(location).query)


async def sign_in(client: httpx.AsyncClient, **start_params: str) -> tuple[dict[str, list[str]], SignedIn | None]:
    params = await callback(client, await consent(await start(client, start_params or None)))
    if "code" not in params:
        return params, None
    exchanged = await client.post("/api/v1/auth/oauth/exchange", json={"token": params["code"][0]})
    assert exchanged.status_code == 200, exchanged.text
    body = exchanged.json()
    return params, SignedIn(body["token"], body["user"])


async def test_authorize_redirects_to_github_with_state_and_pkce(
    client: httpx.AsyncClient, github_stub: GitHubStub
) -> None:
    url = await start(client)
    assert str(url).startswith(f"{github_stub.url}/login/oauth/authorize?")
    params = dict(url.params)
    assert params["client_id"] == "cp-test-github-client"
    assert params["scope"] == "read:user user:email"
    assert params["code_challenge_method"] == "S256"
    assert params["state"]
    assert params["redirect_uri"] == "http://testserver/api/v1/auth/oauth/github/callback"
    cookie = next(c for c in client.cookies.jar if c.name == "codepulse_oauth")
    assert cookie.path == "/api/v1/auth/oauth"


async def test_new_user_signs_in_with_a_verified_primary_email(
    client: httpx.AsyncClient, github_stub: GitHubStub, session: AsyncSession, github_settings: Settings
) -> None:
    github_stub.state.add_user("Octo.Cat!", name="The Octocat", sign_in=True)
    params, signed_in = await sign_in(client, next="/dashboard?tab=usage")
    assert signed_in is not None
    assert params["next"] == ["/dashboard?tab=usage"]
    assert "token" not in str(params)
    user = signed_in.user
    assert (user["email"], user["username"], user["name"]) == ("octo.cat!@users.example.com", "octocat", "The Octocat")
    assert user["email_verified"] is True
    assert user["has_password"] is False
    assert user["profile_public"] is False  # private by default, like a registered account
    me = await client.get("/api/v1/auth/me", headers=signed_in.headers)
    assert me.status_code == 200
    account = (await session.scalars(select(OAuthAccount))).one()
    assert account.provider_user_id == str(next(iter(github_stub.state.users)))
    assert account.access_token_encrypted is not None
    assert "gho_" not in account.access_token_encrypted
    stored = SecretBox(github_settings.secret_key).decrypt(account.access_token_encrypted)
    assert stored in github_stub.state.tokens
    # Signing in again finds the same user through the link.
    _, again = await sign_in(client)
    assert again is not None
    assert again.user["id"] == user["id"]


async def test_existing_verified_account_is_linked_by_email(
    client: httpx.AsyncClient, github_stub: GitHubStub, session: AsyncSession
) -> None:
    ada = await register(client, "ada", email="ada@example.com")
    user = (await session.scalars(select(User).where(User.username == "ada"))).one()
    user.email_verified_at = user.created_at
    await session.flush()
    github_stub.state.add_user("ada-gh", emails=[StubEmail("Ada@Example.com", primary=True)], sign_in=True)
    _, signed_in = await sign_in(client)
    assert signed_in is not None
    assert signed_in.user["id"] == ada.user["id"]
    assert signed_in.user["username"] == "ada"


async def test_unverified_account_email_is_never_linked(
    client: httpx.AsyncClient, github_stub: GitHubStub, session: AsyncSession
) -> None:
    await register(client, "ada", email="ada@example.com")  # email not verified
    github_stub.state.add_user("ada-gh", emails=[StubEmail("ada@example.com", primary=True)], sign_in=True)
    params, signed_in = await sign_in(client)
    assert signed_in is None
    assert params["error"] == ["account_email_unverified"]
    assert (await session.scalars(select(OAuthAccount))).first() is None


async def test_github_account_without_verified_primary_email_is_refused(
    client: httpx.AsyncClient, github_stub: GitHubStub, session: AsyncSession
) -> None:
    github_stub.state.add_user(
        "shady",
        emails=[StubEmail("shady@example.com", primary=True, verified=False), StubEmail("alt@example.com")],
        sign_in=True,
    )
    params, signed_in = await sign_in(client)
    assert signed_in is None
    assert params["error"] == ["github_email_unverified"]
    assert (await session.scalars(select(User))).first() is None


async def test_state_mismatch_is_400(client: httpx.AsyncClient, github_stub: GitHubStub) -> None:
    github_stub.state.add_user("octocat", sign_in=True)
    back = await consent(await start(client))
    forged = back.copy_set_param("state", "not-the-state")
    response = await client.get(forged.path, params=forged.params)
    assert response.status_code == 400
    assert response.json()["code"] == "oauth_state_mismatch"
    # A callback from another browser (no cookie) is refused the same way.
    async with httpx.AsyncClient(transport=client._transport, base_url="http://testserver") as stranger:
        other = await stranger.get(back.path, params=back.params)
    assert other.status_code == 400


async def test_denied_consent_returns_to_the_dashboard_with_an_error(
    client: httpx.AsyncClient, github_stub: GitHubStub
) -> None:
    github_stub.state.add_user("octocat", sign_in=True)
    github_stub.state.deny_consent = True
    params, signed_in = await sign_in(client)
    assert signed_in is None
    assert params["error"] == ["access_denied"]


async def test_exchange_code_is_single_use_and_short_lived(
    client: httpx.AsyncClient, github_stub: GitHubStub, clock: FakeClock
) -> None:
    github_stub.state.add_user("octocat", sign_in=True)
    params = await callback(client, await consent(await start(client)))
    code = params["code"][0]
    first = await client.post("/api/v1/auth/oauth/exchange", json={"token": code})
    assert first.status_code == 200
    replay = await client.post("/api/v1/auth/oauth/exchange", json={"token": code})
    assert replay.status_code == 400
    assert replay.json()["code"] == "invalid_token"
    late = await callback(client, await consent(await start(client)))
    clock.advance(seconds=61)
    expired = await client.post("/api/v1/auth/oauth/exchange", json={"token": late["code"][0]})
    assert expired.status_code == 400


async def test_a_code_of_a_bound_flow_needs_the_nonce(client: httpx.AsyncClient, github_stub: GitHubStub) -> None:
    """A flow started with `binding` (the hash of a nonce the browser keeps) ends with a code only
    that nonce redeems: a code sent to someone else is useless (login CSRF)."""
    github_stub.state.add_user("octocat", sign_in=True)
    nonce = "the-browsers-own-nonce"
    binding = hashlib.sha256(nonce.encode()).hexdigest()
    params = await callback(client, await consent(await start(client, {"binding": binding})))
    code = params["code"][0]
    for wrong in ({}, {"nonce": "another-browsers-nonce"}, {"nonce": binding}):
        refused = await client.post("/api/v1/auth/oauth/exchange", json={"token": code} | wrong)
        assert (refused.status_code, refused.json()["code"]) == (400, "invalid_token"), wrong
    exchanged = await client.post("/api/v1/auth/oauth/exchange", json={"token": code, "nonce": nonce})
    assert exchanged.status_code == 200, exchanged.text
    assert exchanged.json()["user"]["username"] == "octocat"
    # The binding belongs to that one flow: the next start without one issues an unbound code.
    unbound = await callback(client, await consent(await start(client)))
    assert (await client.post("/api/v1/auth/oauth/exchange", json={"token": unbound["code"][0]})).status_code == 200
    malformed = await client.get("/api/v1/auth/oauth/github", params={"binding": "not-a-sha256"})
    assert malformed.status_code == 422


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.example/steal",
        "//evil.example/x",
        "/\\evil.example",
        # Browsers drop tab and newline inside URLs and strip control characters at the edges.
        "/\t/evil.example",
        "/\n/evil.example",
        "/\r\n/evil.example",
        "\x00//evil.example",
        " //evil.example",
        "/%09/evil.example",
        "/%2F/evil.example",
        "/%5Cevil.example",
        "/\u200b/evil.example",
        f"{FRONTEND}//evil.example/x",
        f"{FRONTEND}/\t/evil.example",
    ],
)
async def test_next_must_stay_on_the_dashboard(client: httpx.AsyncClient, target: str) -> None:
    response = await client.get("/api/v1/auth/oauth/github", params={"next": target})
    if any(ord(character) < 0x20 for character in target):
        # A raw control character in any query parameter is refused before routing.
        assert response.status_code == 422
        assert response.json()["errors"][0]["code"] == "control_character"
    else:
        assert response.status_code == 400
        assert response.json()["code"] == "invalid_next"


async def test_next_may_be_an_absolute_dashboard_url(client: httpx.AsyncClient, github_stub: GitHubStub) -> None:
    github_stub.state.add_user("octocat", sign_in=True)
    params, _ = await sign_in(client, next=f"{FRONTEND}/repos?page=2")
    assert params["next"] == ["/repos?page=2"]


async def test_link_and_unlink_for_a_signed_in_user(
    client: httpx.AsyncClient, github_stub: GitHubStub, session: AsyncSession
) -> None:
    ada = await register(client, "ada")
    github_stub.state.add_user("ada-gh", emails=[StubEmail("someone-else@example.com", primary=True)], sign_in=True)
    anonymous = await client.get("/api/v1/auth/oauth/github", params={"link": "1"})
    assert anonymous.status_code == 401
    url = await start(client, {"link": "1"}, headers=ada.headers)
    params = await callback(client, await consent(url))
    assert params == {"linked": ["github"], "account": ["ada"], "login": ["ada-gh"]}
    account = (await session.scalars(select(OAuthAccount))).one()
    assert str(account.user_id) == ada.user["id"]
    # Signing in with GitHub now reaches ada, even though the emails differ.
    _, signed_in = await sign_in(client)
    assert signed_in is not None
    assert signed_in.user["id"] == ada.user["id"]
    assert (await client.delete("/api/v1/auth/oauth/github", headers=ada.headers)).status_code == 204
    assert (await client.delete("/api/v1/auth/oauth/github", headers=ada.headers)).status_code == 404


async def test_browser_link_uses_a_single_use_code(client: httpx.AsyncClient, github_stub: GitHubStub) -> None:
    ada = await register(client, "ada")
    github_stub.state.add_user("ada-gh", sign_in=True)
    started = await client.post("/api/v1/auth/oauth/github/link", headers=ada.headers)
    authorize_url = httpx.URL(started.json()["authorize_url"])
    assert authorize_url.params["link_code"]
    response = await client.get(authorize_url.path, params=authorize_url.params)
    assert response.status_code == 302
    linked = await callback(client, await consent(httpx.URL(response.headers["location"])))
    assert linked == {"linked": ["github"], "account": ["ada"], "login": ["ada-gh"]}
    assert LINK_COOKIE not in client.cookies  # spent
    replay = await client.get(authorize_url.path, params=authorize_url.params)
    assert replay.status_code == 400


async def test_a_link_url_works_only_in_the_browser_that_asked_for_it(
    client: httpx.AsyncClient, github_stub: GitHubStub, session: AsyncSession
) -> None:
    """Regression: the link URL was a bearer capability: the attacker's URL, opened by a victim
    signed in to GitHub, linked the victim's GitHub account to the attacker's codepulse account."""
    mallory = await register(client, "mallory")
    started = await client.post("/api/v1/auth/oauth/github/link", headers=mallory.headers)
    assert started.status_code == 200
    assert started.headers["set-cookie"].startswith(f"{LINK_COOKIE}=")
    assert "httponly" in started.headers["set-cookie"].lower()
    trap = httpx.URL(started.json()["authorize_url"])
    github_stub.state.add_user("victim-gh", sign_in=True)  # the victim's browser is signed in to GitHub
    victim = httpx.AsyncClient(transport=client._transport, base_url="http://testserver")
    async with victim:
        opened = await victim.get(trap.path, params=trap.params)
        assert opened.status_code == 400
        assert opened.json()["code"] == "oauth_link_not_bound"
        # The victim's own link cookie (for their own code) does not open someone else's URL.
        grace = await register(victim, "grace")
        assert (await victim.post("/api/v1/auth/oauth/github/link", headers=grace.headers)).status_code == 200
        again = await victim.get(trap.path, params=trap.params)
        assert again.status_code == 400
        assert again.json()["code"] == "oauth_link_not_bound"
    assert (await session.scalars(select(OAuthAccount))).first() is None


async def test_a_link_flow_must_end_in_the_browser_holding_the_link_cookie(
    client: httpx.AsyncClient, github_stub: GitHubStub, session: AsyncSession
) -> None:
    ada = await register(client, "ada")
    github_stub.state.add_user("ada-gh", sign_in=True)
    started = await client.post("/api/v1/auth/oauth/github/link", headers=ada.headers)
    authorize_url = httpx.URL(started.json()["authorize_url"])
    response = await client.get(authorize_url.path, params=authorize_url.params)
    assert response.status_code == 302
    back = await consent(httpx.URL(response.headers["location"]))
    client.cookies.delete(LINK_COOKIE)  # the session cookie travels, the link cookie does not
    params = await callback(client, back)
    assert params["error"] == ["oauth_link_not_bound"]
    assert (await session.scalars(select(OAuthAccount))).first() is None


async def test_github_linked_elsewhere_cannot_be_linked_again(
    client: httpx.AsyncClient, github_stub: GitHubStub
) -> None:
    github_stub.state.add_user("octocat", sign_in=True)
    _, owner = await sign_in(client)
    assert owner is not None
    ada = await register(client, "ada")
    params = await callback(client, await consent(await start(client, {"link": "1"}, headers=ada.headers)))
    assert params["error"] == ["github_already_linked"]


async def test_cannot_unlink_the_only_way_to_sign_in(client: httpx.AsyncClient, github_stub: GitHubStub) -> None:
    github_stub.state.add_user("octocat", sign_in=True)
    _, signed_in = await sign_in(client)
    assert signed_in is not None
    refused = await client.delete("/api/v1/auth/oauth/github", headers=signed_in.headers)
    assert refused.status_code == 409
    assert refused.json()["code"] == "last_sign_in_method"
    await client.post(
        "/api/v1/auth/password", headers=signed_in.headers, json={"new_password": "now-i-have-a-password-1"}
    )
    assert (await client.delete("/api/v1/auth/oauth/github", headers=signed_in.headers)).status_code == 204


async def test_device_flow_token_gives_a_cli_session(client: httpx.AsyncClient, github_stub: GitHubStub) -> None:
    octocat = github_stub.state.add_user("octocat")
    token = github_stub.state.issue_token(octocat)
    response = await client.post("/api/v1/auth/oauth/github/device", json={"access_token": token})
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"id", "user_id", "token", "expires_at", "created_at"}
    me = await client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {body['token']}"})
    assert me.json()["id"] == body["user_id"]
    sessions = await client.get("/api/v1/auth/sessions", headers={"Authorization": f"Bearer {body['token']}"})
    assert sessions.json()["items"][0]["kind"] == "cli"
    # The same GitHub account through the browser reaches the same user.
    github_stub.state.sign_in(octocat)
    _, browser = await sign_in(client)
    assert browser is not None
    assert browser.user["id"] == body["user_id"]


async def test_device_flow_accepts_only_tokens_of_our_app(
    client: httpx.AsyncClient, github_stub: GitHubStub, session: AsyncSession
) -> None:
    """Regression: any token that reads /user (a personal access token, another OAuth app's)
    gave a 90-day CLI session. GitHub's token check with our app's credentials decides."""
    octocat = github_stub.state.add_user("octocat")
    foreign = {
        "personal": github_stub.state.issue_personal_token(octocat),
        "other app": github_stub.state.issue_token(octocat, client_id="someone-elses-app"),
    }
    for kind, token in foreign.items():
        response = await client.post("/api/v1/auth/oauth/github/device", json={"access_token": token})
        assert response.status_code == 401, kind
        assert (response.json()["code"], response.json()["error"]) == ("github_token_invalid", "invalid_token")
    assert (await session.scalars(select(User))).first() is None
    checks = [r for r in github_stub.state.api_requests if r.path.endswith("/token")]
    assert [r.path for r in checks] == ["/api/v3/applications/cp-test-github-client/token"] * 2
    assert all(r.method == "POST" and r.headers["authorization"].startswith("Basic ") for r in checks)
    ours = github_stub.state.issue_token(octocat)
    accepted = await client.post("/api/v1/auth/oauth/github/device", json={"access_token": ours})
    assert accepted.status_code == 201


async def test_device_token_never_replaces_the_browser_granted_token(
    client: httpx.AsyncClient, github_stub: GitHubStub, session: AsyncSession, github_settings: Settings
) -> None:
    octocat = github_stub.state.add_user("octocat", sign_in=True)
    _, browser = await sign_in(client)
    assert browser is not None
    account = (await session.scalars(select(OAuthAccount))).one()
    box = SecretBox(github_settings.secret_key)
    granted = box.decrypt(account.access_token_encrypted or "")
    device = github_stub.state.issue_token(octocat, ["read:user", "user:email", "repo"])
    response = await client.post("/api/v1/auth/oauth/github/device", json={"access_token": device})
    assert response.status_code == 201
    assert response.json()["user_id"] == browser.user["id"]
    await session.refresh(account)
    assert box.decrypt(account.access_token_encrypted or "") == granted
    assert account.scopes == "read:user,user:email"


async def test_device_sign_in_of_a_new_account_stores_its_token(
    client: httpx.AsyncClient, github_stub: GitHubStub, session: AsyncSession, github_settings: Settings
) -> None:
    octocat = github_stub.state.add_user("octocat")
    token = github_stub.state.issue_token(octocat)
    response = await client.post("/api/v1/auth/oauth/github/device", json={"access_token": token})
    assert response.status_code == 201
    account = (await session.scalars(select(OAuthAccount))).one()
    assert account.login == "octocat"
    assert (await session.get_one(User, account.user_id)).profile_public is False  # private by default
    assert SecretBox(github_settings.secret_key).decrypt(account.access_token_encrypted or "") == token


async def test_device_flow_when_github_cannot_check_the_token(
    client: httpx.AsyncClient, github_stub: GitHubStub
) -> None:
    octocat = github_stub.state.add_user("octocat")
    token = github_stub.state.issue_token(octocat)
    github_stub.state.api_fault = ApiFault.SERVER_ERROR
    response = await client.post("/api/v1/auth/oauth/github/device", json={"access_token": token})
    assert response.status_code == 503
    assert response.json()["code"] == "github_unavailable"


async def test_device_flow_errors_carry_oauth_members(client: httpx.AsyncClient, github_stub: GitHubStub) -> None:
    octocat = github_stub.state.add_user("octocat")
    revoked = github_stub.state.issue_token(octocat)
    github_stub.state.revoke(revoked)
    for token in (revoked, "gho_unknown"):
        response = await client.post("/api/v1/auth/oauth/github/device", json={"access_token": token})
        assert response.status_code == 401
        body = response.json()
        assert body["code"] == "github_token_invalid"
        assert body["error"] == "invalid_token"
        assert body["error_description"]
    await register(client, "grace", email="grace@example.com")
    grace_gh = github_stub.state.add_user("grace-gh", emails=[StubEmail("grace@example.com", primary=True)])
    refused = await client.post(
        "/api/v1/auth/oauth/github/device", json={"access_token": github_stub.state.issue_token(grace_gh)}
    )
    assert refused.status_code == 409
    assert refused.json()["error"] == "access_denied"
    assert refused.json()["code"] == "account_email_unverified"


async def test_oauth_routes_404_when_not_configured(
    make_settings: Callable[..., Settings], app_factory: Callable[[Settings], FastAPI]
) -> None:
    app = app_factory(make_settings())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        for method, path in (
            ("GET", "/api/v1/auth/oauth/github"),
            ("GET", "/api/v1/auth/oauth/github/callback?code=x&state=y"),
            ("POST", "/api/v1/auth/oauth/github/device"),
        ):
            response = await client.request(method, path, json={"access_token": "gho_x"})
            assert response.status_code == 404, path
            assert response.json()["code"] == "oauth_not_configured"
        await register(client, "ada")  # the rest of auth keeps working


async def test_username_from_github_login_is_made_unique(client: httpx.AsyncClient, github_stub: GitHubStub) -> None:
    await register(client, "octocat")
    github_stub.state.add_user("OctoCat", sign_in=True)
    _, signed_in = await sign_in(client)
    assert signed_in is not None
    assert signed_in.user["username"] == "octocat-2"
    github_stub.state.add_user("Root", sign_in=True)  # reserved: gets a free variant
    _, reserved = await sign_in(client)
    assert reserved is not None
    assert reserved.user["username"] == "root-2"
