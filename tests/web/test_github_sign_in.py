"""GitHub sign-in in the browser against the local GitHub stub: "Continue with GitHub" starts at
`/auth/github` (a nonce cookie binds the flow to this browser), the API's callback sends the
browser to `FRONTEND_URL/auth/callback?code=`, whose page trades the code (with the nonce) for a
web session (the cookie's flags), and goes on to `next` or the overview; refusals are pages, and
a code from a flow another browser started (login CSRF) signs no one in."""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from codepulse.auth.models import User
from codepulse.auth.oauth import LINK_COOKIE
from codepulse.config import Settings
from codepulse.web.github import NONCE_COOKIE
from codepulse.web.session import SESSION_COOKIE
from tests.factories import MakeUser
from tests.helpers import FakeClock
from tests.stubs.github import GitHubStub, GitHubStubState
from tests.web.helpers import csrf_of, set_cookie_headers, use_session

FRONTEND = "http://127.0.0.1:8000"  # FRONTEND_URL's default


@pytest.fixture(scope="module")
async def github_stub_server() -> AsyncIterator[GitHubStub]:
    state = GitHubStubState(client_id="cp-test-github-client", client_secret="cp-test-github-secret")
    async with GitHubStub(state) as stub:
        yield stub


@pytest.fixture
def github_stub(github_stub_server: GitHubStub) -> GitHubStub:
    github_stub_server.reset()
    return github_stub_server


@pytest.fixture
async def client(
    github_stub: GitHubStub, app_factory: Callable[[Settings], FastAPI], make_settings: Callable[..., Settings]
) -> AsyncIterator[httpx.AsyncClient]:
    app = app_factory(make_settings(**github_stub.settings_overrides()))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as client,
    ):
        yield client


async def _to_dashboard(client: httpx.AsyncClient, next_path: str | None = None, *, start_path: str = "") -> str:
    """Continue with GitHub (the dashboard's start, or `start_path`), consent at the stub, and
    GitHub's redirect back: the dashboard's callback URL (path and query) the API sends the
    browser to."""
    params = {"next": next_path} if next_path else None
    if not start_path:
        began = await client.get("/auth/github", params=params)
        assert began.status_code == 303, began.text
        at_api = httpx.URL(began.headers["location"])
        start_path, params = at_api.path, dict(at_api.params)
    start = await client.get(start_path, params=params)
    assert start.status_code == 302, start.text
    async with httpx.AsyncClient() as at_github:
        consent = await at_github.get(start.headers["location"])
    assert consent.status_code == 302
    back = httpx.URL(consent.headers["location"])
    callback = await client.get(back.path, params=back.params)
    assert callback.status_code == 302, callback.text
    location = callback.headers["location"]
    assert location.startswith(f"{FRONTEND}/auth/callback?")
    return location.removeprefix(FRONTEND)


def _error_page(response: httpx.Response, status_code: int) -> str:
    assert response.status_code == status_code, (response.status_code, response.text[:2000])
    assert response.headers["content-type"].startswith("text/html")
    assert f'data-status="{status_code}"' in response.text
    assert not set_cookie_headers(response, SESSION_COOKIE)
    return response.text


async def test_the_code_is_exchanged_for_a_session_cookie_then_the_overview(
    client: httpx.AsyncClient, github_stub: GitHubStub
) -> None:
    github_stub.state.add_user("octocat", name="The Octocat", sign_in=True)
    landing = await client.get(await _to_dashboard(client))
    assert (landing.status_code, landing.headers["location"]) == (303, "/")
    (cookie,) = set_cookie_headers(landing, SESSION_COOKIE)
    flags = [flag.strip().lower() for flag in cookie.split(";")]
    assert "httponly" in flags
    assert "samesite=lax" in flags
    assert "path=/" in flags
    assert "secure" not in flags  # not in production
    assert any(flag.startswith("max-age=") and int(flag.split("=")[1]) > 0 for flag in flags)

    overview = await client.get("/")
    assert overview.status_code == 200
    assert "octocat" in overview.text


async def test_next_is_kept_and_a_used_code_is_refused(client: httpx.AsyncClient, github_stub: GitHubStub) -> None:
    github_stub.state.add_user("octocat", sign_in=True)
    callback = await _to_dashboard(client, "/orgs")
    nonce = client.cookies[NONCE_COOKIE]
    landing = await client.get(callback)
    assert (landing.status_code, landing.headers["location"]) == (303, "/orgs")
    client.cookies.clear()
    client.cookies.set(NONCE_COOKIE, nonce)  # the very browser, replaying its used code
    replay = _error_page(await client.get(callback), 400)
    assert "GitHub sign-in failed" in replay
    assert "already used" in replay
    assert 'href="/sign-in"' in replay


async def test_an_expired_or_unknown_code_is_an_error_page(
    client: httpx.AsyncClient, github_stub: GitHubStub, clock: FakeClock
) -> None:
    github_stub.state.add_user("octocat", sign_in=True)
    callback = await _to_dashboard(client)
    clock.advance(seconds=61)
    _error_page(await client.get(callback), 400)
    _error_page(await client.get("/auth/callback", params={"code": "not-a-code"}), 400)
    _error_page(await client.get("/auth/callback"), 400)


