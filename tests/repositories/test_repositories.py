"""Connecting repositories by URL: CRUD, duplicates, refused URLs, quota, lists, roles."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from codepulse.orgs.models import Organization
from codepulse.repositories.schemas import RepositoryOut
from codepulse.repositories.service import get_repository, update_scan_summary
from tests.auth.helpers import SignedIn
from tests.factories import Account, MakeMember, MakeOrg, MakeUser, RepositoryFactory
from tests.orgs.helpers import put_on_plan
from tests.repositories.conftest import FakeResolver, MakeClient
from tests.repositories.helpers import create_repository

API = "/api/v1"


@pytest.fixture
async def owner(make_user: MakeUser, make_org: MakeOrg) -> Account:
    """ada, owner of the organization `engines`."""
    ada = await make_user("ada")
    await make_org(ada, slug="engines")
    return ada


@pytest.fixture
async def engines(owner: Account, session: AsyncSession) -> Organization:
    return (await session.execute(select(Organization).where(Organization.slug == "engines"))).scalar_one()


async def test_create_read_update_delete(client: httpx.AsyncClient, owner: Account) -> None:
    created = await create_repository(client, owner, "https://github.com/Octo/Engine.git", scan_schedule="daily")
    assert created["name"] == "Octo/Engine"
    assert created["provider"] == "github"
    assert created["clone_url"] == "https://github.com/Octo/Engine.git"
    assert created["canonical_url"] == "https://github.com/octo/engine"
    assert (created["scan_schedule"], created["private"], created["archived"]) == ("daily", False, False)
    assert (created["default_branch"], created["external_id"], created["last_scan"]) == (None, None, None)
    assert created["created_by"] == owner.user["id"]
    url = f"{API}/repositories/{created['id']}"
    assert (await client.get(url, headers=owner.headers)).json() == created

    updated = await client.patch(
        url, headers=owner.headers, json={"name": "Engine", "default_branch": "release/1.x", "private": True}
    )
    assert updated.status_code == 200, updated.text
    body = updated.json()
    assert (body["name"], body["default_branch"], body["private"], body["scan_schedule"]) == (
        "Engine", "release/1.x", True, "daily"
    )  # fmt: skip
    cleared = await client.patch(url, headers=owner.headers, json={"default_branch": None, "name": None})
    assert (cleared.json()["default_branch"], cleared.json()["name"]) == (None, "Engine")

    moved = await client.patch(url, headers=owner.headers, json={"clone_url": "git@gitlab.com:Octo/Engine.git"})
    assert moved.status_code == 200, moved.text
    assert (moved.json()["canonical_url"], moved.json()["provider"]) == ("https://gitlab.com/octo/engine", "gitlab")

    deleted = await client.delete(url, headers=owner.headers)
    assert deleted.status_code == 204
    gone = await client.get(url, headers=owner.headers)
    assert (gone.status_code, gone.json()["code"]) == (404, "repository_not_found")

    audit = await client.get(f"{API}/orgs/engines/audit-log", params={"action": "repository."}, headers=owner.headers)
    items = audit.json()["items"]
    # One clock tick for the whole test: compare without order.
    assert sorted(e["action"] for e in items) == [
        "repository.created", "repository.deleted", "repository.updated", "repository.updated", "repository.updated"
    ]  # fmt: skip
    assert {e["target_id"] for e in items} == {created["id"]}
    moves = [e["metadata"] for e in items if "canonical_url" in e["metadata"] and e["action"] == "repository.updated"]
    assert moves == [
        {
            "canonical_url": {"from": "https://github.com/octo/engine", "to": "https://gitlab.com/octo/engine"},
            "clone_url": {"from": "https://github.com/Octo/Engine.git", "to": "git@gitlab.com:Octo/Engine.git"},
            "provider": {"from": "github", "to": "gitlab"},
        }
    ]


async def test_defaults_overrides_and_branch_names(
    client: httpx.AsyncClient, owner: Account, session: AsyncSession
) -> None:
    await put_on_plan(session, "engines", "pro")  # more repositories than the free plan's
    plain = await create_repository(client, owner, "ssh://git@git.example.org:2222/srv/Team/App.git")
    assert (plain["provider"], plain["name"]) == ("git", "srv/Team/App")
    hosted = await create_repository(
        client, owner, "https://git.example.org/team/other", provider="gitlab", name="  Other  ", private=True
    )
    assert (hosted["provider"], hosted["name"], hosted["private"]) == ("gitlab", "Other", True)
    long_path = "/".join(["segment"] * 40)
    long = await create_repository(client, owner, f"https://git.example.org/{long_path}")
    assert long["name"] == long_path[:200]

    for branch in ("-evil", "--upload-pack=x", "a..b", "a b", "a~1", "/main", "main.lock", "a//b", "@", "x" * 256):
        response = await client.post(
            f"{API}/orgs/engines/repositories",
            headers=owner.headers,
            json={"clone_url": "https://github.com/octo/engine", "default_branch": branch},
        )
        assert response.status_code == 422, branch
        assert response.json()["errors"][0]["field"] == "body.default_branch"
    accepted = await create_repository(client, owner, "https://github.com/octo/engine", default_branch="feature/x-1.2")
    assert accepted["default_branch"] == "feature/x-1.2"
    unknown = await client.patch(f"{API}/repositories/{accepted['id']}", headers=owner.headers, json={"id": "x"})
    assert unknown.status_code == 422


async def test_canonical_url_is_unique_per_organization(
    client: httpx.AsyncClient, owner: Account, make_org: MakeOrg
) -> None:
    first = await create_repository(client, owner, "https://github.com/A/B.git")
    for same in ("git@github.com:a/b", "https://github.com/a/b/", "ssh://git@ssh.github.com:443/a/B"):
        response = await client.post(
            f"{API}/orgs/engines/repositories", headers=owner.headers, json={"clone_url": same}
        )
        assert response.status_code == 409, same
        assert (response.json()["code"], response.json()["repository_id"]) == ("repository_exists", first["id"])
    # Another organization may connect the same repository.
    await make_org(owner, slug="looms")
    await create_repository(client, owner, "git@github.com:a/b", org="looms")
    # An update cannot take another repository's identity either.
    other = await create_repository(client, owner, "https://github.com/a/c")
    clash = await client.patch(
        f"{API}/repositories/{other['id']}", headers=owner.headers, json={"clone_url": "git@github.com:A/B.git"}
    )
    assert (clash.status_code, clash.json()["code"]) == (409, "repository_exists")
    # Respelling its own URL is no clash.
    respelled = await client.patch(
        f"{API}/repositories/{other['id']}", headers=owner.headers, json={"clone_url": "git@github.com:A/C.git"}
    )
    assert respelled.status_code == 200
    assert respelled.json()["clone_url"] == "git@github.com:A/C.git"


REFUSED = [
    ("https://ghp_0123456789abcdef@github.com/octo/engine.git", "credentials_in_url"),
    ("https://oauth2:glpat-secret@gitlab.com/octo/engine.git", "credentials_in_url"),
    ("file:///etc/passwd", "unsupported_scheme"),
    ("ext::sh -c touch% /tmp/pwned", "unsupported_scheme"),
    ("git://github.com/octo/engine.git", "unsupported_scheme"),
    ("http://github.com/octo/engine.git", "unsupported_scheme"),
    ("/srv/git/engine.git", "unsupported_scheme"),
    ("-u./payload", "option_like_url"),
    ("--upload-pack=touch /tmp/pwned", "option_like_url"),
    ("ssh://-oProxyCommand=touch/a/b", "option_like_url"),
    ("https://[::1]/octo/engine.git", "forbidden_host"),
    ("git@[::1]:octo/engine.git", "forbidden_host"),
    ("https://[fd00::1]/octo/engine.git", "forbidden_host"),
    ("https://[::ffff:127.0.0.1]/octo/engine.git", "forbidden_host"),
    ("https://127.0.0.1/octo/engine.git", "forbidden_host"),
    ("https://10.0.0.8/octo/engine.git", "forbidden_host"),
    ("https://169.254.169.254/latest/meta-data", "forbidden_host"),
    ("https://127.1/octo/engine.git", "invalid_clone_url"),
    ("https://internal.example.org/octo/engine.git", "forbidden_host"),
    ("https://nowhere.invalid/octo/engine.git", "unresolvable_host"),
]


async def test_refused_clone_urls(client: httpx.AsyncClient, owner: Account, resolver: FakeResolver) -> None:
    resolver.names["internal.example.org"] = ["140.82.121.4", "192.168.10.2"]
    for clone_url, code in REFUSED:
        response = await client.post(
            f"{API}/orgs/engines/repositories", headers=owner.headers, json={"clone_url": clone_url}
        )
        assert response.status_code == 422, (clone_url, response.text)
        body = response.json()
        assert [(e["field"], e["code"]) for e in body["errors"]] == [("body.clone_url", code)], clone_url
        assert body["detail"] == body["errors"][0]["message"]
        if code == "credentials_in_url":
            assert "link your GitHub account" in body["detail"]
            assert "secret" not in response.text
            assert "ghp_0123" not in response.text
    listed = await client.get(f"{API}/orgs/engines/repositories", headers=owner.headers)
    assert listed.json()["items"] == []

    # Updates are checked the same way.
    repo = await create_repository(client, owner, "https://github.com/octo/engine")
    refused = await client.patch(
        f"{API}/repositories/{repo['id']}", headers=owner.headers, json={"clone_url": "https://[::1]/octo/engine"}
    )
    assert (refused.status_code, refused.json()["errors"][0]["code"]) == (422, "forbidden_host")
    unchanged = await client.get(f"{API}/repositories/{repo['id']}", headers=owner.headers)
    assert unchanged.json()["clone_url"] == "https://github.com/octo/engine"


async def test_real_dns_and_local_hosts(make_client: MakeClient, resolver: FakeResolver, owner: Account) -> None:
    # The production resolver (getaddrinfo): localhost is 127.0.0.1.
    strict = await make_client(real_dns=True)
    for clone_url in ("https://localhost/octo/engine.git", "git@localhost:octo/engine.git"):
        response = await strict.post(
            f"{API}/orgs/engines/repositories", headers=owner.headers, json={"clone_url": clone_url}
        )
        assert (response.status_code, response.json()["errors"][0]["code"]) == (422, "forbidden_host"), clone_url

    resolver.names["git.corp.example"] = ["10.0.0.12"]
    resolver.names["other.corp.example"] = ["10.0.0.13"]
    trusting = await make_client(ALLOWED_GIT_HOSTS="git.corp.example")
    await create_repository(trusting, owner, "https://git.corp.example/a/b")
    for clone_url in ("https://other.corp.example/a/b", "https://127.0.0.1/a/b"):
        response = await trusting.post(
            f"{API}/orgs/engines/repositories", headers=owner.headers, json={"clone_url": clone_url}
        )
        assert response.status_code == 422, clone_url

    development = await make_client(real_dns=True, ALLOW_LOCAL_REPOSITORIES=True)
    local = await create_repository(development, owner, "https://localhost/a/b.git")
    assert local["canonical_url"] == "https://localhost/a/b"
    metadata = await development.post(
        f"{API}/orgs/engines/repositories", headers=owner.headers, json={"clone_url": "https://169.254.169.254/a/b"}
    )
    assert metadata.status_code == 422
    # Local repositories by file:// URL, for development and tests only.
    on_disk = await create_repository(development, owner, "file:///srv/git/app.git")
    assert (on_disk["canonical_url"], on_disk["provider"]) == ("file:///srv/git/app.git", "git")
    for bad in ("file://host/srv/app", "file:///srv/app?x=1", "file:///"):
        refused = await development.post(
            f"{API}/orgs/engines/repositories", headers=owner.headers, json={"clone_url": bad}
        )
        assert (refused.status_code, refused.json()["errors"][0]["code"]) == (422, "invalid_clone_url"), bad


async def test_repository_quota(make_client: MakeClient, owner: Account) -> None:
    client = await make_client(PLAN_LIMITS={"free": {"repositories": 2}})
    first = await create_repository(client, owner, "https://github.com/octo/one")
    await create_repository(client, owner, "https://github.com/octo/two")
    refused = await client.post(
        f"{API}/orgs/engines/repositories", headers=owner.headers, json={"clone_url": "https://github.com/octo/three"}
    )
    assert refused.status_code == 402
    body = refused.json()
    assert (body["code"], body["resource"], body["limit"], body["used"]) == ("quota_exceeded", "repositories", 2, 2)
    assert (body["plan"], body["upgrade_to"]) == ("free", "pro")
    # Archived repositories do not count; bringing one back needs room again.
    archived = await client.patch(f"{API}/repositories/{first['id']}", headers=owner.headers, json={"archived": True})
    assert archived.json()["archived"] is True
    third = await create_repository(client, owner, "https://github.com/octo/three")
    back = await client.patch(f"{API}/repositories/{first['id']}", headers=owner.headers, json={"archived": False})
    assert (back.status_code, back.json()["code"]) == (402, "quota_exceeded")
    await client.delete(f"{API}/repositories/{third['id']}", headers=owner.headers)
    back = await client.patch(f"{API}/repositories/{first['id']}", headers=owner.headers, json={"archived": False})
    assert back.status_code == 200


async def _names(client: httpx.AsyncClient, user: SignedIn, **params: str | int) -> list[str]:
    response = await client.get(f"{API}/orgs/engines/repositories", headers=user.headers, params=params)
    assert response.status_code == 200, response.text
    return [item["name"] for item in response.json()["items"]]


async def test_filters(client: httpx.AsyncClient, owner: Account) -> None:
    await create_repository(client, owner, "https://github.com/octo/engine", name="Engine")
    await create_repository(client, owner, "https://gitlab.com/octo/loom", name="Loom")
    old = await create_repository(client, owner, "https://git.example.org/octo/difference_engine", name="Difference")
    await client.patch(f"{API}/repositories/{old['id']}", headers=owner.headers, json={"archived": True})
    assert await _names(client, owner) == ["Difference", "Engine", "Loom"]
    assert await _names(client, owner, archived="false") == ["Engine", "Loom"]
    assert await _names(client, owner, archived="true") == ["Difference"]
    assert await _names(client, owner, provider="gitlab") == ["Loom"]
    assert await _names(client, owner, q="ENGINE") == ["Difference", "Engine"]  # name or URL
    assert await _names(client, owner, q="100%") == []
    bad = await client.get(f"{API}/orgs/engines/repositories", headers=owner.headers, params={"provider": "svn"})
    assert bad.status_code == 422


async def test_sorting_and_pagination(
    client: httpx.AsyncClient, owner: Account, engines: Organization, session: AsyncSession
) -> None:
    ids = {}
    for name in ("delta", "Alpha", "charlie", "Bravo", "echo"):
        ids[name] = str(RepositoryFactory.create(org=engines, name=name).id)
    await session.flush()
    assert await _names(client, owner) == ["Alpha", "Bravo", "charlie", "delta", "echo"]

    seen: list[str] = []
    params: dict[str, str | int] = {"limit": 2}
    while True:
        page = (await client.get(f"{API}/orgs/engines/repositories", headers=owner.headers, params=params)).json()
        seen += [item["name"] for item in page["items"]]
        if page["next_cursor"] is None:
            break
        params = {"limit": 2, "cursor": page["next_cursor"]}
    assert seen == ["Alpha", "Bravo", "charlie", "delta", "echo"]

    now = datetime.now(UTC).replace(microsecond=0)
    summaries = {
        "delta": (now - timedelta(days=2), {"critical": 0, "high": 5}),
        "Alpha": (now - timedelta(hours=1), {"critical": 1, "low": 9}),
        "echo": (now - timedelta(days=9), {"critical": 1, "high": 2}),
    }
    for name, (finished, findings) in summaries.items():
        assert await update_scan_summary(
            session, uuid.UUID(ids[name]), scan_id=uuid.uuid4(), status="succeeded",
            finished_at=finished, open_findings=findings,
        )  # fmt: skip
    await session.flush()
    by_scan = ["Alpha", "delta", "echo", "Bravo", "charlie"]  # most recent first, never scanned last
    assert await _names(client, owner, sort="last_scan") == by_scan
    assert await _names(client, owner, sort="open_findings") == ["echo", "Alpha", "delta", "Bravo", "charlie"]
    for sort, expected in (("last_scan", by_scan), ("open_findings", ["echo", "Alpha", "delta", "Bravo", "charlie"])):
        seen, params = [], {"limit": 2, "sort": sort}
        while True:
            page = (await client.get(f"{API}/orgs/engines/repositories", headers=owner.headers, params=params)).json()
            seen += [item["name"] for item in page["items"]]
            if page["next_cursor"] is None:
                break
            params = {"limit": 2, "sort": sort, "cursor": page["next_cursor"]}
        assert seen == expected, sort

    cursor = (await client.get(f"{API}/orgs/engines/repositories", headers=owner.headers, params={"limit": 1})).json()
    mixed = await client.get(
        f"{API}/orgs/engines/repositories",
        headers=owner.headers,
        params={"sort": "open_findings", "cursor": cursor["next_cursor"]},
    )
    assert (mixed.status_code, mixed.json()["code"]) == (422, "invalid_cursor")

    alpha = (await client.get(f"{API}/repositories/{ids['Alpha']}", headers=owner.headers)).json()
    assert alpha["last_scan"]["status"] == "succeeded"
    assert alpha["last_scan"]["open_findings"] == {"critical": 1, "high": 0, "medium": 0, "low": 9}


async def test_scan_summary_keeps_the_latest_scan(session: AsyncSession, engines: Organization) -> None:
    repository = RepositoryFactory.create(org=engines)
    await session.flush()
    now = datetime.now(UTC)
    newer, older = uuid.uuid4(), uuid.uuid4()
    assert await update_scan_summary(session, repository.id, scan_id=newer, status="succeeded", finished_at=now,
                                     open_findings={"high": 1, "critical": 0})  # fmt: skip
    # A scan that finished earlier reports late: the summary stays.
    assert not await update_scan_summary(
        session, repository.id, scan_id=older, status="failed", finished_at=now - timedelta(minutes=5), open_findings={}
    )
    assert not await update_scan_summary(session, uuid.uuid4(), scan_id=older, status="failed", finished_at=now)
    with pytest.raises(ValueError, match="info"):
        await update_scan_summary(
            session, repository.id, scan_id=older, status="x", finished_at=now, open_findings={"info": 1}
        )
    # A failed scan without counts keeps them.
    failed = uuid.uuid4()
    assert await update_scan_summary(
        session, repository.id, scan_id=failed, status="failed", finished_at=now + timedelta(minutes=1)
    )
    loaded = await get_repository(session, repository.id)
    assert loaded is not None
    await session.refresh(loaded)
    assert (loaded.last_scan_id, loaded.last_scan_status, loaded.open_high) == (failed, "failed", 1)
    summary = RepositoryOut.of(loaded).last_scan
    assert summary is not None
    assert summary.open_findings.model_dump() == {"critical": 0, "high": 1, "medium": 0, "low": 0}


async def test_roles_and_outsiders(
    client: httpx.AsyncClient,
    owner: Account,
    engines: Organization,
    session: AsyncSession,
    make_user: MakeUser,
    make_member: MakeMember,
) -> None:
    repo = RepositoryFactory.create(org=engines)
    await session.flush()
    url = f"{API}/repositories/{repo.id}"
    viewer = await make_member(engines, "viewer", "vic")
    member = await make_member(engines, "member", "mel")
    admin = await make_member(engines, "admin", "adam")
    outsider = await make_user("eve")

    assert (await client.get(url, headers=viewer.headers)).status_code == 200
    assert len((await client.get(f"{API}/orgs/engines/repositories", headers=viewer.headers)).json()["items"]) == 1
    for user in (viewer, member):
        patch = await client.patch(url, headers=user.headers, json={"name": "mine"})
        assert (patch.status_code, patch.json()["code"]) == (403, "insufficient_role")
        assert (await client.delete(url, headers=user.headers)).status_code == 403
        create = await client.post(
            f"{API}/orgs/engines/repositories", headers=user.headers, json={"clone_url": "https://github.com/o/p"}
        )
        assert create.status_code == 403
    assert (await client.patch(url, headers=admin.headers, json={"scan_schedule": "weekly"})).status_code == 200

    # Outsiders cannot tell an existing repository from a missing one.
    for target in (url, f"{API}/repositories/{uuid.uuid4()}"):
        for method in ("GET", "PATCH", "DELETE"):
            response = await client.request(method, target, headers=outsider.headers, json={})
            assert (response.status_code, response.json()["code"]) == (404, "repository_not_found"), method
    listed = await client.get(f"{API}/orgs/engines/repositories", headers=outsider.headers)
    assert listed.status_code == 404
    assert (await client.get(url)).status_code == 401

    outsider.model.is_superuser = True
    await session.flush()
    assert (await client.get(url, headers=outsider.headers)).status_code == 200

    # The repositories of a deleted organization are gone with it.
    deleted = await client.request(
        "DELETE", f"{API}/orgs/engines", headers=owner.headers, json={"confirm_slug": "engines"}
    )
    assert deleted.status_code == 204
    gone = await client.get(url, headers=owner.headers)
    assert (gone.status_code, gone.json()["code"]) == (404, "repository_not_found")
