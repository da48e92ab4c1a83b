"""In-process APScheduler with a run-once-per-tick guard across replicas, and the job_runs record.

Domains, and platform packages such as the task queue, add periodic jobs in their own `jobs.py`
with a `register(scheduler)` function that calls `scheduler.add(...)`; `discover_jobs` finds them,
so nothing else needs to know they exist. This module imports none of them: they import it.

Exactly once per tick: every replica computes the same tick (the trigger's latest fire time at or
before now; interval triggers are anchored to a fixed epoch so replicas agree). A short claim
transaction takes `pg_try_advisory_xact_lock(job)` and inserts a `job_runs` row unique on
(job_id, scheduled_for); a replica that loses either race skips the tick.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import pkgutil
import socket
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from types import ModuleType
from typing import Any

import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import Index, String, Text, UniqueConstraint, and_, case, delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from codepulse.clock import utcnow
from codepulse.config import Settings
from codepulse.db import Base, Database, UUIDPrimaryKey, process_lock, rowcount, try_advisory_xact_lock

log = structlog.get_logger("codepulse.scheduler")

# Interval triggers count from this instant on every replica, so their ticks coincide.
INTERVAL_ANCHOR = datetime(2000, 1, 1, tzinfo=UTC)
ERROR_MAX_LENGTH = 4000


class JobRunStatus(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"


class JobRun(UUIDPrimaryKey, Base):
    __tablename__ = "job_runs"
    __table_args__ = (
        UniqueConstraint("job_id", "scheduled_for"),
        Index("ix_job_runs_started_at", "started_at"),
    )

    job_id: Mapped[str] = mapped_column(String(200))
    scheduled_for: Mapped[datetime]
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    status: Mapped[str] = mapped_column(String(20))
    runner: Mapped[str] = mapped_column(String(200))
    error: Mapped[str | None] = mapped_column(Text)


@dataclass(frozen=True)
class JobContext:
    """What a job receives: its own database handle (open sessions per unit of work) and settings."""

    database: Database
    settings: Settings
    scheduled_for: datetime


JobFunc = Callable[[JobContext], Awaitable[None]]


@dataclass(frozen=True)
class PeriodicJob:
    id: str
    func: JobFunc
    trigger: BaseTrigger


def interval_trigger(every: timedelta) -> IntervalTrigger:
    return IntervalTrigger(seconds=every.total_seconds(), start_date=INTERVAL_ANCHOR, timezone=UTC)


def latest_fire_time(trigger: BaseTrigger, now: datetime) -> datetime:
    """The trigger's latest fire time at or before `now`: the tick a run at `now` belongs to."""
    if isinstance(trigger, IntervalTrigger):
        elapsed = (now - trigger.start_date).total_seconds()
        if elapsed < 0:
            return now
        steps = int(elapsed // trigger.interval_length)
        return trigger.start_date.astimezone(UTC) + steps * trigger.interval  # type: ignore[no-any-return]
    window = timedelta(minutes=1)
    while window <= timedelta(days=800):
        candidate: datetime | None = trigger.get_next_fire_time(None, now - window)
        if candidate is not None and candidate <= now:
            while True:
                following: datetime | None = trigger.get_next_fire_time(
                    candidate, candidate + timedelta(microseconds=1)
                )
                if following is None or following > now:
                    return candidate.astimezone(UTC)
                candidate = following
        window *= 2
    return now


@dataclass
class Scheduler:
    """APScheduler plus the guard. `start`/`stop` are called by the app lifespan."""

    database: Database
    settings: Settings
    clock: Callable[[], datetime] = utcnow
    runner_name: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}")
    jobs: dict[str, PeriodicJob] = field(default_factory=dict)
    _scheduler: AsyncIOScheduler | None = None
    _inflight: set[asyncio.Task[Any]] = field(default_factory=set)

    def add(
        self,
        job_id: str,
        func: JobFunc,
        *,
        every: timedelta | None = None,
        cron: str | None = None,
    ) -> None:
        """Register a periodic job: `every=timedelta(...)` or a UTC crontab line `cron="0 3 * * *"`."""
        if (every is None) == (cron is None):
            raise ValueError("give exactly one of every= or cron=")
        if job_id in self.jobs:
            raise ValueError(f"job {job_id!r} is already registered")
        trigger = interval_trigger(every) if every is not None else CronTrigger.from_crontab(cron, timezone=UTC)
        self.jobs[job_id] = PeriodicJob(job_id, func, trigger)

    @property
    def running(self) -> bool:
        return self._scheduler is not None and bool(self._scheduler.running)

    def start(self, *, run_immediately: bool = False) -> None:
        scheduler = AsyncIOScheduler(timezone=UTC)
        for job in self.jobs.values():
            # Wall-clock now, not self.clock(): APScheduler drops a first run older than the grace time.
            extra: dict[str, Any] = {"next_run_time": utcnow()} if run_immediately else {}
            scheduler.add_job(
                self._run_from_scheduler,
                trigger=job.trigger,
                args=[job.id],
                id=job.id,
                coalesce=True,
                max_instances=1,
                misfire_grace_time=self.settings.SCHEDULER_MISFIRE_GRACE_SECONDS,
                **extra,
            )
        scheduler.start()
        self._scheduler = scheduler
        log.info("scheduler.started", jobs=sorted(self.jobs), runner=self.runner_name)

    async def stop(self, *, grace_seconds: float = 10.0) -> None:
        """Stop firing, give running jobs `grace_seconds` to finish, then cancel them."""
        if self._scheduler is None:
            return
        self._scheduler.pause()
        if self._inflight:
            _done, pending = await asyncio.wait(set(self._inflight), timeout=grace_seconds)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        self._scheduler.shutdown(wait=False)
        self._scheduler = None
        log.info("scheduler.stopped", runner=self.runner_name)

    async def _run_from_scheduler(self, job_id: str) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._inflight.add(task)
        try:
            await self.run_job(job_id)
        finally:
            if task is not None:
                self._inflight.discard(task)

    async def run_job(self, job_id: str, *, now: datetime | None = None) -> JobRunStatus | None:
        """Run one tick of `job_id` unless another runner already has; None when skipped."""
        job = self.jobs[job_id]
        tick = latest_fire_time(job.trigger, now or self.clock())
        async with process_lock(f"job:{job_id}"):
            run_id = await self._claim(job, tick)
            if run_id is None:
                log.debug("job.skipped", job_id=job_id, scheduled_for=tick.isoformat())
                return None
            log.info("job.started", job_id=job_id, scheduled_for=tick.isoformat())
            status, error = JobRunStatus.SUCCEEDED, None
            try:
                await job.func(JobContext(self.database, self.settings, tick))
            except asyncio.CancelledError:
                status, error = JobRunStatus.CANCELED, "canceled at shutdown"
                await asyncio.shield(self._finish(run_id, status, error))
                raise
            except Exception as exc:
                status, error = JobRunStatus.FAILED, f"{type(exc).__name__}: {exc}"[:ERROR_MAX_LENGTH]
                log.exception("job.failed", job_id=job_id)
            await self._finish(run_id, status, error)
            log.info("job.finished", job_id=job_id, status=status.value)
            return status

    async def _claim(self, job: PeriodicJob, tick: datetime) -> uuid.UUID | None:
        try:
            async with self.database.transaction() as session:
                if not await try_advisory_xact_lock(session, f"job:{job.id}"):
                    return None
                existing = await session.scalar(
                    select(JobRun.id).where(JobRun.job_id == job.id, JobRun.scheduled_for == tick)
                )
                if existing is not None:
                    return None
                run = JobRun(
                    job_id=job.id,
                    scheduled_for=tick,
                    started_at=self.clock(),
                    status=JobRunStatus.RUNNING.value,
                    runner=self.runner_name,
                )
                session.add(run)
                await session.flush()
                return run.id
        except IntegrityError:
            # Another runner inserted the same tick between our check and insert.
            return None

    async def _finish(self, run_id: uuid.UUID, status: JobRunStatus, error: str | None) -> None:
        async with self.database.transaction() as session:
            await session.execute(
                update(JobRun)
                .where(JobRun.id == run_id)
                .values(status=status.value, error=error, finished_at=self.clock())
            )


