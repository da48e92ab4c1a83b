"""Deleting an organization through the hooks upper slices register (codepulse.hooks): its
repositories, scans, findings and cached scan results go with it, in the same transaction."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import httpx
from fastapi import FastAPI
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from codepulse.auth.accounts import user_delete_hooks
from codepulse.config import Settings
from codepulse.orgs.service import org_delete_hooks, refuse_last_owner
from codepulse.repositories.hooks import delete_org_repositories
from codepulse.repositories.models import Repository
from codepulse.scans.hooks import forget_cached_results
from codepulse.scans.models import Finding, Scan, ScanResultCache
from tests.auth.helpers import SignedIn, register
from tests.factories import FindingFactory
from tests.helpers import FakeClock
from tests.orgs.helpers import create_org


async def _org_with_scan_data(
    client: httpx.AsyncClient, session: AsyncSession, clock: FakeClock, owner: SignedIn, slug: str
) -> uuid.UUID:
    """An organization with a repository, a scan, a finding and a cached engine result."""
    org_id = uuid.UUID((await create_org(client, owner, slug))["id"])
    created = await client.post(
        f"/api/v1/orgs/{slug}/repositories",
        headers=owner.headers,
        json={"clone_url": f"https://140.82.112.3/octo/{slug}.git"},
    )
    assert created.status_code == 201, created.text
    repository_id = uuid.UUID(created.json()["id"])
    session.add(Scan(org_id=org_id, repository_id=repository_id, trigger="manual", queued_at=clock()))
    FindingFactory.create(org_id=org_id, repository_id=repository_id)
    session.add(
        ScanResultCache(
            org_id=org_id, blob_sha="a" * 40, engine="secrets", engine_version="1", findings=[], created_at=clock()
        )
    )
    await session.flush()
    return org_id


async def _count(session: AsyncSession, model: type[Repository | Scan | Finding | ScanResultCache]) -> dict[str, int]:
    rows = await session.execute(select(model.org_id, func.count()).group_by(model.org_id))
    return {str(org_id): count for org_id, count in rows}


async def test_a_deleted_organization_leaves_no_repositories_scans_or_cached_results(
    client: httpx.AsyncClient, session: AsyncSession, clock: FakeClock
) -> None:
    ada = await register(client, "ada")
    doomed = await _org_with_scan_data(client, session, clock, ada, "engines")
    kept = await _org_with_scan_data(client, session, clock, ada, "turbines")

    deleted = await client.request(
        "DELETE", "/api/v1/orgs/engines", headers=ada.headers, json={"confirm_slug": "engines"}
    )
    assert deleted.status_code == 204
    session.expire_all()
    for model in (Repository, Scan, Finding, ScanResultCache):
        counts = await _count(session, model)
        assert str(doomed) not in counts, model.__name__
        assert counts[str(kept)] == 1, model.__name__


def test_building_many_apps_registers_each_hook_once(
    app_factory: Callable[[Settings], FastAPI], settings: Settings
) -> None:
    for _ in range(3):
        app_factory(settings)
    assert org_delete_hooks.hooks.count(delete_org_repositories) == 1
    assert org_delete_hooks.hooks.count(forget_cached_results) == 1
    assert user_delete_hooks.hooks.count(refuse_last_owner) == 1
