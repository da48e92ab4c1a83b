"""The demo repository connected to an organization and scanned by the real scan worker.

Connected through the repositories service (so the clone URL passes the same checks as an API
request), scanned by queueing scans with the scans service and running the queue's worker in this
process until it is idle, as `codepulse worker` would. A run that finds a successful scan of a
mode does not scan in that mode again.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field

from codepulse.auth.service import User
from codepulse.clock import ClockFunc
from codepulse.config import Settings
from codepulse.db import Database
from codepulse.orgs.service import OrgAccess, OrgService, Role
from codepulse.pagination import MAX_LIMIT, PageRequest
from codepulse.repositories.schemas import RepositoryCreate, RepositorySort
from codepulse.repositories.service import (
    Repository,
    RepositoryAccess,
    RepositoryService,
    validate_clone_url,
)
from codepulse.scans import jobs as scans_jobs
from codepulse.scans.schemas import ScanCreate
from codepulse.scans.service import ScanService
from codepulse.seed.gitrepo import BRANCH, DIRECTORY, ensure_demo_repository
from codepulse.seed.people import SeedError
from codepulse.tasks import TaskRegistry, Worker

NAME = "demo-service"
MODES = ("head", "history")  # history: the secret deleted in the last commit is still leaked


@dataclass
class SeededRepository:
    org: str
    id: uuid.UUID
    name: str
    clone_url: str
    scans: dict[str, str] = field(default_factory=dict)  # mode -> status of its latest scan
    open_findings: dict[str, int] = field(default_factory=dict)  # severity -> count

    def describe(self) -> list[str]:
        findings = ", ".join(f"{count} {severity}" for severity, count in self.open_findings.items() if count)
        scans = ", ".join(f"{mode} scan {status}" for mode, status in self.scans.items())
        return [
            f"  {self.name} in {self.org}: {self.clone_url}",
            f"  id {self.id}; {scans}; open findings: {findings or 'none'}",
            "  (rescanning it through the API needs the server started with ALLOW_LOCAL_REPOSITORIES=true)",
        ]


async def _find(service: RepositoryService, access: OrgAccess, canonical_url: str) -> Repository | None:
    # `q` matches names and URLs: the directory's name is in the URL whatever the repository is called.
    listed, _cursor = await service.list_repositories(
        access, q=DIRECTORY, provider=None, archived=None, sort=RepositorySort.NAME, page=PageRequest(limit=MAX_LIMIT)
    )
    return next((repository for repository in listed if repository.canonical_url == canonical_url), None)


async def _connect(service: RepositoryService, access: OrgAccess, clone_url: str, canonical_url: str) -> Repository:
    """The organization's repository with this URL, connected now when it is not yet."""
    found = await _find(service, access, canonical_url)
    if found is not None:
        return found
    return await service.create(access, RepositoryCreate(clone_url=clone_url, name=NAME, default_branch=BRANCH), None)


async def _latest_scans(service: ScanService, access: OrgAccess, repository_id: uuid.UUID) -> dict[str, str]:
    """mode -> status of the repository's latest scan in that mode (newest first in the list)."""
    scans, _cursor = await service.list_scans(
        org=access, repository_id=repository_id, statuses=(), page=PageRequest(limit=MAX_LIMIT)
    )
    latest: dict[str, str] = {}
    for scan in scans:
        latest.setdefault(scan.mode, scan.status)
    return {mode: latest[mode] for mode in MODES if mode in latest}


async def ensure_scanned_repository(
    database: Database, settings: Settings, clock: ClockFunc, owner: User, org_slug: str
) -> SeededRepository:
    """Make the demo repository (once), connect it to the organization (once) and scan it in
    every mode that has no successful scan yet. `settings` must allow local repositories."""
    path, _made = await asyncio.to_thread(ensure_demo_repository, settings.VAR_DIR)
    clone_url = path.as_uri()
    canonical_url = (await validate_clone_url(clone_url, settings)).url.canonical
    registry = TaskRegistry()
    scans_jobs.register_tasks(registry)
    worker = Worker(database, settings, registry, clock=clock, concurrency=1)
    for mode in MODES:
        async with database.transaction() as session:
            access = await OrgService(session, settings, clock).access(owner, org_slug, Role.ADMIN)
            repository = await _connect(RepositoryService(session, settings, clock), access, clone_url, canonical_url)
            scans = ScanService(session, settings, clock)
            if (await _latest_scans(scans, access, repository.id)).get(mode) == "succeeded":
                continue
            await scans.request_scan(RepositoryAccess(repository, access), ScanCreate.model_validate({"mode": mode}))
        # Runs queued scans only (the registry knows no other task), including ours.
        await worker.run_until_idle()
    async with database.transaction(write=False) as session:
        access = await OrgService(session, settings, clock).access(owner, org_slug, Role.VIEWER)
        current = await _find(RepositoryService(session, settings, clock), access, canonical_url)
        if current is None:  # pragma: no cover - connected above, in this run
            raise SeedError("the demo repository disappeared while seeding")
        latest = await _latest_scans(ScanService(session, settings, clock), access, current.id)
    return SeededRepository(
        org=org_slug,
        id=current.id,
        name=current.name,
        clone_url=clone_url,
        scans=latest,
        open_findings={
            "critical": current.open_critical,
            "high": current.open_high,
            "medium": current.open_medium,
            "low": current.open_low,
        },
    )
