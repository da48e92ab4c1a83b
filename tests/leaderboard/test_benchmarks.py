"""Community benchmarks: the hourly computation against a pure-Python reference (figures, time
zones, private and excluded users), the percentile helper on both databases, the swap and the
job's run-once guard. Data: tests/leaderboard/benchmark_data.py."""

from __future__ import annotations

import asyncio
import random
import statistics
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from sqlalchemy import Float, String, func, literal, select, union_all
from sqlalchemy.ext.asyncio import AsyncSession

from codepulse.config import Settings
from codepulse.db import Database, percentiles
from codepulse.leaderboard import jobs
from codepulse.leaderboard.benchmark_reads import community_benchmarks
from codepulse.leaderboard.benchmarks import compute_benchmarks
from codepulse.leaderboard.models import BenchmarkMember, BenchmarkRange, BenchmarkSnapshot, BenchmarkStat
from codepulse.scheduler import JobRunStatus, Scheduler
from tests.databases import DatabaseServer, build_settings
from tests.factories import Account, MakeUser, UserFactory
from tests.leaderboard.benchmark_data import (
    CACHE_MIN_TOKENS,
    FRACTIONS,
    METRICS,
    NOW,
    TODAY,
    Row,
    UsageDailyFactory,
    add_usage,
    community_values,
    d,
    make_people,
    reference_percentile,
)


@pytest.fixture
def bench_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"LEADERBOARD_CACHE_MIN_TOKENS": CACHE_MIN_TOKENS})


@pytest.fixture
async def people(session: AsyncSession, make_user: MakeUser) -> dict[str, Account]:
    return await make_people(session, make_user)


async def current_stats(db: Database) -> dict[tuple[str, str], BenchmarkStat]:
    """The newest computation's distributions by (range, metric)."""
    async with db.session(write=False) as check:
        newest = select(BenchmarkSnapshot.id).order_by(BenchmarkSnapshot.computed_at.desc()).limit(1)
        stats = await check.scalars(select(BenchmarkStat).where(BenchmarkStat.snapshot_id == newest.scalar_subquery()))
        return {(stat.range, stat.metric): stat for stat in stats}


# --- the computation -----------------------------------------------------------------------------


async def test_figures_equal_the_reference(people: dict[str, Account], db: Database, bench_settings: Settings) -> None:
    await compute_benchmarks(db, bench_settings, NOW)
    stats = await current_stats(db)
    for range_ in BenchmarkRange:
        for metric in METRICS:
            values = community_values(range_, metric)
            if not values:
                assert (range_.value, metric) not in stats
                continue
            stat = stats[(range_.value, metric)]
            assert stat.count == len(values), (range_, metric)
            assert stat.mean == pytest.approx(statistics.fmean(values), rel=1e-9)
            for column, fraction in FRACTIONS.items():
                assert getattr(stat, column) == pytest.approx(reference_percentile(values, fraction), rel=1e-9), (
                    range_,
                    metric,
                    column,
                )


async def test_known_values(people: dict[str, Account], db: Database, bench_settings: Settings) -> None:
    """A few figures by hand: time zones, streaks, windows, the cache minimum."""
    await compute_benchmarks(db, bench_settings, NOW)
    async with db.session(write=False) as check:
        members = {(member.range, member.user_id): member for member in await check.scalars(select(BenchmarkMember))}
    cy = members[("7d", people["cy"].model.id)]
    assert (cy.active_days, cy.streak) == (2, 3)  # 12-04 (local today) is after the window, in the streak
    assert cy.cache_efficiency == pytest.approx(50_000 / 60_000)
    ada = members[("7d", people["ada"].model.id)]
    assert (ada.active_days, ada.streak) == (5, 3)  # 11-28, 11-29, then a gap, then 12-01 to today
    assert members[("7d", people["lee"].model.id)].streak == 2  # local today is 12-02
    assert members[("7d", people["bob"].model.id)].streak == 1  # yesterday still counts
    assert members[("7d", people["dan"].model.id)].streak == 0
    assert members[("7d", people["dan"].model.id)].active_days == 2
    assert members[("7d", people["bob"].model.id)].cache_efficiency is None  # below the minimum
    assert members[("30d", people["bob"].model.id)].active_days == 2
    assert ("30d", people["olga"].model.id) not in members
    assert members[("all", people["olga"].model.id)].active_days == 1
    assert ("all", people["nia"].model.id) not in members
    stats = await current_stats(db)
    assert members[("7d", people["dan"].model.id)].cache_efficiency == 0.0  # exactly the minimum: counted
    assert stats[("7d", "cache_efficiency")].count == 4  # not bob
    assert stats[("7d", "active_days")].count == 5
    assert stats[("all", "active_days")].count == 6


async def test_private_and_excluded_users_are_not_counted(
    people: dict[str, Account], db: Database, bench_settings: Settings
) -> None:
    await compute_benchmarks(db, bench_settings, NOW)
    stats = await current_stats(db)
    # pat (private) and eve (excluded) have the largest days of all: the maximum stays below them.
    tokens = stats[("7d", "tokens_per_active_day")]
    assert tokens.count == 5
    assert tokens.p99 < 88_000
    async with db.session(write=False) as check:
        standings = {
            member.user_id: member.standing
            for member in await check.scalars(select(BenchmarkMember).where(BenchmarkMember.range == "7d"))
        }
    assert standings[people["pat"].model.id] == "private"
    assert standings[people["eve"].model.id] == "excluded"


