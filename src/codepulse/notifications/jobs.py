"""Notifications' scheduled work: pruning read notifications past their retention.

`register(scheduler)` is found by `scheduler.discover_jobs`.
"""

from __future__ import annotations

from datetime import timedelta

import structlog

from codepulse.notifications.service import prune_read
from codepulse.scheduler import JobContext, Scheduler

log = structlog.get_logger("codepulse.notifications")

PRUNE_EVERY = timedelta(hours=6)


def register(scheduler: Scheduler) -> None:
    scheduler.add("notifications.prune", prune, every=PRUNE_EVERY)


async def prune(context: JobContext) -> None:
    """Delete notifications read more than NOTIFICATIONS_RETENTION_DAYS ago."""
    retention = timedelta(days=context.settings.NOTIFICATIONS_RETENTION_DAYS)
    async with context.database.transaction() as session:
        pruned = await prune_read(session, context.scheduled_for, retention)
    log.info("notifications.pruned", count=pruned)
