"""The scans slice's reactions to events of the slices below it (see `codepulse.hooks`).

Deleting an organization (a soft delete: its row stays for the audit trail, so no foreign key
cascades) removes its repositories through the repositories slice's hook, and with them their
scans and findings; the cached engine results are keyed by organization, not repository, so
scans removes them here. Before repositories are deleted (one, or an organization's), their scans
leave the per-day counts (`ScanDayCount`).

A `scans.run` task that ends without settling its scan (its worker died on every attempt, or
could not record the outcome), or that a superuser canceled while queued, fails the scan in the
same transaction: `worker_lost`, `internal_error`, or `task_canceled`. Otherwise the scan would
stay active, and new scans of its repository and ref would keep answering it.
"""

from __future__ import annotations

import uuid

import structlog
from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession

from codepulse import tasks
from codepulse.errors import FieldError, ValidationFailed
from codepulse.orgs import service as orgs_service
from codepulse.orgs.service import Organization
from codepulse.repositories import service as repositories_service
from codepulse.scans import lifecycle
from codepulse.scans.clone import remote_head
from codepulse.scans.models import ScanResultCache
from codepulse.scans.repository import ScanRepository
from codepulse.scans.service import TASK_KIND, WORKER_LOST_MESSAGE

log = structlog.get_logger("codepulse.scans")


async def uncount_deleted_scans(session: AsyncSession, deleting: repositories_service.DeletingRepositories) -> None:
    """Repositories are being deleted (their scans cascade with them): their scans leave the
    per-day counts, in the same transaction."""
    await ScanRepository(session).uncount_scans(deleting.org_id, deleting.repository_id)


async def forget_cached_results(session: AsyncSession, org: Organization) -> None:
    """An organization is being deleted: its cached scan results go."""
    await session.execute(delete(ScanResultCache).where(ScanResultCache.org_id == org.id))


async def fail_abandoned_scan(session: AsyncSession, ended: tasks.EndedTask) -> None:
    """A `scans.run` task ended `dead`, `failed` or `canceled` (by a superuser, while queued): its
    scan, if still active, fails (`task_canceled` for the last)."""
    if ended.kind != TASK_KIND:
        return
    try:
        scan_id = uuid.UUID(str(ended.payload.get("scan_id")))
    except ValueError:
        return
    if ended.status is tasks.TaskStatus.CANCELED:
        code, message = "task_canceled", "An administrator canceled the scan's task before it ran."
    elif ended.lease_expired:
        code, message = "worker_lost", WORKER_LOST_MESSAGE
    else:
        code, message = "internal_error", "The scan failed unexpectedly."
    if await lifecycle.abandon_scan(session, scan_id, code, message, ended.finished_at):
        log.warning("scan.abandoned", scan_id=str(scan_id), task_id=str(ended.id), code=code)


async def probe_remote(session: AsyncSession, connecting: repositories_service.Connecting) -> None:
    """A repository is being connected by URL: refuse one that is surely not a Git repository
    (`not_a_git_repository`), and learn the default branch when none was given. One `git
    ls-remote` with the clone's safety settings within REPOSITORY_PROBE_SECONDS (0: no probe)."""
    seconds = connecting.settings.REPOSITORY_PROBE_SECONDS
    if seconds <= 0:
        return
    checked = connecting.checked
    head = await remote_head(checked.url.url, settings=connecting.settings, resolve=checked.addresses, seconds=seconds)
    if head.is_repository is False:
        message = "No Git repository answers at this URL: check it (a local one is file:///absolute/path)."
        raise ValidationFailed(
            [FieldError(field="body.clone_url", message=message, code="not_a_git_repository")], detail=message
        )
    if connecting.repository.default_branch is None and head.default_branch is not None:
        connecting.repository.default_branch = head.default_branch


def register_hooks() -> None:
    """Called at start-up (`create_app`, `codepulse worker`); registering again is a no-op."""
    orgs_service.on_org_delete(forget_cached_results)
    tasks.on_task_ended(fail_abandoned_scan)
    repositories_service.on_repository_connect(probe_remote)
    repositories_service.on_repositories_delete(uncount_deleted_scans)