async def test_github_refusals_are_error_pages(client: httpx.AsyncClient, github_stub: GitHubStub) -> None:
    github_stub.state.add_user("octocat", sign_in=True)
    github_stub.state.deny_consent = True
    denied = _error_page(await client.get(await _to_dashboard(client)), 400)
    assert "GitHub sign-in was canceled" in denied


async def test_a_disabled_account_is_refused(
    client: httpx.AsyncClient, github_stub: GitHubStub, session: AsyncSession, clock: FakeClock
) -> None:
    github_stub.state.add_user("octocat", sign_in=True)
    callback = await _to_dashboard(client)
    user = (await session.scalars(select(User).where(User.username == "octocat"))).one()
    user.disabled_at = clock()
    await session.flush()
    refused = _error_page(await client.get(callback), 401)
    assert "This account is disabled" in refused
    assert (await client.get("/")).status_code == 303  # still signed out


async def test_the_exchange_is_rate_limited_as_the_api_is(client: httpx.AsyncClient) -> None:
    async def guess() -> httpx.Response:
        client.cookies.set(NONCE_COOKIE, "a-nonce")  # each answer clears it
        return await client.get("/auth/callback", params={"code": "guess"})

    for _ in range(10):
        _error_page(await guess(), 400)
    limited = _error_page(await guess(), 429)
    assert "GitHub sign-in failed" in limited
    api = await client.post("/api/v1/auth/oauth/exchange", json={"token": "guess"})
    assert api.status_code == 429  # one bucket for both


async def test_after_linking_github_to_the_settings_page(client: httpx.AsyncClient) -> None:
    linked = await client.get("/auth/callback", params={"linked": "github", "account": "ada", "login": "ada-gh"})
    assert (linked.status_code, linked.headers["location"]) == (303, "/settings?saved=github_linked")


def _other_browser(client: httpx.AsyncClient) -> httpx.AsyncClient:
    """A second browser on the same app: a cookie jar of its own."""
    return httpx.AsyncClient(transport=client._transport, base_url="http://testserver")


async def _signed_in_as(browser: httpx.AsyncClient) -> str | None:
    me = await browser.get("/settings")
    if me.status_code != 200:
        return None
    match = re.search(r'name="username" type="text" value="([^"]*)"', me.text)
    assert match is not None
    return match.group(1)


async def test_a_sign_in_link_from_another_browser_signs_no_one_in(
    client: httpx.AsyncClient, github_stub: GitHubStub, make_user: MakeUser
) -> None:
    """Login CSRF: mallory finishes a GitHub sign-in of her own and sends the landing link; the
    victim's browser, with no nonce or its own, is refused and stays as it was."""
    github_stub.state.add_user("mallory", sign_in=True)
    trap = await _to_dashboard(client)
    async with _other_browser(client) as victim:
        refused = _error_page(await victim.get(trap), 400)
        assert "not started in this browser" in refused
        assert await _signed_in_as(victim) is None

        grace = await make_user("grace")
        use_session(victim, grace.token)
        started = await victim.get("/auth/github")  # a nonce of the victim's own flow
        assert started.status_code == 303
        assert NONCE_COOKIE in victim.cookies
        refused = _error_page(await victim.get(trap), 400)
        assert "GitHub sign-in failed" in refused
        assert NONCE_COOKIE not in victim.cookies  # cleared by every answer
        assert await _signed_in_as(victim) == "grace"  # still grace, and her session lives
        assert (await victim.get("/api/v1/auth/me", headers=grace.headers)).status_code == 200
    # The code was never spent: the browser that started the flow signs in with it.
    landing = await client.get(trap)
    assert (landing.status_code, landing.headers["location"]) == (303, "/")
    assert await _signed_in_as(client) == "mallory"


async def test_the_nonce_cookie_binds_the_flow_and_is_cleared(
    client: httpx.AsyncClient, github_stub: GitHubStub
) -> None:
    github_stub.state.add_user("octocat", sign_in=True)
    started = await client.get("/auth/github", params={"next": "/orgs"})
    assert started.status_code == 303
    (cookie,) = set_cookie_headers(started, NONCE_COOKIE)
    flags = [flag.strip().lower() for flag in cookie.split(";")]
    assert {"httponly", "samesite=lax", "path=/auth/callback", "max-age=600"} <= set(flags)
    nonce = client.cookies[NONCE_COOKIE]
    at_api = httpx.URL(started.headers["location"])
    assert at_api.path == "/api/v1/auth/oauth/github"
    # Only the nonce's hash leaves the browser.
    assert dict(at_api.params) == {"binding": hashlib.sha256(nonce.encode()).hexdigest(), "next": "/orgs"}
    assert nonce not in str(at_api)

    landing = await client.get(await _to_dashboard(client))
    assert landing.status_code == 303
    (cleared,) = set_cookie_headers(landing, NONCE_COOKIE)
    assert "max-age=0" in cleared.lower()
    assert NONCE_COOKIE not in client.cookies


