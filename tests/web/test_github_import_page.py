"""Importing from GitHub on an organization's repositories page, against the stub GitHub (real
loopback HTTP): the list of my GitHub repositories (the service behind
`GET /api/v1/orgs/{org}/github/repositories`) with a checkbox each, one import button (the service
behind `POST .../github/repositories/import`), the unlinked and empty states, and GitHub's refusals
as messages on the page, never a 500."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from fastapi import FastAPI

from codepulse.config import Settings
from codepulse.repositories.dependencies import host_resolver
from codepulse.web.repositories import GITHUB_PER_PAGE
from tests.auth.conftest import github_stub, github_stub_server  # noqa: F401 - shared fixtures
from tests.auth.helpers import SignedIn
from tests.factories import MakeMember, MakeOrg, MakeUser
from tests.repositories.conftest import FakeResolver
from tests.repositories.helpers import create_repository, github_sign_in
from tests.stubs.github import ApiFault, GitHubStub, StubUser
from tests.web.helpers import csrf_of, use_session

PAGE = "/orgs/engines/repositories"
LIST = f"{PAGE}/github"
IMPORT = f"{PAGE}/import"
HTMX = {"HX-Request": "true"}


@pytest.fixture
def settings(make_settings: Callable[..., Settings], github_stub: GitHubStub) -> Settings:  # noqa: F811
    return make_settings(**github_stub.settings_overrides(), DEFAULT_PLAN="team")


@pytest.fixture
async def app(settings: Settings, app_factory: Callable[..., FastAPI]) -> AsyncIterator[FastAPI]:
    application = app_factory(settings)
    # github.com resolves to its public address without the network (the clone URL check).
    resolver = FakeResolver()
    application.dependency_overrides[host_resolver] = lambda: resolver
    async with application.router.lifespan_context(application):
        yield application


def _is_page(response: httpx.Response, status_code: int) -> str:
    assert response.status_code == status_code, response.text[:500]
    assert response.headers["content-type"].startswith("text/html")
    assert f'data-status="{status_code}"' in response.text
    return response.text


def _list_page(response: httpx.Response, status_code: int) -> str:
    """The repositories page again, answered with `status_code` (its form's messages on it)."""
    assert response.status_code == status_code, response.text[:500]
    assert 'data-testid="github-import"' in response.text
    return response.text


def _repos(html: str) -> dict[str, str]:
    """Each listed GitHub repository: `checkbox` (importable) or `connected`."""
    found: dict[str, str] = {}
    for name, body in re.findall(r'<li data-github-repo="([^"]+)">(.*?)</li>', html, re.S):
        found[name] = "connected" if 'data-testid="connected"' in body else "checkbox"
        if found[name] == "checkbox":
            assert f'name="full_names" value="{name}"' in body
    return found


async def _owner(client: httpx.AsyncClient, github: GitHubStub, make_org: MakeOrg) -> tuple[SignedIn, StubUser, str]:
    """Ada, signed in with GitHub (so linked), owner of `engines`, browsing with her session."""
    ada, gh_ada, token = await github_sign_in(client, github, "ada-gh")
    await make_org(ada, slug="engines")
    use_session(client, ada.token)
    return ada, gh_ada, token


async def test_the_panel_loads_the_list_and_works_without_javascript(
    client: httpx.AsyncClient,
    github_stub: GitHubStub,  # noqa: F811
    make_org: MakeOrg,
) -> None:
    await _owner(client, github_stub, make_org)
    page = await client.get(PAGE)
    assert page.status_code == 200
    assert f'hx-get="{LIST}" hx-trigger="load"' in page.text
    assert f'<a href="{LIST}" data-testid="github-choose">' in page.text
    assert 'name="full_names"' not in page.text  # no text box any more: the list comes from GitHub

    partial = await client.get(LIST, headers=HTMX)
    assert partial.status_code == 200
    assert partial.text.lstrip().startswith('<div id="github-list"')
    assert "<html" not in partial.text
    assert 'data-testid="github-empty"' in partial.text  # a GitHub account with no repositories
    full = await client.get(LIST)
    assert full.status_code == 200
    assert "<html" in full.text
    assert 'data-testid="github-empty"' in full.text


async def test_check_some_and_import_them(
    client: httpx.AsyncClient,
    github_stub: GitHubStub,  # noqa: F811
    make_org: MakeOrg,
) -> None:
    ada, gh_ada, _ = await _owner(client, github_stub, make_org)
    github_stub.state.add_repo(gh_ada, "alpha", description="<b>Alpha</b> & co")
    github_stub.state.add_repo(gh_ada, "bravo", private=True)
    github_stub.state.add_repo(gh_ada, "charlie", archived=True)
    github_stub.state.add_repo("octo-org", "loom", members=[gh_ada])
    connected = await create_repository(client, ada, "https://github.com/ada-gh/charlie.git")

    listed = await client.get(LIST, headers=HTMX)
    assert _repos(listed.text) == {
        "ada-gh/alpha": "checkbox",
        "ada-gh/bravo": "checkbox",
        "ada-gh/charlie": "connected",
        "octo-org/loom": "checkbox",
    }
    assert f'href="{PAGE}/{connected["id"]}"' in listed.text
    assert "&lt;b&gt;Alpha&lt;/b&gt; &amp; co" in listed.text  # GitHub's text, escaped
    assert 'data-testid="github-next"' not in listed.text
    csrf = csrf_of(listed.text)

    _is_page(await client.post(IMPORT, data={"full_names": ["ada-gh/alpha"]}), 403)  # no CSRF token
    imported = await client.post(
        IMPORT, data={"csrf_token": csrf, "full_names": ["ada-gh/alpha", "octo-org/loom", "ada-gh/charlie"]}
    )
    assert imported.status_code == 200, imported.text[:500]
    notice = re.search(r'data-testid="imported">(.*?)</div>', imported.text, re.S)
    assert notice is not None
    assert re.findall(r">([^<]+)</a>", notice.group(1)) == ["ada-gh/alpha", "octo-org/loom", "ada-gh/charlie"]
    api = await client.get("/api/v1/orgs/engines/repositories", headers=ada.headers)
    assert sorted(r["name"] for r in api.json()["items"]) == ["ada-gh/alpha", "ada-gh/charlie", "octo-org/loom"]
    assert _repos((await client.get(LIST, headers=HTMX)).text) == {
        "ada-gh/alpha": "connected",
        "ada-gh/bravo": "checkbox",
        "ada-gh/charlie": "connected",
        "octo-org/loom": "connected",
    }


async def test_refusals_are_messages_on_the_page(
    client: httpx.AsyncClient,
    github_stub: GitHubStub,  # noqa: F811
    make_org: MakeOrg,
) -> None:
    _ada, gh_ada, token = await _owner(client, github_stub, make_org)
    github_stub.state.add_repo(gh_ada, "alpha")
    csrf = csrf_of((await client.get(PAGE)).text)

    nothing = _list_page(await client.post(IMPORT, data={"csrf_token": csrf}), 422)
    assert re.search(r'data-field="full_names"><li>Choose the repositories to import.</li>', nothing)
    unknown = _list_page(await client.post(IMPORT, data={"csrf_token": csrf, "full_names": ["ghost/none"]}), 422)
    assert "ghost/none does not exist on GitHub or your GitHub account cannot reach it." in unknown

    github_stub.state.api_fault = ApiFault.SERVER_ERROR
    down = await client.get(LIST, headers=HTMX)
    assert down.status_code == 200
    assert 'data-code="github_unavailable"' in down.text
    assert "GitHub did not answer; try again shortly." in down.text
    assert 'data-testid="github-retry"' in down.text
    failed = _list_page(await client.post(IMPORT, data={"csrf_token": csrf, "full_names": ["ada-gh/alpha"]}), 503)
    assert "GitHub did not answer; try again shortly." in failed
    github_stub.state.api_fault = None

    github_stub.state.revoke(token)
    refused = await client.get(LIST, headers=HTMX)
    assert 'data-code="github_reauth_required"' in refused.text
    assert 'href="/settings#github-title"' in refused.text
    assert token not in refused.text
    again = _list_page(await client.post(IMPORT, data={"csrf_token": csrf, "full_names": ["ada-gh/alpha"]}), 422)
    assert "link GitHub again in Settings" in again
    api = await client.get("/api/v1/orgs/engines/repositories", headers=_ada.headers)
    assert api.json()["items"] == []  # nothing connected by any refused import


async def test_unlinked_and_roles(
    client: httpx.AsyncClient, make_user: MakeUser, make_org: MakeOrg, make_member: MakeMember
) -> None:
    grace = await make_user("grace")  # signed up with a password: no GitHub account linked
    org = await make_org(grace, slug="engines")
    member = await make_member(org, "member", "mel")
    outsider = await make_user("mallory")
    use_session(client, grace.token)
    unlinked = await client.get(LIST, headers=HTMX)
    assert unlinked.status_code == 200
    assert 'data-code="github_not_linked"' in unlinked.text
    assert "Link your GitHub account in Settings first" in unlinked.text
    assert 'href="/settings#github-title"' in unlinked.text
    assert 'name="full_names"' not in unlinked.text

    use_session(client, member.token)
    assert 'data-testid="github-import"' not in (await client.get(PAGE)).text
    _is_page(await client.get(LIST), 403)
    use_session(client, outsider.token)
    _is_page(await client.get(LIST), 404)


async def test_github_repositories_a_page_at_a_time(
    client: httpx.AsyncClient,
    github_stub: GitHubStub,  # noqa: F811
    make_org: MakeOrg,
) -> None:
    _ada, gh_ada, _ = await _owner(client, github_stub, make_org)
    for number in range(GITHUB_PER_PAGE + 1):
        github_stub.state.add_repo(gh_ada, f"repo-{number:03}")
    first = await client.get(LIST, headers=HTMX)
    assert len(_repos(first.text)) == GITHUB_PER_PAGE
    assert f'hx-get="{LIST}?page=2"' in first.text
    second = await client.get(LIST, params={"page": 2}, headers=HTMX)
    assert _repos(second.text) == {f"ada-gh/repo-{GITHUB_PER_PAGE:03}": "checkbox"}
    assert 'data-testid="github-next"' not in second.text
    _is_page(await client.get(LIST, params={"page": 0}), 422)
