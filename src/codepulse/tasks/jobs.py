"""The queue's periodic jobs: the reaper (leases whose worker died) and retention.

`register(scheduler)` is found by `scheduler.discover_jobs` like every `codepulse.<package>.jobs`.
"""

from __future__ import annotations

from datetime import timedelta

import structlog

from codepulse.scheduler import JobContext, Scheduler
from codepulse.tasks.queue import prune_finished, reap_expired

log = structlog.get_logger("codepulse.tasks")

# The reaper looks for expired leases every third of a lease (the heartbeat's rhythm), so a task
# whose worker died runs again about one lease after its last heartbeat; within these bounds.
REAP_MIN_INTERVAL = timedelta(seconds=1)
REAP_MAX_INTERVAL = timedelta(seconds=30)


def reap_interval(lease_seconds: float) -> timedelta:
    """How often the reaper runs for a lease of `lease_seconds`."""
    return min(max(timedelta(seconds=lease_seconds / 3), REAP_MIN_INTERVAL), REAP_MAX_INTERVAL)


def register(scheduler: Scheduler) -> None:
    scheduler.add("tasks.reap_expired", reap_expired_job, every=reap_interval(scheduler.settings.TASK_LEASE_SECONDS))
    scheduler.add("tasks.prune", prune_tasks_job, cron="29 3 * * *")


async def reap_expired_job(context: JobContext) -> None:
    # The tick's time, not the wall clock: replicas agree on it and tests control it. A lease is
    # reaped within one reap interval of expiring.
    async with context.database.transaction() as session:
        reaped = await reap_expired(
            session, now=context.scheduled_for, default_max_attempts=context.settings.TASK_MAX_ATTEMPTS
        )
    if reaped:
        log.info("tasks.reaped", count=reaped)


async def prune_tasks_job(context: JobContext) -> None:
    cutoff = context.scheduled_for - timedelta(days=context.settings.TASKS_RETENTION_DAYS)
    async with context.database.transaction() as session:
        deleted = await prune_finished(session, before=cutoff)
    log.info("tasks.pruned", deleted=deleted)
