"""Periodic jobs of the leaderboard: every board every LEADERBOARD_RECOMPUTE_MINUTES."""

from __future__ import annotations

from datetime import timedelta

from codepulse.leaderboard.ranking import recompute_rankings
from codepulse.scheduler import JobContext, Scheduler


async def recompute(context: JobContext) -> None:
    await recompute_rankings(context.database, context.settings, context.scheduled_for)


def register(scheduler: Scheduler) -> None:
    scheduler.add(
        "leaderboard.recompute",
        recompute,
        every=timedelta(minutes=scheduler.settings.LEADERBOARD_RECOMPUTE_MINUTES),
    )
