"""Listing and importing GitHub repositories through the linked account, against the stub GitHub."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from codepulse.auth.models import OAuthAccount
from tests.auth.helpers import SignedIn
from tests.factories import MakeMember, MakeOrg, MakeUser
from tests.repositories.conftest import MakeClient
from tests.repositories.helpers import create_repository, github_sign_in
from tests.stubs.github import ApiFault, GitHubStub, StubUser

API = "/api/v1"
LIST = f"{API}/orgs/engines/github/repositories"
IMPORT = f"{API}/orgs/engines/github/repositories/import"


def add_repos(github: GitHubStub, owner: StubUser) -> None:
    """Five repositories of `owner` (one private, one archived), one of an organization it belongs
    to, and a private one of someone else."""
    for name in ("echo", "alpha", "Delta", "charlie"):
        github.state.add_repo(owner, name, archived=name == "charlie", description=f"The {name} project")
    github.state.add_repo(owner, "bravo", private=True, default_branch="trunk")
    github.state.add_repo("octo-org", "loom", members=[owner])
    github.state.add_repo(github.state.add_user("stranger"), "hidden", private=True)


async def list_all(client: httpx.AsyncClient, user: SignedIn, per_page: int) -> tuple[list[dict[str, Any]], int]:
    items: list[dict[str, Any]] = []
    page: int | None = 1
    pages = 0
    while page is not None:
        response = await client.get(LIST, headers=user.headers, params={"page": page, "per_page": per_page})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["page"] == page
        items += body["items"]
        page = body["next_page"]
        pages += 1
    return items, pages


async def test_list_several_pages_marking_connected(
    client: httpx.AsyncClient, github_stub: GitHubStub, make_org: MakeOrg
) -> None:
    ada, gh_ada, token = await github_sign_in(client, github_stub, "ada-gh")
    await make_org(ada, slug="engines")
    add_repos(github_stub, gh_ada)
    connected = await create_repository(client, ada, "git@github.com:Ada-GH/Alpha.git")

    items, pages = await list_all(client, ada, per_page=2)
    assert pages == 3
    assert [item["full_name"] for item in items] == [
        "ada-gh/alpha", "ada-gh/bravo", "ada-gh/charlie", "ada-gh/Delta", "ada-gh/echo", "octo-org/loom"
    ]  # fmt: skip
    by_name = {item["full_name"]: item for item in items}
    assert (by_name["ada-gh/alpha"]["connected"], by_name["ada-gh/alpha"]["repository_id"]) == (True, connected["id"])
    assert not any(item["connected"] for name, item in by_name.items() if name != "ada-gh/alpha")
    bravo = by_name["ada-gh/bravo"]
    assert (bravo["private"], bravo["default_branch"], bravo["owner"]) == (True, "trunk", "ada-gh")
    assert bravo["clone_url"] == "https://github.com/ada-gh/bravo.git"
    assert by_name["ada-gh/charlie"]["archived"] is True
    assert by_name["ada-gh/echo"]["description"] == "The echo project"

    first = (await client.get(LIST, headers=ada.headers, params={"per_page": 100})).json()
    assert (len(first["items"]), first["next_page"], first["private_access"]) == (6, None, True)
    # The token went to GitHub's API as a bearer token, never in a URL.
    calls = [r for r in github_stub.state.api_requests if r.path.endswith("/user/repos")]
    assert len(calls) == 4
    assert all(r.headers["authorization"] == f"Bearer {token}" for r in calls)


async def test_import_is_all_or_nothing(
    client: httpx.AsyncClient, github_stub: GitHubStub, make_org: MakeOrg, make_member: MakeMember
) -> None:
    ada, gh_ada, _ = await github_sign_in(client, github_stub, "ada-gh")
    engines = await make_org(ada, slug="engines", plan="pro")  # more repositories than the free plan's
    add_repos(github_stub, gh_ada)

    refused = await client.post(
        IMPORT,
        headers=ada.headers,
        json={"full_names": ["ada-gh/alpha", "Ada-GH/Alpha", "stranger/hidden", "ghost/none"]},
    )
    assert refused.status_code == 422
    assert [(e["field"], e["code"]) for e in refused.json()["errors"]] == [
        ("body.full_names.2", "github_repository_not_found"),
        ("body.full_names.3", "github_repository_not_found"),
    ]
    assert (await client.get(f"{API}/orgs/engines/repositories", headers=ada.headers)).json()["items"] == []

    imported = await client.post(
        IMPORT,
        headers=ada.headers,
        json={
            "full_names": ["ada-gh/alpha", "ADA-GH/ALPHA", "ada-gh/bravo", "octo-org/loom"],
            "scan_schedule": "daily",
        },
    )
    assert imported.status_code == 200, imported.text
    body = imported.json()
    assert body["already_connected"] == []
    repos = {r["name"]: r for r in body["imported"]}
    assert set(repos) == {"ada-gh/alpha", "ada-gh/bravo", "octo-org/loom"}
    bravo = repos["ada-gh/bravo"]
    assert (bravo["provider"], bravo["private"], bravo["default_branch"], bravo["scan_schedule"]) == (
        "github", True, "trunk", "daily"
    )  # fmt: skip
    assert bravo["clone_url"] == "https://github.com/ada-gh/bravo.git"
    assert bravo["canonical_url"] == "https://github.com/ada-gh/bravo"
    stub_bravo = next(r for r in github_stub.state.repos.values() if r.name == "bravo")
    assert bravo["external_id"] == str(stub_bravo.id)

    again = await client.post(IMPORT, headers=ada.headers, json={"full_names": ["ada-gh/alpha", "ada-gh/echo"]})
    assert again.status_code == 200
    assert [r["name"] for r in again.json()["imported"]] == ["ada-gh/echo"]
    assert [r["id"] for r in again.json()["already_connected"]] == [repos["ada-gh/alpha"]["id"]]

    items, _ = await list_all(client, ada, per_page=100)
    assert {i["full_name"] for i in items if i["connected"]} == {
        "ada-gh/alpha", "ada-gh/bravo", "ada-gh/echo", "octo-org/loom"
    }  # fmt: skip
    audit = await client.get(
        f"{API}/orgs/engines/audit-log", headers=ada.headers, params={"action": "repository.imported"}
    )
    assert sorted(e["metadata"]["full_name"] for e in audit.json()["items"]) == [
        "ada-gh/alpha", "ada-gh/bravo", "ada-gh/echo", "octo-org/loom"
    ]  # fmt: skip

    # Importing is an admin's job; members cannot, nor list.
    member = await make_member(engines, "member", "mel")
    assert (await client.get(LIST, headers=member.headers)).status_code == 403
    assert (await client.post(IMPORT, headers=member.headers, json={"full_names": ["a/b"]})).status_code == 403


async def test_import_is_one_quota_operation(
    make_client: MakeClient, github_stub: GitHubStub, make_org: MakeOrg
) -> None:
    client = await make_client(PLAN_LIMITS={"free": {"repositories": 2}})
    ada, gh_ada, _ = await github_sign_in(client, github_stub, "ada-gh")
    await make_org(ada, slug="engines")
    add_repos(github_stub, gh_ada)
    await create_repository(client, ada, "https://gitlab.com/octo/other")
    refused = await client.post(IMPORT, headers=ada.headers, json={"full_names": ["ada-gh/alpha", "ada-gh/echo"]})
    assert refused.status_code == 402
    body = refused.json()
    assert (body["code"], body["resource"], body["limit"], body["used"]) == ("quota_exceeded", "repositories", 2, 1)
    assert (body["plan"], body["upgrade_to"]) == ("free", "pro")
    listed = (await client.get(f"{API}/orgs/engines/repositories", headers=ada.headers)).json()["items"]
    assert [r["name"] for r in listed] == ["octo/other"]
    fits = await client.post(IMPORT, headers=ada.headers, json={"full_names": ["ada-gh/alpha"]})
    assert fits.status_code == 200


async def test_linked_through_the_web_flow(
    client: httpx.AsyncClient, github_stub: GitHubStub, make_user: MakeUser, make_org: MakeOrg
) -> None:
    grace = await make_user("grace")
    await make_org(grace, slug="engines")
    gh_grace = github_stub.state.add_user("grace-gh", sign_in=True)
    github_stub.state.add_repo(gh_grace, "compiler")
    started = await client.get(f"{API}/auth/oauth/github", params={"link": "1"}, headers=grace.headers)
    async with httpx.AsyncClient() as browser:
        back = httpx.URL((await browser.get(started.headers["location"])).headers["location"])
    linked = await client.get(back.path, params=back.params)
    assert httpx.URL(linked.headers["location"]).params["linked"] == "github"
    # The sign-in scopes (read:user user:email) do not include `repo`: GitHub shows public ones only.
    github_stub.state.add_repo(gh_grace, "secret-sauce", private=True)
    listing = (await client.get(LIST, headers=grace.headers)).json()
    assert [item["full_name"] for item in listing["items"]] == ["grace-gh/compiler"]
    assert listing["private_access"] is False
    refused = await client.post(IMPORT, headers=grace.headers, json={"full_names": ["grace-gh/secret-sauce"]})
    assert refused.json()["errors"][0]["code"] == "github_repository_not_found"
    imported = await client.post(IMPORT, headers=grace.headers, json={"full_names": ["grace-gh/compiler"]})
    assert [r["name"] for r in imported.json()["imported"]] == ["grace-gh/compiler"]


async def test_without_a_linked_github_account(
    client: httpx.AsyncClient, make_user: MakeUser, make_org: MakeOrg
) -> None:
    ada = await make_user("ada")
    await make_org(ada, slug="engines")
    for response in (
        await client.get(LIST, headers=ada.headers),
        await client.post(IMPORT, headers=ada.headers, json={"full_names": ["octo/engine"]}),
    ):
        assert response.status_code == 409
        body = response.json()
        assert body["code"] == "github_not_linked"
        assert body["link_url"] == "http://testserver/api/v1/auth/oauth/github/link"
    for names in ([], ["not-a-full-name"], ["../etc/passwd"], ["a/b/c"], [f"o/r{i}" for i in range(51)]):
        response = await client.post(IMPORT, headers=ada.headers, json={"full_names": names})
        assert response.status_code == 422, names


async def test_github_down_revoked_or_unreadable_token(
    client: httpx.AsyncClient, github_stub: GitHubStub, session: AsyncSession, make_org: MakeOrg
) -> None:
    ada, _, token = await github_sign_in(client, github_stub, "ada-gh")
    await make_org(ada, slug="engines")
    for fault in (ApiFault.SERVER_ERROR, ApiFault.MALFORMED_JSON, ApiFault.RATE_LIMITED):
        github_stub.state.api_fault = fault
        response = await client.get(LIST, headers=ada.headers)
        assert (response.status_code, response.json()["code"]) == (503, "github_unavailable"), fault
        response = await client.post(IMPORT, headers=ada.headers, json={"full_names": ["octo/engine"]})
        assert (response.status_code, response.json()["code"]) == (503, "github_unavailable"), fault
    github_stub.state.api_fault = None

    github_stub.state.revoke(token)
    for response in (
        await client.get(LIST, headers=ada.headers),
        await client.post(IMPORT, headers=ada.headers, json={"full_names": ["octo/engine"]}),
    ):
        assert response.status_code == 409
        assert response.json()["code"] == "github_reauth_required"
        assert response.json()["link_url"].endswith("/api/v1/auth/oauth/github/link")
        assert token not in response.text
    # A token sealed under another SECRET_KEY cannot be opened: the same answer.
    await session.execute(update(OAuthAccount).values(access_token_encrypted="gAAAAABnot-a-fernet-token"))
    await session.flush()
    unreadable = await client.get(LIST, headers=ada.headers)
    assert (unreadable.status_code, unreadable.json()["code"]) == (409, "github_reauth_required")
