"""Periodic jobs of the auth domain."""

from __future__ import annotations

import structlog

from codepulse.auth.sessions import SessionService
from codepulse.scheduler import JobContext, Scheduler

log = structlog.get_logger("codepulse.auth")


async def purge_expired(context: JobContext) -> None:
    """Delete expired and long-revoked sessions, and expired or used one-time tokens."""
    async with context.database.transaction() as session:
        sessions, tokens = await SessionService(session, lambda: context.scheduled_for).purge_expired()
    log.info("auth.purged", sessions=sessions, tokens=tokens)


def register(scheduler: Scheduler) -> None:
    scheduler.add("auth.purge_expired", purge_expired, cron="23 4 * * *")
