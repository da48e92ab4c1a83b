"""The worker hands a GitHub token to git only for the repository it was granted for, of a current
member whose GitHub account still reaches it: the issue-12 attack, end to end.

vic (an admin of engines) imports his private GitHub repository; ada (the owner) then points it
elsewhere and scans. The scan function the worker calls (the pipeline: clone, then scan) is
wrapped to record the token it is handed, and clones a local repository instead of GitHub.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from codepulse.app import create_app
from codepulse.auth.models import OAuthAccount
from codepulse.db import Database
from codepulse.orgs.models import Membership, Organization
from codepulse.repositories.models import Repository
from codepulse.scans.pipeline import scan_repository
from codepulse.scans.results import PipelineResult
from codepulse.scans.runner import ScanRunner
from tests.auth.conftest import github_stub, github_stub_server  # noqa: F401 - shared fixtures
from tests.auth.helpers import SignedIn, register
from tests.databases import DatabaseServer, build_settings
from tests.helpers import FakeClock
from tests.orgs.helpers import create_org
from tests.repositories.helpers import github_sign_in
from tests.scans.helpers import API, GitRepo, aws_key, config_file, request_scan
from tests.stubs.github import ApiFault, GitHubStub, StubRepo, StubUser
from tests.stubs.smtp import SmtpServer


@dataclass
class World:
    client: httpx.AsyncClient
    database: Database
    runner: ScanRunner
    github: GitHubStub
    ada: SignedIn
    vic: SignedIn
    gh_vic: StubUser
    secret: StubRepo
    repository: dict[str, Any]
    handed: list[str | None]
    """The token each pipeline run was handed (None: cloned anonymously)."""

    async def scan(self) -> dict[str, Any]:
        scan = await request_scan(self.client, self.ada, self.repository["id"])
        await self.runner.run(uuid.UUID(scan["id"]))
        response = await self.client.get(f"{API}/scans/{scan['id']}", headers=self.ada.headers)
        body: dict[str, Any] = response.json()
        return body

    async def patch(self, **fields: Any) -> dict[str, Any]:
        response = await self.client.patch(
            f"{API}/repositories/{self.repository['id']}", headers=self.ada.headers, json=fields
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


@pytest.fixture
async def world(
    database_server: DatabaseServer,
    smtp_server: SmtpServer,
    clock: FakeClock,
    github_stub: GitHubStub,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> AsyncIterator[World]:
    url = await database_server.clone("scans")
    settings = build_settings(
        url,
        ALLOW_LOCAL_REPOSITORIES=True,
        SCAN_PROCESSES=1,
        **smtp_server.settings(),
        **github_stub.settings_overrides(),
    )
    database = Database.from_settings(settings)
    app = create_app(settings, database=database, clock=clock)
    local = GitRepo(tmp_path / "secret")
    local.commit({"settings.py": config_file(aws_key(3))})
    handed: list[str | None] = []

    async def recording_scan(_url: str, ref: str | None, **kwargs: Any) -> PipelineResult:
        handed.append(kwargs["token"])
        return await scan_repository(local.url, ref, **kwargs)  # GitHub's copy, on disk

    try:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as client,
        ):
            ada = await register(client, "ada")
            await create_org(client, ada, "engines")
            vic, gh_vic, _ = await github_sign_in(client, github_stub, "vic-gh")
            async with database.transaction() as session:
                org = await session.scalar(select(Organization.id).where(Organization.slug == "engines"))
                session.add(Membership(org_id=org, user_id=uuid.UUID(vic.user["id"]), role="admin"))
            secret = github_stub.state.add_repo(gh_vic, "secret", private=True)
            github_stub.state.add_repo(gh_vic, "diary", private=True)
            imported = await client.post(
                f"{API}/orgs/engines/github/repositories/import",
                headers=vic.headers,
                json={"full_names": ["vic-gh/secret"]},
            )
            assert imported.status_code == 200, imported.text
            runner = ScanRunner(database, settings, clock=clock, scan=recording_scan)
            repository = imported.json()["imported"][0]
            yield World(client, database, runner, github_stub, ada, vic, gh_vic, secret, repository, handed)
    finally:
        await database.dispose()


def _vic_token(world: World) -> str:
    return next(token for token, issued in world.github.state.tokens.items() if issued.user_id == world.gh_vic.id)


async def test_the_granted_repository_is_cloned_with_the_token_github_confirms(world: World) -> None:
    world.github.state.api_requests.clear()
    scan = await world.scan()
    assert scan["status"] == "succeeded", scan
    assert world.handed == [_vic_token(world)]
    # Asked GitHub first, with that token, about that repository.
    asked = [r for r in world.github.state.api_requests if r.path.endswith("/repos/vic-gh/secret")]
    assert len(asked) == 1
    assert asked[0].headers["authorization"] == f"Bearer {_vic_token(world)}"


@pytest.mark.parametrize(
    "target",
    [
        "https://git.example.org/ada/loot.git",  # a host of the admin's choosing
        "https://github.com/vic-gh/diary",  # another of vic's private repositories
    ],
)
async def test_an_admin_repointing_the_url_gets_no_token(world: World, target: str) -> None:
    await world.patch(clone_url=target, provider="github", private=True)
    scan = await world.scan()
    assert (scan["status"], scan["error"]["code"]) == ("failed", "repository_credentials_missing")
    assert world.handed == []  # git never ran, let alone with vic's token
    assert _vic_token(world) not in scan["error"]["message"]


async def test_a_connector_who_left_lends_no_token(world: World) -> None:
    removed = await world.client.delete(f"{API}/orgs/engines/members/{world.vic.user['id']}", headers=world.ada.headers)
    assert removed.status_code == 204, removed.text
    scan = await world.scan()
    assert (scan["status"], scan["error"]["code"]) == ("failed", "repository_credentials_missing")
    assert world.handed == []


async def test_github_must_still_show_the_repository_to_the_connector(world: World) -> None:
    world.secret.members.discard(world.gh_vic.id)  # vic lost access on GitHub (e.g. transferred)
    world.secret.owner = "someone-else"
    scan = await world.scan()
    assert (scan["status"], scan["error"]["code"]) == ("failed", "repository_credentials_missing")
    assert world.handed == []


async def test_a_revoked_token_is_not_used(world: World) -> None:
    world.github.state.revoke(_vic_token(world))
    scan = await world.scan()
    assert (scan["status"], scan["error"]["code"]) == ("failed", "repository_credentials_missing")
    assert world.handed == []


async def test_github_down_fails_the_scan_without_the_token(world: World) -> None:
    world.github.state.api_fault = ApiFault.SERVER_ERROR
    scan = await world.scan()
    assert (scan["status"], scan["error"]["code"]) == ("failed", "github_unavailable")
    assert world.handed == []


async def test_public_repositories_are_cloned_anonymously(world: World) -> None:
    await world.patch(private=False)
    scan = await world.scan()
    assert scan["status"] == "succeeded", scan
    assert world.handed == [None]


@pytest.mark.parametrize(
    "tampered",
    [
        {"clone_url": "https://git.example.org/vic-gh/secret.git"},  # the URL moved, the binding did not
        {"external_id": "1"},  # another GitHub repository
        {  # moved consistently, binding included, but off GitHub: a token is for GitHub only
            "clone_url": "https://git.example.org/vic-gh/secret.git",
            "canonical_url": "https://git.example.org/vic-gh/secret",
            "credential_canonical_url": "https://git.example.org/vic-gh/secret",
        },
    ],
)
async def test_the_binding_must_still_describe_the_repository(world: World, tampered: dict[str, str]) -> None:
    """Whatever changes a repository's row outside `PATCH` (which drops the credential), the
    worker compares the binding with the row before using it."""
    async with world.database.transaction() as session:
        await session.execute(
            update(Repository).where(Repository.id == uuid.UUID(world.repository["id"])).values(**tampered)
        )
    scan = await world.scan()
    assert (scan["status"], scan["error"]["code"]) == ("failed", "repository_credentials_missing")
    assert world.handed == []


async def test_a_connector_without_a_github_token_lends_none(world: World) -> None:
    async with world.database.transaction() as session:
        await session.execute(
            update(OAuthAccount)
            .where(OAuthAccount.user_id == uuid.UUID(world.vic.user["id"]))
            .values(access_token_encrypted=None)
        )
    scan = await world.scan()
    assert (scan["status"], scan["error"]["code"]) == ("failed", "repository_credentials_missing")
    assert world.handed == []


async def test_github_must_show_the_repository_at_the_same_url(world: World) -> None:
    world.github.state.repo_host = "github.example"
    scan = await world.scan()
    assert (scan["status"], scan["error"]["code"]) == ("failed", "repository_credentials_missing")
    assert world.handed == []
