"""Periodic jobs of the auth domain."""

from __future__ import annotations

import structlog

from codepulse.auth.service import AuthService
from codepulse.scheduler import JobContext, Scheduler
from codepulse.security import PasswordHasher

log = structlog.get_logger("codepulse.auth")


async def purge_expired(context: JobContext) -> None:
    """Delete expired and long-revoked sessions, and expired or used one-time tokens."""
    async with context.database.transaction() as session:
        service = AuthService(
            session, context.settings, PasswordHasher(context.settings), lambda: context.scheduled_for
        )
        sessions, tokens = await service.purge_expired()
    log.info("auth.purged", sessions=sessions, tokens=tokens)


def register(scheduler: Scheduler) -> None:
    scheduler.add("auth.purge_expired", purge_expired, cron="23 4 * * *")
