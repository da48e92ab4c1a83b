"""The recompute on a database with real commits: readers see the old snapshot or the new one,
never a mix; a failed recompute leaves the old one; the job runs once per tick."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import date, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from codepulse.auth.models import User
from codepulse.config import Settings
from codepulse.db import Database
from codepulse.leaderboard import jobs
from codepulse.leaderboard.models import LeaderboardSnapshot, LeaderboardStanding, Metric, Period
from codepulse.leaderboard.ranking import recompute_rankings
from codepulse.leaderboard.service import LeaderboardService
from codepulse.pagination import PageRequest
from codepulse.scheduler import JobRunStatus, Scheduler
from codepulse.usage.models import UsageDaily
from tests.databases import DatabaseServer
from tests.factories import UserFactory
from tests.leaderboard.conftest import NOW

TODAY = NOW.date()


@pytest.fixture
async def fresh(
    database_server: DatabaseServer, make_settings: Callable[..., Settings]
) -> AsyncIterator[tuple[Settings, Database]]:
    settings = make_settings(DATABASE_URL=await database_server.clone("leaderboard"), LEADERBOARD_CACHE_SECONDS=0)
    database = Database.from_settings(settings)
    try:
        yield settings, database
    finally:
        await database.dispose()


def _daily(user: User, day: date, output: int, model: str = "m") -> UsageDaily:
    return UsageDaily(
        user_id=user.id,
        day=day,
        source="claude-code",
        model=model,
        input_tokens=0,
        output_tokens=output,
        cache_creation_5m_tokens=0,
        cache_creation_1h_tokens=0,
        cache_read_tokens=0,
        reasoning_tokens=0,
        cost_nanousd=output,
        records=1,
        unpriced_records=0,
    )


async def _seed(database: Database) -> tuple[User, User]:
    ada, bob = UserFactory.build(username="ada"), UserFactory.build(username="bob")
    async with database.transaction() as session:
        session.add_all([ada, bob])
        await session.flush()
        session.add_all([_daily(ada, TODAY, 100), _daily(bob, TODAY, 50)])
    return ada, bob


async def _read(database: Database, settings: Settings) -> tuple[list[tuple[str, int, Any]], dict[str, int]]:
    """The day board as a reader on its own connection sees it, and the snapshot rows by state."""
    async with database.transaction(write=False) as session:
        board = await LeaderboardService(session, settings, TODAY).board(
            Period.DAY, Metric.TOKENS, PageRequest(limit=10), None
        )
        states = dict(
            (
                await session.execute(
                    select(LeaderboardSnapshot.state, func.count()).group_by(LeaderboardSnapshot.state)
                )
            ).all()
        )
        standings = await session.scalar(select(func.count()).select_from(LeaderboardStanding))
    states["standings"] = int(standings or 0)
    return [(e.user.username, e.rank, e.value) for e in board.items], states


async def test_readers_see_the_old_snapshot_until_the_new_one_is_swapped_in(fresh: tuple[Settings, Database]) -> None:
    settings, database = fresh
    _ada, bob = await _seed(database)
    await recompute_rankings(database, settings, NOW)
    async with database.transaction() as session:
        session.add(_daily(bob, TODAY, 1_000, model="other"))

    seen_during: list[Any] = []

    async def read_mid_recompute() -> None:
        seen_during.append(await _read(database, settings))

    await recompute_rankings(database, settings, NOW + timedelta(minutes=10), before_swap=read_mid_recompute)

    board, states = seen_during[0]
    assert board == [("ada", 1, 100), ("bob", 2, 50)]
    assert states == {"current": 1, "standings": 12}
    board, states = await _read(database, settings)
    assert board == [("bob", 1, 1_050), ("ada", 2, 100)]
    assert states == {"current": 1, "previous": 1, "standings": 24}

    # A third computation drops the oldest snapshot: at rest, one current and one previous.
    await recompute_rankings(database, settings, NOW + timedelta(minutes=20))
    assert (await _read(database, settings))[1] == {"current": 1, "previous": 1, "standings": 24}


async def test_a_failed_recompute_leaves_the_current_snapshot(fresh: tuple[Settings, Database]) -> None:
    settings, database = fresh
    await _seed(database)
    first = await recompute_rankings(database, settings, NOW)

    async def fail() -> None:
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        await recompute_rankings(database, settings, NOW + timedelta(minutes=10), before_swap=fail)
    board, states = await _read(database, settings)
    assert board == [("ada", 1, 100), ("bob", 2, 50)]
    assert states == {"current": 1, "standings": 12}
    async with database.transaction(write=False) as session:
        assert await session.scalar(select(LeaderboardSnapshot.id)) == first.snapshot_id


async def test_the_recompute_job_runs_once_per_tick(fresh: tuple[Settings, Database]) -> None:
    settings, database = fresh
    await _seed(database)
    replicas = [Scheduler(database, settings, clock=lambda: NOW, runner_name=name) for name in ("r1", "r2")]
    for scheduler in replicas:
        jobs.register(scheduler)
    assert await replicas[0].run_job("leaderboard.recompute") is JobRunStatus.SUCCEEDED
    assert await replicas[1].run_job("leaderboard.recompute") is None
    assert await replicas[0].run_job("leaderboard.recompute") is None
    async with database.transaction(write=False) as session:
        snapshots = (await session.scalars(select(LeaderboardSnapshot))).all()
    assert [(s.state, s.computed_at) for s in snapshots] == [("current", NOW)]
    later = NOW + timedelta(minutes=settings.LEADERBOARD_RECOMPUTE_MINUTES)
    assert await replicas[1].run_job("leaderboard.recompute", now=later) is JobRunStatus.SUCCEEDED


async def test_the_recompute_interval_is_a_setting(make_settings: Callable[..., Settings], db: Database) -> None:
    scheduler = Scheduler(db, make_settings(LEADERBOARD_RECOMPUTE_MINUTES=3))
    jobs.register(scheduler)
    trigger = scheduler.jobs["leaderboard.recompute"].trigger
    assert trigger.interval == timedelta(minutes=3)