async def test_an_unbound_code_is_refused_here_but_the_apis_exchange_still_takes_it(
    client: httpx.AsyncClient, github_stub: GitHubStub
) -> None:
    """A flow started at the API without a binding (an API client keeping its code) ends with a
    code the dashboard never accepts, whatever nonce the browser holds."""
    github_stub.state.add_user("octocat", sign_in=True)
    unbound = await _to_dashboard(client, start_path="/api/v1/auth/oauth/github")
    assert (await client.get("/auth/github")).status_code == 303  # some nonce of this browser
    _error_page(await client.get(unbound), 400)
    code = httpx.URL(unbound).params["code"]
    exchanged = await client.post("/api/v1/auth/oauth/exchange", json={"token": code})
    assert exchanged.status_code == 200, exchanged.text
    assert exchanged.json()["user"]["username"] == "octocat"


async def test_without_github_configured_the_start_is_a_404_page(
    app_factory: Callable[[Settings], FastAPI], make_settings: Callable[..., Settings]
) -> None:
    app = app_factory(make_settings())
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as plain,
    ):
        _error_page(await plain.get("/auth/github"), 404)
        assert 'data-testid="github-sign-in"' not in (await plain.get("/sign-in")).text


async def test_signing_in_with_github_ends_the_session_it_replaces(
    client: httpx.AsyncClient, github_stub: GitHubStub, make_user: MakeUser
) -> None:
    ada = await make_user("ada")
    use_session(client, ada.token)
    github_stub.state.add_user("octocat", sign_in=True)
    landing = await client.get(await _to_dashboard(client))
    (cookie,) = set_cookie_headers(landing, SESSION_COOKIE)
    assert ada.token not in cookie
    client.cookies.clear()  # the test's own cookie (no domain) would shadow the answered one
    client.cookies.set(SESSION_COOKIE, cookie.split(";")[0].split("=", 1)[1])
    assert await _signed_in_as(client) == "octocat"
    ended = await client.get("/api/v1/auth/me", headers=ada.headers)
    assert (ended.status_code, ended.json()["code"]) == (401, "session_revoked")


# --- linking GitHub from settings --------------------------------------------------------------


async def _link_from_settings(client: httpx.AsyncClient) -> httpx.Response:
    """Settings' "Link GitHub", consent at the stub, GitHub's redirect back: the dashboard's page."""
    page = await client.get("/settings")
    assert 'data-testid="link-github"' in page.text
    started = await client.post("/settings/github/link", data={"csrf_token": csrf_of(page.text)})
    assert started.status_code == 303, started.text
    assert set_cookie_headers(started, LINK_COOKIE)
    to_github = await client.get(started.headers["location"])
    assert to_github.status_code == 302, to_github.text
    async with httpx.AsyncClient() as at_github:
        consent = await at_github.get(to_github.headers["location"])
    back = httpx.URL(consent.headers["location"])
    callback = await client.get(back.path, params=back.params)
    assert callback.status_code == 302, callback.text
    location = callback.headers["location"]
    assert location.startswith(f"{FRONTEND}/auth/callback?")
    return await client.get(location.removeprefix(FRONTEND))


async def test_link_github_from_settings(
    client: httpx.AsyncClient, github_stub: GitHubStub, make_user: MakeUser
) -> None:
    ada = await make_user("ada")
    use_session(client, ada.token)
    github_stub.state.add_user("ada-gh", sign_in=True)
    refused = await client.post("/settings/github/link")
    assert refused.status_code == 403  # CSRF
    landing = await _link_from_settings(client)
    assert (landing.status_code, landing.headers["location"]) == (303, "/settings?saved=github_linked")
    page = (await client.get(landing.headers["location"])).text
    assert "GitHub is linked to your account." in page
    assert '<strong data-testid="github-login">ada-gh</strong>' in page
    assert 'data-testid="link-github"' not in page
    assert await _signed_in_as(client) == "ada"  # linking is not signing in anew
    # Signing in with that GitHub account now reaches ada.
    async with _other_browser(client) as laptop:
        assert (await laptop.get(await _to_dashboard(laptop))).status_code == 303
        assert await _signed_in_as(laptop) == "ada"


async def test_linking_a_github_account_of_another_user_is_an_error_page(
    client: httpx.AsyncClient, github_stub: GitHubStub, make_user: MakeUser
) -> None:
    github_stub.state.add_user("octocat", sign_in=True)
    async with _other_browser(client) as theirs:
        assert (await theirs.get(await _to_dashboard(theirs))).status_code == 303  # octocat's account
    ada = await make_user("ada")
    use_session(client, ada.token)
    page = await _link_from_settings(client)
    refused = _error_page(page, 409)
    assert "GitHub was not linked" in refused
    assert "This GitHub account is linked to another user." in refused
    assert 'href="/settings"' in refused  # back where it started
    settings = (await client.get("/settings")).text
    assert 'data-testid="github-none"' in settings
