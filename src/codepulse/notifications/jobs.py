"""Notifications' scheduled work (pruning read notifications past their retention, the hourly
nudges) and their task (`notifications.mail`).

`register(scheduler)` and `register_tasks(registry)` are found by `scheduler.discover_jobs` and
`discover_task_handlers`.
"""

from __future__ import annotations

from datetime import timedelta

import structlog

from codepulse.notifications.mail import send_notification_mail
from codepulse.notifications.nudges import notify_streaks_at_risk, notify_weekly_summaries
from codepulse.notifications.service import MAIL_TASK, prune_read
from codepulse.scheduler import JobContext, Scheduler
from codepulse.tasks import TaskRegistry

log = structlog.get_logger("codepulse.notifications")

PRUNE_EVERY = timedelta(hours=6)


def register_tasks(registry: TaskRegistry) -> None:
    registry.register(MAIL_TASK, send_notification_mail)


def register(scheduler: Scheduler) -> None:
    scheduler.add("notifications.prune", prune, every=PRUNE_EVERY)
    scheduler.add("notifications.streak_at_risk", streak_at_risk, every=timedelta(hours=1))
    scheduler.add("notifications.weekly_summary", weekly_summary, every=timedelta(hours=1))


async def prune(context: JobContext) -> None:
    """Delete notifications read more than NOTIFICATIONS_RETENTION_DAYS ago."""
    retention = timedelta(days=context.settings.NOTIFICATIONS_RETENTION_DAYS)
    async with context.database.transaction() as session:
        pruned = await prune_read(session, context.scheduled_for, retention)
    log.info("notifications.pruned", count=pruned)


async def streak_at_risk(context: JobContext) -> None:
    """Nudge the users whose usage streak ends with their local day (notifications.nudges)."""
    async with context.database.transaction() as session:
        told = await notify_streaks_at_risk(session, context.scheduled_for)
    log.info("notifications.streaks_at_risk", count=told)


async def weekly_summary(context: JobContext) -> None:
    """Monday 09:00 in each user's time zone: last week's usage (notifications.nudges)."""
    async with context.database.transaction() as session:
        told = await notify_weekly_summaries(session, context.scheduled_for)
    log.info("notifications.weekly_summaries", count=told)
