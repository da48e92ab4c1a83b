"""The scans domain's background work: the `scans.run` task handler, and scheduled scans.

`register_tasks(registry)` (found by `tasks.discover_task_handlers`) and `register(scheduler)`
(found by `scheduler.discover_jobs`).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import structlog

from codepulse.errors import QuotaExceeded
from codepulse.repositories import service as repositories_service
from codepulse.repositories.service import ScanSchedule
from codepulse.scans import service
from codepulse.scans.models import ScanTrigger
from codepulse.scans.repository import ScanRepository
from codepulse.scans.runner import run_scan_task
from codepulse.scheduler import JobContext, Scheduler

if TYPE_CHECKING:
    from codepulse.tasks import TaskRegistry

log = structlog.get_logger("codepulse.scans")

SCHEDULE_EVERY = timedelta(hours=1)
PERIODS = {ScanSchedule.DAILY: timedelta(days=1), ScanSchedule.WEEKLY: timedelta(weeks=1)}
# A scheduled scan is due a little before its period is over, so hourly ticks do not drift it.
SLACK = timedelta(minutes=10)


def register_tasks(registry: TaskRegistry) -> None:
    registry.register(service.TASK_KIND, run_scan_task)


def register(scheduler: Scheduler) -> None:
    scheduler.add("scans.schedule", enqueue_scheduled_scans, every=SCHEDULE_EVERY)


def is_due(schedule: ScanSchedule, last: datetime | None, now: datetime) -> bool:
    return last is None or last <= now - PERIODS[schedule] + SLACK


async def enqueue_scheduled_scans(context: JobContext) -> None:
    """Queue a scan of the default branch of every repository whose schedule (daily, weekly) is
    due: no scheduled scan queued within its period. One transaction per repository, so one
    organization over its quota does not hold up the others."""
    now = context.scheduled_for
    async with context.database.transaction(write=False) as session:
        repositories = await repositories_service.scheduled_repositories(session, list(PERIODS))
        last = await ScanRepository(session).last_scheduled([repository.id for repository in repositories])
    queued = skipped = 0
    for repository in repositories:
        if not is_due(ScanSchedule(repository.scan_schedule), last.get(repository.id), now):
            continue
        try:
            async with context.database.transaction() as session:
                started = await service.start_scan(
                    session,
                    context.settings,
                    lambda: now,
                    repository,
                    ref=None,
                    trigger=ScanTrigger.SCHEDULE,
                    requested_by=None,
                )
        except QuotaExceeded:
            log.info("scan.schedule_over_quota", repository_id=str(repository.id), org_id=str(repository.org_id))
            skipped += 1
            continue
        queued += int(started.created)
    log.info("scans.scheduled", queued=queued, over_quota=skipped)