async def test_a_new_computation_replaces_the_current_one(
    people: dict[str, Account], session: AsyncSession, db: Database, bench_settings: Settings
) -> None:
    """Readers use the newest computation; the one before it is kept (for readers that started
    on it), older ones are deleted."""
    await compute_benchmarks(db, bench_settings, NOW)
    first = (await current_stats(db))[("all", "active_days")]
    account = UserFactory.create(username="zed", profile_public=True)  # a newcomer, a day later
    await session.flush()
    await add_usage(session, account.id, [Row(d(12, 4), "codex", "gpt-5", 10, 10, 0, 100)])
    later = NOW + timedelta(days=1)
    await compute_benchmarks(db, bench_settings, later)
    second = (await current_stats(db))[("all", "active_days")]
    assert (first.count, second.count) == (6, 7)
    async with db.session(write=False) as check:
        read = await community_benchmarks(check, BenchmarkRange.ALL)
    assert (read.computed_at, read.active_users, read.metrics.active_days.count) == (later, 7, 7)
    await compute_benchmarks(db, bench_settings, later + timedelta(hours=1))
    async with db.session(write=False) as check:
        kept = set((await check.scalars(select(BenchmarkSnapshot.computed_at))).all())
        members_of = dict(
            (
                await check.execute(
                    select(BenchmarkMember.snapshot_id, func.count()).group_by(BenchmarkMember.snapshot_id)
                )
            ).all()
        )
        snapshots = set((await check.scalars(select(BenchmarkSnapshot.id))).all())
    assert kept == {later, later + timedelta(hours=1)}
    assert set(members_of) == snapshots


# --- the percentile helper, the same numbers on both databases -------------------------------------


async def test_percentiles_helper_equals_the_reference(db: Database) -> None:
    generator = random.Random(13)
    groups: dict[str, list[float | None]] = {
        "one": [4.25],
        "two": [1.0, 8.0],
        "ties": [5.0, 5.0, 5.0, 5.0, 5.0, 5.0, 1.0, 9.5],
        "many": [round(generator.uniform(0, 1000), 3) for _ in range(41)] + [None, None],
        "ints": [float(generator.randint(0, 20)) for _ in range(100)],  # many ties
    }
    present = {group: [value for value in values if value is not None] for group, values in groups.items()}
    rows = [
        select(literal(group, String).label("grp"), literal(value, Float).label("value"))
        for group, values in groups.items()
        for value in values
    ]
    source = union_all(*rows).subquery("source")
    async with db.session(write=False) as session:
        result = {
            row.grp: row
            for row in await session.execute(
                percentiles(session, source, "value", fractions=FRACTIONS, group_by=("grp",))
            )
        }
        result["*"] = (await session.execute(percentiles(session, source, "value", fractions=FRACTIONS))).one()
    present["*"] = [value for values in present.values() for value in values]
    assert set(result) == {*groups, "*"}
    for group, values in present.items():
        row = result[group]
        assert row.count == len(values)
        assert row.mean == pytest.approx(statistics.fmean(values), rel=1e-9)
        for label, fraction in FRACTIONS.items():
            assert getattr(row, label) == pytest.approx(reference_percentile(values, fraction), rel=1e-9), (
                group,
                label,
            )
    # The reference is the standard "inclusive" method (R's type 7).
    inclusive = statistics.quantiles(present["many"], n=10, method="inclusive")
    assert result["many"].p90 == pytest.approx(inclusive[8], rel=1e-9)
    assert result["ints"].p75 == pytest.approx(statistics.quantiles(present["ints"], n=4, method="inclusive")[2])


# --- the job's run-once guard --------------------------------------------------------------------


@pytest.fixture
async def replicas(database_server: DatabaseServer) -> AsyncIterator[list[Scheduler]]:
    """Two schedulers on a database with real commits, each with its own engine, both with the
    leaderboard's jobs registered (jobs.register)."""
    settings = build_settings(await database_server.clone("bench"))
    databases = [Database.from_settings(settings) for _ in range(2)]
    schedulers = []
    for name, database in zip("ab", databases, strict=True):
        scheduler = Scheduler(database, settings, clock=lambda: NOW + timedelta(minutes=5), runner_name=name)
        jobs.register(scheduler)
        schedulers.append(scheduler)
    yield schedulers
    for database in databases:
        await database.dispose()


async def test_the_job_runs_once_per_tick(replicas: list[Scheduler]) -> None:
    database = replicas[0].database
    async with database.transaction() as session:
        user = UserFactory.build(username="solo")
        session.add(user)
        await session.flush()
        session.add(UsageDailyFactory.build(user_id=user.id, day=TODAY, input_tokens=10, cost_nanousd=1))
    statuses = await asyncio.gather(*(replica.run_job("leaderboard.benchmarks") for replica in replicas))
    assert sorted(statuses, key=lambda status: status is None) == [JobRunStatus.SUCCEEDED, None]
    assert await replicas[0].run_job("leaderboard.benchmarks") is None  # the same tick again
    async with database.session(write=False) as check:
        snapshots = (await check.scalars(select(BenchmarkSnapshot))).all()
    # The tick's time is the computation's now.
    assert [(snapshot.computed_at, snapshot.community) for snapshot in snapshots] == [
        (NOW, {"7d": 1, "30d": 1, "all": 1})
    ]
