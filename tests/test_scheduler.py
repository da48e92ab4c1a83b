from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from apscheduler.triggers.cron import CronTrigger
from sqlalchemy import select

from codepulse.config import Settings
from codepulse.db import Database
from codepulse.scheduler import (
    JobContext,
    JobRun,
    JobRunStatus,
    Scheduler,
    discover_jobs,
    interval_trigger,
    latest_fire_time,
    prune_job_runs,
)
from tests.databases import DatabaseServer, build_settings
from tests.factories import JobRunFactory

T0 = datetime(2026, 11, 23, 10, 0, 0, tzinfo=UTC)


def test_interval_ticks_are_the_same_on_every_replica() -> None:
    trigger = interval_trigger(timedelta(minutes=15))
    assert latest_fire_time(trigger, T0 + timedelta(minutes=7)) == T0
    assert latest_fire_time(trigger, T0 + timedelta(minutes=15)) == T0 + timedelta(minutes=15)
    # Two replicas whose clocks differ by seconds see the same tick.
    assert latest_fire_time(trigger, T0 + timedelta(seconds=2)) == latest_fire_time(trigger, T0 + timedelta(seconds=9))


def test_cron_tick_is_the_latest_fire_time() -> None:
    daily = CronTrigger.from_crontab("17 3 * * *", timezone=UTC)
    assert latest_fire_time(daily, T0) == datetime(2026, 11, 23, 3, 17, tzinfo=UTC)
    assert latest_fire_time(daily, datetime(2026, 11, 23, 3, 17, tzinfo=UTC)) == datetime(
        2026, 11, 23, 3, 17, tzinfo=UTC
    )
    weekly = CronTrigger.from_crontab("0 6 * * mon", timezone=UTC)  # 2026-11-23 is a Monday
    assert latest_fire_time(weekly, T0 - timedelta(hours=5)) == datetime(2026, 11, 16, 6, 0, tzinfo=UTC)


def test_registration_rules(settings: Settings, db: Database) -> None:
    scheduler = Scheduler(db, settings)

    async def job(_context: JobContext) -> None:
        return None

    scheduler.add("a.job", job, every=timedelta(minutes=1))
    with pytest.raises(ValueError, match="already registered"):
        scheduler.add("a.job", job, every=timedelta(minutes=1))
    with pytest.raises(ValueError, match="exactly one"):
        scheduler.add("b.job", job)
    discover_jobs(scheduler)
    assert "scheduler.prune_job_runs" in scheduler.jobs


@pytest.fixture
async def fresh_db(database_server: DatabaseServer) -> AsyncIterator[tuple[Settings, list[Database]]]:
    """A database with real commits, and engines opened on it (one per simulated replica)."""
    url = await database_server.clone("sched")
    settings = build_settings(url)
    databases: list[Database] = []
    yield settings, databases
    for database in databases:
        await database.dispose()


def _replica(settings: Settings, databases: list[Database], name: str, clock: Callable[[], datetime]) -> Scheduler:
    database = Database.from_settings(settings)
    databases.append(database)
    return Scheduler(database, settings, clock=clock, runner_name=name)


async def _runs(database: Database) -> list[JobRun]:
    async with database.session(write=False) as session:
        return list((await session.scalars(select(JobRun).order_by(JobRun.started_at))).all())


async def test_run_is_recorded_and_a_tick_runs_once(fresh_db: tuple[Settings, list[Database]]) -> None:
    settings, databases = fresh_db
    calls: list[datetime] = []

    async def job(context: JobContext) -> None:
        calls.append(context.scheduled_for)

    scheduler = _replica(settings, databases, "r1", lambda: T0 + timedelta(seconds=5))
    scheduler.add("test.every_minute", job, every=timedelta(minutes=1))
    assert await scheduler.run_job("test.every_minute") is JobRunStatus.SUCCEEDED
    assert await scheduler.run_job("test.every_minute") is None  # same tick again: skipped
    assert await scheduler.run_job("test.every_minute", now=T0 + timedelta(minutes=1)) is JobRunStatus.SUCCEEDED
    assert calls == [T0, T0 + timedelta(minutes=1)]
    runs = await _runs(databases[0])
    assert [(run.scheduled_for, run.status, run.runner) for run in runs] == [
        (T0, "succeeded", "r1"),
        (T0 + timedelta(minutes=1), "succeeded", "r1"),
    ]
    assert all(run.finished_at is not None for run in runs)


async def test_failure_is_recorded_with_its_error(fresh_db: tuple[Settings, list[Database]]) -> None:
    settings, databases = fresh_db

    async def broken(_context: JobContext) -> None:
        raise RuntimeError("upstream said no")

    scheduler = _replica(settings, databases, "r1", lambda: T0)
    scheduler.add("test.broken", broken, every=timedelta(minutes=5))
    assert await scheduler.run_job("test.broken") is JobRunStatus.FAILED
    [run] = await _runs(databases[0])
    assert run.status == "failed"
    assert run.error == "RuntimeError: upstream said no"


