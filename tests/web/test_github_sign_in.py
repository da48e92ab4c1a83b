"""GitHub sign-in in the browser against the local GitHub stub: the API's callback sends the
browser to `FRONTEND_URL/auth/callback?code=`, whose page trades the code for a web session (the
cookie's flags), and goes on to `next` or the overview; refusals are pages."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from codepulse.auth.models import User
from codepulse.config import Settings
from codepulse.web.session import SESSION_COOKIE
from tests.helpers import FakeClock
from tests.stubs.github import GitHubStub, GitHubStubState
from tests.web.helpers import set_cookie_headers

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


async def _to_dashboard(client: httpx.AsyncClient, next_path: str | None = None) -> str:
    """Continue with GitHub, consent at the stub, and GitHub's redirect back: the dashboard's
    callback URL (path and query) the API sends the browser to."""
    params = {"next": next_path} if next_path else None
    start = await client.get("/api/v1/auth/oauth/github", params=params)
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
    landing = await client.get(callback)
    assert (landing.status_code, landing.headers["location"]) == (303, "/orgs")
    client.cookies.clear()
    replay = _error_page(await client.get(callback), 400)
    assert "GitHub sign-in failed" in replay
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
    for _ in range(10):
        _error_page(await client.get("/auth/callback", params={"code": "guess"}), 400)
    limited = _error_page(await client.get("/auth/callback", params={"code": "guess"}), 429)
    assert "GitHub sign-in failed" in limited
    api = await client.post("/api/v1/auth/oauth/exchange", json={"token": "guess"})
    assert api.status_code == 429  # one bucket for both


async def test_after_linking_github_to_the_settings_page(client: httpx.AsyncClient) -> None:
    linked = await client.get("/auth/callback", params={"linked": "github", "account": "ada", "login": "ada-gh"})
    assert (linked.status_code, linked.headers["location"]) == (303, "/settings")
