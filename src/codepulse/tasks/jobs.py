"""The queue's periodic jobs: the reaper (leases whose worker died) and retention.

`register(scheduler)` is found by `scheduler.discover_jobs` like every `codepulse.<package>.jobs`.
"""

from __future__ import annotations

from datetime import timedelta

import structlog

from codepulse.scheduler import JobContext, Scheduler
from codepulse.tasks.queue import prune_finished, reap_expired

log = structlog.get_logger("codepulse.tasks")

# How often the reaper looks for expired leases (it also bounds how late after expiry it acts).
REAP_EVERY = timedelta(seconds=30)


def register(scheduler: Scheduler) -> None:
    scheduler.add("tasks.reap_expired", reap_expired_job, every=REAP_EVERY)
    scheduler.add("tasks.prune", prune_tasks_job, cron="29 3 * * *")


async def reap_expired_job(context: JobContext) -> None:
    # The tick's time, not the wall clock: replicas agree on it and tests control it. A lease is
    # reaped within REAP_EVERY of expiring.
    settings = context.settings
    async with context.database.transaction() as session:
        reaped = await reap_expired(
            session,
            now=context.scheduled_for,
            backoff_seconds=settings.TASK_RETRY_BACKOFF_SECONDS,
            default_max_attempts=settings.TASK_MAX_ATTEMPTS,
        )
    if reaped:
        log.info("tasks.reaped", count=reaped)


async def prune_tasks_job(context: JobContext) -> None:
    cutoff = context.scheduled_for - timedelta(days=context.settings.TASKS_RETENTION_DAYS)
    async with context.database.transaction() as session:
        deleted = await prune_finished(session, before=cutoff)
    log.info("tasks.pruned", deleted=deleted)
