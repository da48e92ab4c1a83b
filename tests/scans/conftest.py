"""Scans fixtures.

- `settings`: the run's settings with ALLOW_LOCAL_REPOSITORIES=true, so repositories made by the
  tests on disk (file:// URLs, `tests.scans.helpers.GitRepo`) can be connected and cloned.
- `flow`: a fresh database with real commits, an app and client over it, a signed-in owner of
  organization `engines`, and `flow.run_worker()` to run queued scans with the real worker.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from codepulse.app import create_app
from codepulse.config import Settings
from codepulse.db import Database
from codepulse.scans import jobs
from codepulse.scans.runner import close_shared_pool
from codepulse.tasks import TaskRegistry, Worker
from tests.auth.helpers import SignedIn, register
from tests.databases import DatabaseServer, build_settings
from tests.helpers import FakeClock
from tests.orgs.helpers import create_org
from tests.scans.helpers import API, create_repository, request_scan
from tests.stubs.smtp import SmtpServer


@pytest.fixture
def settings(base_settings: Settings, smtp_server: SmtpServer) -> Settings:
    return base_settings.model_copy(update={**smtp_server.settings(), "ALLOW_LOCAL_REPOSITORIES": True})


@pytest.fixture(scope="session", autouse=True)
def _engine_pool() -> Iterator[None]:
    """The worker's engine pool lives as long as the process; stop it with the test session."""
    yield
    close_shared_pool()


@dataclass
class Flow:
    client: httpx.AsyncClient
    database: Database
    settings: Settings
    clock: FakeClock
    owner: SignedIn
    registry: TaskRegistry = field(default_factory=TaskRegistry)

    def __post_init__(self) -> None:
        jobs.register_tasks(self.registry)

    async def repository(self, clone_url: str, **fields: Any) -> dict[str, Any]:
        return await create_repository(self.client, self.owner, clone_url, **fields)

    async def run_worker(self) -> int:
        worker = Worker(self.database, self.settings, self.registry, clock=self.clock, concurrency=1)
        return await worker.run_until_idle()

    async def get(self, url: str, /, **params: Any) -> Any:
        response = await self.client.get(f"{API}{url}", headers=self.owner.headers, params=params)
        assert response.status_code == 200, response.text
        return response.json()

    async def scan(self, repository_id: str, ref: str | None = None, *, mode: str | None = None) -> dict[str, Any]:
        """Request a scan, run the worker, and answer the finished scan."""
        scan = await request_scan(self.client, self.owner, repository_id, ref, mode=mode)
        assert await self.run_worker() == 1
        finished: dict[str, Any] = await self.get(f"/scans/{scan['id']}")
        return finished

    async def findings(self, repository_id: str, **params: Any) -> list[dict[str, Any]]:
        body = await self.get(f"/repositories/{repository_id}/findings", **params)
        items: list[dict[str, Any]] = body["items"]
        return items


@pytest.fixture
async def flow(database_server: DatabaseServer, smtp_server: SmtpServer, clock: FakeClock) -> AsyncIterator[Flow]:
    url = await database_server.clone("scans")
    # The team plan: flows connect more repositories than the free plan allows (quotas: tests/billing).
    settings = build_settings(
        url, ALLOW_LOCAL_REPOSITORIES=True, SCAN_PROCESSES=2, DEFAULT_PLAN="team", **smtp_server.settings()
    )
    database = Database.from_settings(settings)
    app = create_app(settings, database=database, clock=clock)
    try:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as client,
        ):
            owner = await register(client, "ada")
            await create_org(client, owner, "engines")
            yield Flow(client, database, settings, clock, owner)
    finally:
        await database.dispose()
