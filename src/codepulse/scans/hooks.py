"""The scans slice's reactions to events of the slices below it (see `codepulse.hooks`).

Deleting an organization (a soft delete: its row stays for the audit trail, so no foreign key
cascades) removes its repositories through the repositories slice's hook, and with them their
scans and findings; the cached engine results are keyed by organization, not repository, so
scans removes them here. Before repositories are deleted (one, or an organization's), their scans
leave the per-day counts (`ScanDayCount`).

A `scans.run` task that ends without settling its scan (its worker died on every attempt, or
could not record the outcome) fails the scan in the same transaction: `worker_lost` or
`internal_error`. One a superuser cancels while queued cancels the scan, as its owner's cancel
would. Otherwise the scan would stay active, and new scans of its repository and ref would keep
answering it.

A superuser's retry of such a dead or failed task queues its scan again (`on_task_retry`, in the
retry's transaction) when the scan failed because of its task (`TASK_FAILURE_CODES`): the retried
task then runs it, and its live progress shows it queued again. A scan that failed for its own
reasons (clone failed, ...), succeeded or was canceled stays as it is (the task runs and does
nothing). While another scan of the same repository and ref is active the retry is refused, 409
`scan_already_active`, and nothing changes.
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
from codepulse.scans.days import ScanDays
from codepulse.scans.models import ScanResultCache
from codepulse.scans.service import TASK_KIND, WORKER_LOST_MESSAGE

log = structlog.get_logger("codepulse.scans")

# A scan failed with one of these failed because of its task, not for its own reasons: a retry of
# the task runs it again. (`task_canceled`: an admin's cancel of the queued task, before it
# canceled the scan instead; listed for such old scans, though a canceled task is not retryable.)
TASK_FAILURE_CODES = ("worker_lost", "internal_error", "task_canceled")


async def uncount_deleted_scans(session: AsyncSession, deleting: repositories_service.DeletingRepositories) -> None:
    """Repositories are being deleted (their scans cascade with them): their scans leave the
    per-day counts, in the same transaction."""
    await ScanDays(session).uncount_scans(deleting.org_id, deleting.repository_id)


async def forget_cached_results(session: AsyncSession, org: Organization) -> None:
    """An organization is being deleted: its cached scan results go."""
    await session.execute(delete(ScanResultCache).where(ScanResultCache.org_id == org.id))


def _scan_id(payload: dict[str, object]) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(payload.get("scan_id")))
    except ValueError:
        return None


async def fail_abandoned_scan(session: AsyncSession, ended: tasks.EndedTask) -> None:
    """A `scans.run` task ended `dead` or `failed`: its scan, if still active, fails. Canceled (by
    a superuser, while queued): its scan, if still active, is canceled."""
    if ended.kind != TASK_KIND or (scan_id := _scan_id(ended.payload)) is None:
        return
    if ended.status is tasks.TaskStatus.CANCELED:
        if await lifecycle.cancel_unrun_scan(session, scan_id, ended.finished_at):
            log.warning("scan.task_canceled", scan_id=str(scan_id), task_id=str(ended.id))
        return
    if ended.lease_expired:
        code, message = "worker_lost", WORKER_LOST_MESSAGE
    else:
        code, message = "internal_error", "The scan failed unexpectedly."
    if await lifecycle.abandon_scan(session, scan_id, code, message, ended.finished_at):
        log.warning("scan.abandoned", scan_id=str(scan_id), task_id=str(ended.id), code=code)


async def requeue_retried_scan(session: AsyncSession, retried: tasks.RetriedTask) -> None:
    """A superuser retries a dead or failed `scans.run` task: its scan, when its task's death
    failed it, is queued again for the task to run (409 `scan_already_active` while another scan
    of its repository and ref is active)."""
    if retried.kind != TASK_KIND or (scan_id := _scan_id(retried.payload)) is None:
        return
    if await lifecycle.requeue_scan(session, scan_id, TASK_FAILURE_CODES, retried.retried_at):
        log.info("scan.requeued_by_task_retry", scan_id=str(scan_id), task_id=str(retried.id))


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
    tasks.on_task_retry(requeue_retried_scan)
    repositories_service.on_repository_connect(probe_remote)
    repositories_service.on_repositories_delete(uncount_deleted_scans)
