"""Quotas under races: concurrent additions at `limit - 1` let exactly one through, for scans and
repositories (invitations: tests/orgs/test_concurrency.py).

On a database of their own with real commits and the app's own engine and pool, so concurrent
requests are concurrent transactions (on PostgreSQL, one connection each; on SQLite, writers
queueing on the file lock).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from codepulse.app import create_app
from codepulse.config import Settings
from tests.auth.helpers import SignedIn, register
from tests.databases import DatabaseServer
from tests.helpers import FakeClock
from tests.orgs.helpers import create_org

API = "/api/v1"
HOST = "https://140.82.112.3"  # an address literal: no DNS, and nothing is cloned (no workers)


@pytest.fixture
async def client(
    database_server: DatabaseServer, make_settings: Callable[..., Settings], clock: FakeClock
) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(
        DATABASE_URL=await database_server.clone("billing_race"),
        PLAN_LIMITS={"free": {"repositories": 2, "scans_per_month": 2}},
    )
    app: FastAPI = create_app(settings, clock=clock)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as client,
    ):
        yield client


@pytest.fixture
async def owner(client: httpx.AsyncClient) -> SignedIn:
    ada = await register(client, "ada")
    await create_org(client, ada, "engines")
    return ada


def _post(client: httpx.AsyncClient, owner: SignedIn, url: str, body: dict[str, Any]) -> asyncio.Future[httpx.Response]:
    return asyncio.ensure_future(client.post(f"{API}{url}", headers=owner.headers, json=body))


async def test_concurrent_repositories_at_the_last_slot(client: httpx.AsyncClient, owner: SignedIn) -> None:
    first = await client.post(
        f"{API}/orgs/engines/repositories", headers=owner.headers, json={"clone_url": f"{HOST}/octo/one.git"}
    )
    assert first.status_code == 201, first.text
    racing = await asyncio.gather(
        *(_post(client, owner, "/orgs/engines/repositories", {"clone_url": f"{HOST}/octo/{n}.git"}) for n in "abcde")
    )
    assert Counter(response.status_code for response in racing) == {201: 1, 402: 4}
    listed = await client.get(f"{API}/orgs/engines/repositories", headers=owner.headers)
    assert len(listed.json()["items"]) == 2


async def test_two_concurrent_scans_at_the_last_one_of_the_month(client: httpx.AsyncClient, owner: SignedIn) -> None:
    created = await client.post(
        f"{API}/orgs/engines/repositories", headers=owner.headers, json={"clone_url": f"{HOST}/octo/one.git"}
    )
    repository = created.json()["id"]
    first = await client.post(f"{API}/repositories/{repository}/scans", headers=owner.headers, json={"ref": "a"})
    assert first.status_code == 202, first.text
    racing = await asyncio.gather(
        *(_post(client, owner, f"/repositories/{repository}/scans", {"ref": ref}) for ref in ("b", "c"))
    )
    assert Counter(response.status_code for response in racing) == {202: 1, 402: 1}
    refused = next(response for response in racing if response.status_code == 402).json()
    assert (refused["resource"], refused["limit"], refused["used"]) == ("scans_per_month", 2, 2)
    scans = await client.get(f"{API}/repositories/{repository}/scans", headers=owner.headers)
    assert len(scans.json()["items"]) == 2