def discover_jobs(scheduler: Scheduler) -> None:
    """Register the scheduler's own jobs and every `codepulse.<package>.jobs.register` (domains,
    and platform packages such as the task queue's reaper and retention)."""
    scheduler.add("scheduler.prune_job_runs", prune_job_runs, cron="17 3 * * *")
    for jobs_module in domain_jobs_modules():
        register = getattr(jobs_module, "register", None)
        if register is not None:
            register(scheduler)


def domain_jobs_modules() -> list[ModuleType]:
    """Every `codepulse.<package>.jobs` module, in package name order."""
    package = importlib.import_module("codepulse")
    found = []
    for module in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if not module.ispkg:
            continue
        try:
            found.append(importlib.import_module(f"codepulse.{module.name}.jobs"))
        except ModuleNotFoundError as exc:
            if exc.name != f"codepulse.{module.name}.jobs":
                raise
    return found


async def prune_job_runs(context: JobContext) -> None:
    """Keep job_runs bounded: drop finished runs older than JOB_RUNS_RETENTION_DAYS."""
    cutoff = context.scheduled_for - timedelta(days=context.settings.JOB_RUNS_RETENTION_DAYS)
    async with context.database.transaction() as session:
        result = await session.execute(
            delete(JobRun).where(JobRun.started_at < cutoff, JobRun.status != JobRunStatus.RUNNING.value)
        )
    log.info("job_runs.pruned", deleted=rowcount(result))


@dataclass(frozen=True)
class JobRunSummary:
    job_id: str
    last_started_at: datetime
    last_finished_at: datetime | None
    last_status: str
    last_failure_at: datetime | None = None
    last_error: str | None = None


async def job_run_stats(session: AsyncSession) -> list[JobRunSummary]:
    """Per job with a run in job_runs (kept JOB_RUNS_RETENTION_DAYS): its latest run and its latest
    failed run, by job id. One statement: the two instants per job (GROUP BY job_id), joined back
    to their rows."""
    failed = JobRun.status == JobRunStatus.FAILED.value
    latest = (
        select(
            JobRun.job_id,
            func.max(JobRun.started_at).label("last_run"),
            func.max(case((failed, JobRun.started_at))).label("last_failure"),
        )
        .group_by(JobRun.job_id)
        .subquery("latest")
    )
    rows = await session.execute(
        select(JobRun.job_id, JobRun.started_at, JobRun.finished_at, JobRun.status, JobRun.error, latest.c.last_run)
        .join(
            latest,
            and_(
                JobRun.job_id == latest.c.job_id,
                or_(JobRun.started_at == latest.c.last_run, and_(failed, JobRun.started_at == latest.c.last_failure)),
            ),
        )
        .order_by(JobRun.job_id, JobRun.started_at.desc(), JobRun.id.desc())
    )
    found: dict[str, JobRunSummary] = {}
    for job_id, started_at, finished_at, status, error, last_run in rows.all():
        summary = found.get(job_id)
        if summary is None and started_at == last_run:
            summary = found[job_id] = JobRunSummary(job_id, started_at, finished_at, status)
        if summary is not None and summary.last_failure_at is None and status == JobRunStatus.FAILED.value:
            found[job_id] = replace(summary, last_failure_at=started_at, last_error=error)
    return list(found.values())