async def test_two_replicas_run_each_tick_once(fresh_db: tuple[Settings, list[Database]]) -> None:
    """Two schedulers, each with its own engine, start together with the same job due now.
    On PostgreSQL the advisory lock and the tick row decide; exactly one of them runs it."""
    settings, databases = fresh_db
    ran_on: list[str] = []
    both_fired = asyncio.Event()
    fired = 0

    def make_job(name: str) -> Callable[[JobContext], object]:
        async def job(_context: JobContext) -> None:
            ran_on.append(name)
            await asyncio.wait_for(both_fired.wait(), 5)  # still running while the other replica tries

        return job

    replicas = []
    for name in ("replica-a", "replica-b"):
        replica = _replica(settings, databases, name, lambda: T0 + timedelta(seconds=1))
        replica.add("test.shared", make_job(name), every=timedelta(hours=1))  # type: ignore[arg-type]
        original = replica.run_job

        async def counting_run(
            job_id: str, *, now: datetime | None = None, _run: Callable[..., Any] = original
        ) -> JobRunStatus | None:
            nonlocal fired
            fired += 1
            if fired == 2:
                both_fired.set()
            status: JobRunStatus | None = await _run(job_id, now=now)
            return status

        replica.run_job = counting_run  # type: ignore[method-assign]
        replicas.append(replica)

    for replica in replicas:
        replica.start(run_immediately=True)
    await asyncio.wait_for(both_fired.wait(), 5)
    for replica in replicas:
        await replica.stop()
    assert len(ran_on) == 1
    runs = await _runs(databases[0])
    assert len(runs) == 1
    assert runs[0].status == "succeeded"
    assert runs[0].runner == ran_on[0]


async def test_sequential_replicas_do_not_repeat_a_finished_tick(fresh_db: tuple[Settings, list[Database]]) -> None:
    """Replica B fires a little later (clock skew) after A already finished the tick: B skips."""
    settings, databases = fresh_db
    ran_on: list[str] = []

    def make_job(name: str) -> Callable[[JobContext], object]:
        async def job(_context: JobContext) -> None:
            ran_on.append(name)

        return job

    a = _replica(settings, databases, "a", lambda: T0 + timedelta(seconds=1))
    b = _replica(settings, databases, "b", lambda: T0 + timedelta(seconds=4))
    a.add("test.skew", make_job("a"), every=timedelta(minutes=10))  # type: ignore[arg-type]
    b.add("test.skew", make_job("b"), every=timedelta(minutes=10))  # type: ignore[arg-type]
    assert await a.run_job("test.skew") is JobRunStatus.SUCCEEDED
    assert await b.run_job("test.skew") is None
    assert ran_on == ["a"]


async def test_prune_keeps_recent_and_running_runs(session: object, db: Database, settings: Settings) -> None:
    old = T0 - timedelta(days=settings.JOB_RUNS_RETENTION_DAYS + 1)
    JobRunFactory.create(job_id="old.done", scheduled_for=old)
    JobRunFactory.create(job_id="old.running", scheduled_for=old, status="running", finished_at=None)
    JobRunFactory.create(job_id="recent", scheduled_for=T0 - timedelta(days=1))
    await session.flush()  # type: ignore[attr-defined]
    await prune_job_runs(JobContext(db, settings, T0))
    async with db.session() as check:
        remaining = set((await check.scalars(select(JobRun.job_id))).all())
    assert remaining == {"old.running", "recent"}


async def test_stop_waits_for_a_running_job(fresh_db: tuple[Settings, list[Database]]) -> None:
    settings, databases = fresh_db
    started, release, finished = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def slow(_context: JobContext) -> None:
        started.set()
        await release.wait()
        finished.set()

    scheduler = _replica(settings, databases, "r", lambda: T0)
    scheduler.add("test.slow", slow, every=timedelta(hours=1))
    scheduler.start(run_immediately=True)
    await asyncio.wait_for(started.wait(), 5)
    stopping = asyncio.create_task(scheduler.stop(grace_seconds=5))
    release.set()  # the job resumes after stop() has begun (tasks run in the order they are scheduled)
    await asyncio.wait_for(stopping, 10)
    assert finished.is_set()
    [run] = await _runs(databases[0])
    assert run.status == "succeeded"


async def test_stop_cancels_a_job_past_the_grace_period(fresh_db: tuple[Settings, list[Database]]) -> None:
    settings, databases = fresh_db
    started = asyncio.Event()

    async def stuck(_context: JobContext) -> None:
        started.set()
        await asyncio.sleep(60)

    scheduler = _replica(settings, databases, "r", lambda: T0)
    scheduler.add("test.stuck", stuck, every=timedelta(hours=1))
    scheduler.start(run_immediately=True)
    await asyncio.wait_for(started.wait(), 5)
    await scheduler.stop(grace_seconds=0.1)
    [run] = await _runs(databases[0])
    assert run.status == "canceled"
    assert run.error == "canceled at shutdown"
