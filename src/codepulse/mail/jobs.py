"""Mail's task (`mail.deliver`) and its retention job. Found by `discover_task_handlers` and
`scheduler.discover_jobs` like every `codepulse.<package>.jobs`."""

from __future__ import annotations

from datetime import timedelta

import structlog

from codepulse.mail.outbox import DELIVER_TASK, deliver, prune_outbox
from codepulse.scheduler import JobContext, Scheduler
from codepulse.tasks import TaskRegistry

log = structlog.get_logger("codepulse.mail")


def register_tasks(registry: TaskRegistry) -> None:
    registry.register(DELIVER_TASK, deliver)


def register(scheduler: Scheduler) -> None:
    scheduler.add("mail.prune", prune, every=timedelta(hours=1))


async def prune(context: JobContext) -> None:
    """Bodies past MAIL_BODY_RETENTION_HOURS, rows past MAIL_OUTBOX_RETENTION_DAYS."""
    settings = context.settings
    async with context.database.transaction() as session:
        deleted = await prune_outbox(
            session,
            now=context.scheduled_for,
            body_retention=timedelta(hours=settings.MAIL_BODY_RETENTION_HOURS),
            retention=timedelta(days=settings.MAIL_OUTBOX_RETENTION_DAYS),
        )
    log.info("mail.pruned", deleted=deleted)
