"""Clone credentials: granted by a GitHub import for one repository, dropped when an admin points
the repository elsewhere, granted again only by someone GitHub shows it to."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from codepulse.auth.models import OAuthAccount
from codepulse.orgs.models import Organization
from tests.auth.helpers import SignedIn
from tests.factories import MakeOrg, MembershipFactory
from tests.repositories.helpers import github_sign_in
from tests.stubs.github import GitHubStub, StubUser

API = "/api/v1"
IMPORT = f"{API}/orgs/engines/github/repositories/import"


async def _admin(session: AsyncSession, org: Organization, user: SignedIn) -> None:
    MembershipFactory.create(org=org, user_id=uuid.UUID(user.user["id"]), role="admin")
    await session.flush()


async def _import(client: httpx.AsyncClient, user: SignedIn, *names: str) -> dict[str, Any]:
    response = await client.post(IMPORT, headers=user.headers, json={"full_names": list(names)})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def _patch(client: httpx.AsyncClient, user: SignedIn, repository_id: str, **fields: Any) -> dict[str, Any]:
    response = await client.patch(f"{API}/repositories/{repository_id}", headers=user.headers, json=fields)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def _setup(
    client: httpx.AsyncClient, github: GitHubStub, session: AsyncSession, make_org: MakeOrg
) -> tuple[SignedIn, SignedIn, StubUser, StubUser]:
    """`ada` owns organization engines; `vic` is an admin of it. Both sign in with GitHub; vic's
    GitHub account owns two private repositories, secret and other."""
    ada, gh_ada, _ = await github_sign_in(client, github, "ada-gh")
    org = await make_org(ada, slug="engines")
    vic, gh_vic, _ = await github_sign_in(client, github, "vic-gh")
    await _admin(session, org, vic)
    github.state.add_repo(gh_vic, "secret", private=True)
    github.state.add_repo(gh_vic, "other", private=True)
    return ada, vic, gh_ada, gh_vic


async def test_another_url_or_provider_drops_the_credential(
    client: httpx.AsyncClient, github_stub: GitHubStub, session: AsyncSession, make_org: MakeOrg
) -> None:
    ada, vic, _, _ = await _setup(client, github_stub, session, make_org)
    imported = (await _import(client, vic, "vic-gh/secret", "vic-gh/other"))["imported"]
    secret, other = sorted(imported, key=lambda r: r["name"], reverse=True)
    assert secret["credential_user_id"] == other["credential_user_id"] == vic.user["id"]

    # What does not change where the token goes keeps it.
    kept = await _patch(client, ada, secret["id"], name="Secret", scan_schedule="daily", private=True)
    kept = await _patch(client, ada, secret["id"], clone_url=" https://github.com/vic-gh/secret.git ")
    assert kept["credential_user_id"] == vic.user["id"]

    # The attack: ada points vic's repository at a host of her own (keeping it a private GitHub
    # one, so the scan would have sent vic's token along), or at another repository on GitHub.
    moved = await _patch(client, ada, secret["id"], clone_url="https://git.example.org/ada/loot", provider="github")
    assert (moved["credential_user_id"], moved["external_id"], moved["private"]) == (None, None, True)
    renamed = await _patch(client, ada, other["id"], provider="gitlab")
    assert renamed["credential_user_id"] is None
    audit = await client.get(
        f"{API}/orgs/engines/audit-log", headers=ada.headers, params={"action": "repository.updated"}
    )
    dropped = [e["metadata"]["credential"] for e in audit.json()["items"] if "credential" in e["metadata"]]
    assert dropped == [{"from": "granted", "to": None}] * 2

    # Pointing it back does not bring the credential back: only an import grants one.
    back = await _patch(client, ada, secret["id"], clone_url="https://github.com/vic-gh/secret")
    assert back["credential_user_id"] is None


async def test_import_again_grants_a_credential_only_when_there_is_no_usable_one(
    client: httpx.AsyncClient, github_stub: GitHubStub, session: AsyncSession, make_org: MakeOrg
) -> None:
    ada, vic, gh_ada, _ = await _setup(client, github_stub, session, make_org)
    secret_repo = next(r for r in github_stub.state.repos.values() if r.name == "secret")
    secret_repo.members.add(gh_ada.id)  # ada may read it on GitHub too
    secret = (await _import(client, vic, "vic-gh/secret"))["imported"][0]

    # vic's credential is in use: ada importing it again does not take it over...
    again = await _import(client, ada, "vic-gh/secret")
    assert [r["credential_user_id"] for r in again["already_connected"]] == [vic.user["id"]]

    # ...once vic has left the organization, it does.
    removed = await client.delete(f"{API}/orgs/engines/members/{vic.user['id']}", headers=ada.headers)
    assert removed.status_code == 204, removed.text
    regranted = await _import(client, ada, "vic-gh/secret")
    assert [(r["id"], r["credential_user_id"]) for r in regranted["already_connected"]] == [
        (secret["id"], ada.user["id"])
    ]
    audit = await client.get(
        f"{API}/orgs/engines/audit-log", headers=ada.headers, params={"action": "repository.credential_granted"}
    )
    assert [e["target_id"] for e in audit.json()["items"]] == [secret["id"]]

    # A dropped credential (the URL was changed) comes back with an import at that URL.
    await _patch(client, ada, secret["id"], clone_url="git@github.com:vic-gh/secret.git")
    dropped = await client.get(f"{API}/repositories/{secret['id']}", headers=ada.headers)
    assert dropped.json()["credential_user_id"] is None
    restored = await _import(client, ada, "vic-gh/secret")
    assert [r["credential_user_id"] for r in restored["already_connected"]] == [ada.user["id"]]


async def test_import_again_replaces_a_grantor_without_a_github_token(
    client: httpx.AsyncClient, github_stub: GitHubStub, session: AsyncSession, make_org: MakeOrg
) -> None:
    ada, vic, gh_ada, _ = await _setup(client, github_stub, session, make_org)
    next(r for r in github_stub.state.repos.values() if r.name == "secret").members.add(gh_ada.id)
    secret = (await _import(client, vic, "vic-gh/secret"))["imported"][0]
    unlinked = update(OAuthAccount).where(OAuthAccount.user_id == uuid.UUID(vic.user["id"]))
    await session.execute(unlinked.values(access_token_encrypted=None))  # vic's token became unusable
    regranted = await _import(client, ada, "vic-gh/secret")
    assert [(r["id"], r["credential_user_id"]) for r in regranted["already_connected"]] == [
        (secret["id"], ada.user["id"])
    ]
