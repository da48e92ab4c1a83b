"""The recompute on a database with real commits: readers see the old snapshot or the new one,
never a mix; a failed recompute leaves the old one; the job runs once per tick."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from datetime import date, timedelta
from typing import Any

import pytest
import structlog
from sqlalchemy import func, select, text

from codepulse.auth.models import User
from codepulse.config import Settings
from codepulse.db import Database
from codepulse.leaderboard import jobs
from codepulse.leaderboard.models import LeaderboardSnapshot, LeaderboardStanding, Metric, Period
from codepulse.leaderboard.ranking import PARTITION_PATTERN, partition_name, recompute_rankings
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


async def _standings_tables(database: Database) -> dict[str, int]:
    """{table: its indexes} for every table named like a snapshot's partition, and whether it is
    attached: attached ones map to their index count, detached ones to -1."""
    async with database.transaction(write=False) as session:
        rows = await session.execute(
            text(
                "SELECT tables.relname, bool_or(inherits.inhrelid IS NOT NULL), count(ix.indexrelid) "
                "FROM pg_class AS tables LEFT JOIN pg_inherits AS inherits ON inherits.inhrelid = tables.oid "
                "LEFT JOIN pg_index AS ix ON ix.indrelid = tables.oid "
                "WHERE tables.relkind = 'r' AND tables.relname ~ :pattern GROUP BY tables.relname"
            ),
            {"pattern": PARTITION_PATTERN},
        )
        return {name: indexes if attached else -1 for name, attached, indexes in rows.all()}


async def _stray_partition(database: Database, *, attached: bool) -> str:
    """A partition a crash could leave: a snapshot's table that no snapshot row names."""
    stray = uuid.uuid4()
    name = partition_name(stray)
    async with database.transaction() as session:
        await session.execute(text(f'CREATE TABLE "{name}" (LIKE leaderboard_standings)'))
        if attached:
            await session.execute(
                text(f"ALTER TABLE leaderboard_standings ATTACH PARTITION \"{name}\" FOR VALUES IN ('{stray}')")
            )
    return name


@pytest.mark.postgres_only
async def test_each_snapshot_is_a_partition_of_its_own_that_goes_with_it(fresh: tuple[Settings, Database]) -> None:
    settings, database = fresh
    await _seed(database)
    first = await recompute_rankings(database, settings, NOW)
    assert await _standings_tables(database) == {partition_name(first.snapshot_id): 6}
    second = await recompute_rankings(database, settings, NOW + timedelta(minutes=10))
    await _stray_partition(database, attached=True)
    await _stray_partition(database, attached=False)

    async def fail() -> None:
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        await recompute_rankings(database, settings, NOW + timedelta(minutes=20), before_swap=fail)
    third = await recompute_rankings(database, settings, NOW + timedelta(minutes=30))

    # The stale snapshot's table, the strays and the failed recompute's are gone; the two kept are
    # attached and indexed like the parent (primary key and the five position indexes).
    assert await _standings_tables(database) == {
        partition_name(second.snapshot_id): 6,
        partition_name(third.snapshot_id): 6,
    }
    async with database.transaction(write=False) as session:
        snapshots = await session.execute(
            select(LeaderboardStanding.snapshot_id, func.count()).group_by(LeaderboardStanding.snapshot_id)
        )
        assert dict(snapshots.all()) == {second.snapshot_id: 12, third.snapshot_id: 12}


@pytest.mark.postgres_only
async def test_a_partition_that_cannot_be_dropped_waits_for_the_next_recompute(
    fresh: tuple[Settings, Database],
) -> None:
    settings, database = fresh
    await _seed(database)
    await recompute_rankings(database, settings, NOW)
    stray = await _stray_partition(database, attached=True)
    async with database.transaction() as session:
        await session.execute(text(f'CREATE VIEW stray_reader AS SELECT * FROM "{stray}"'))  # noqa: S608 - a UUID's hex

    with structlog.testing.capture_logs() as logs:
        second = await recompute_rankings(database, settings, NOW + timedelta(minutes=10))
    # The recompute itself succeeded; the stray was detached but not dropped (the view needs it).
    assert [entry["event"] for entry in logs if entry["log_level"] == "warning"] == [
        "leaderboard.stale_partitions_not_dropped"
    ]
    assert (await _read(database, settings))[1] == {"current": 1, "previous": 1, "standings": 24}
    assert (await _standings_tables(database))[stray] == -1

    async with database.transaction() as session:
        await session.execute(text("DROP VIEW stray_reader"))
    third = await recompute_rankings(database, settings, NOW + timedelta(minutes=20))
    assert await _standings_tables(database) == {
        partition_name(second.snapshot_id): 6,
        partition_name(third.snapshot_id): 6,
    }


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
