"""Periodic jobs of the leaderboard: every board every LEADERBOARD_RECOMPUTE_MINUTES, and the
community benchmarks hourly."""

from __future__ import annotations

from datetime import timedelta

from codepulse.leaderboard.benchmarks import compute_benchmarks
from codepulse.leaderboard.ranking import recompute_rankings
from codepulse.scheduler import JobContext, Scheduler


async def recompute(context: JobContext) -> None:
    await recompute_rankings(context.database, context.settings, context.scheduled_for)


async def benchmarks(context: JobContext) -> None:
    await compute_benchmarks(context.database, context.settings, context.scheduled_for)


def register(scheduler: Scheduler) -> None:
    scheduler.add(
        "leaderboard.recompute",
        recompute,
        every=timedelta(minutes=scheduler.settings.LEADERBOARD_RECOMPUTE_MINUTES),
    )
    scheduler.add("leaderboard.benchmarks", benchmarks, every=timedelta(hours=1))
