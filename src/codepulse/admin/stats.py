"""`GET /api/v1/admin/stats`: platform figures for superusers, composed from the slices that own
each table — accounts (auth), organizations (orgs), repositories, scans and findings (scans),
usage, the task queue and the scheduler's job runs. Each contributes one to three aggregate
statements (GROUP BY day, counts with CASE); nothing reads rows one by one. Per-day series are
zero-filled here, one entry per day of the range.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated

from fastapi import Query, Request
from sqlalchemy.ext.asyncio import AsyncSession

from codepulse.admin.schemas import (
    DayCount,
    FindingFigures,
    JobFigures,
    OrganizationFigures,
    PlatformStats,
    RepositoryFigures,
    ScanDay,
    ScanFigures,
    StatsRange,
    TaskFigures,
    TaskKindFigures,
    UnpricedModel,
    UsageDayOut,
    UsageFigures,
    UserFigures,
)
from codepulse.auth.dependencies import Superuser
from codepulse.auth.service import user_stats
from codepulse.db import DbSession
from codepulse.orgs.service import organization_stats
from codepulse.repositories.service import repository_stats
from codepulse.routing import DomainRouter
from codepulse.scans.service import open_findings_by_severity, scan_stats
from codepulse.scheduler import job_run_stats
from codepulse.tasks.admin import queue_stats
from codepulse.usage.service import UsageDay, nanousd_to_usd, synced_since, usage_stats

admin_stats_router = DomainRouter(prefix="/admin/stats", tags=["admin"])


def _days(first_day: date, count: int) -> list[date]:
    return [first_day + timedelta(days=offset) for offset in range(count)]


async def _users(session: AsyncSession, days: list[date], start: datetime, end: datetime, now: datetime) -> UserFigures:
    stats = await user_stats(session, start=start, end=end, now=now, also_active=synced_since)
    per_day = [DayCount(day=day, count=stats.new_per_day.get(day, 0)) for day in days]
    return UserFigures(
        total=stats.total,
        disabled=stats.disabled,
        active_7d=stats.active[7],
        active_30d=stats.active[30],
        new=sum(entry.count for entry in per_day),
        new_per_day=per_day,
    )


async def _scans(session: AsyncSession, days: list[date], start: datetime, end: datetime) -> ScanFigures:
    stats = await scan_stats(session, first_day=days[0], last_day=days[-1], start=start, end=end)
    per_day = [ScanDay(day=day, **stats.per_day.get(day, {})) for day in days]
    return ScanFigures(
        total=sum(sum(statuses.values()) for statuses in stats.per_day.values()),
        per_day=per_day,
        finished=stats.durations,
        median_duration_ms=stats.median_ms,
        p95_duration_ms=stats.p95_ms,
        engine_calls=stats.engine_calls,
        cache_hits=stats.cache_hits,
    )


async def _usage(session: AsyncSession, days: list[date], start: datetime, end: datetime) -> UsageFigures:
    stats = await usage_stats(session, first_day=days[0], last_day=days[-1], start=start, end=end)
    empty = UsageDay()
    per_day = []
    for day in days:
        sums = stats.per_day.get(day, empty)
        per_day.append(
            UsageDayOut(
                day=day,
                syncs=stats.syncs_per_day.get(day, 0),
                records=sums.records,
                tokens=sums.tokens,
                cost_usd=nanousd_to_usd(sums.cost_nanousd),
                unpriced_records=sums.unpriced_records,
            )
        )
    unpriced = sorted(stats.unpriced_models.items(), key=lambda item: (-item[1], item[0]))
    return UsageFigures(
        syncs=sum(entry.syncs for entry in per_day),
        records=sum(entry.records for entry in per_day),
        tokens=sum(entry.tokens for entry in per_day),
        cost_usd=nanousd_to_usd(sum(stats.per_day.get(day, empty).cost_nanousd for day in days)),
        unpriced_records=sum(entry.unpriced_records for entry in per_day),
        per_day=per_day,
        unpriced_models=[UnpricedModel(model=model, records=records) for model, records in unpriced],
    )


async def _tasks(session: AsyncSession, now: datetime) -> TaskFigures:
    stats = await queue_stats(session, now=now)
    kinds = [TaskKindFigures(kind=kind, **counts) for kind, counts in stats.by_kind.items()]
    oldest = stats.oldest_due_at
    return TaskFigures(
        queued=sum(kind.queued for kind in kinds),
        running=sum(kind.running for kind in kinds),
        dead=sum(kind.dead for kind in kinds),
        by_kind=kinds,
        oldest_queued_age_seconds=None if oldest is None else max((now - oldest).total_seconds(), 0.0),
    )


async def platform_stats(session: AsyncSession, default_plan: str, now: datetime, range_: StatsRange) -> PlatformStats:
    """The figures of the `range_` days ending today (UTC), as of `now`."""
    days = _days(now.date() - timedelta(days=range_.days - 1), range_.days)
    start = datetime.combine(days[0], time(), tzinfo=UTC)
    end = datetime.combine(days[-1] + timedelta(days=1), time(), tzinfo=UTC)  # whole UTC days
    organizations = await organization_stats(session, default_plan)
    repositories = await repository_stats(session)
    findings = await open_findings_by_severity(session)
    jobs = await job_run_stats(session)
    return PlatformStats(
        range=range_,
        first_day=days[0],
        last_day=days[-1],
        generated_at=now,
        users=await _users(session, days, start, end, now),
        organizations=OrganizationFigures(total=organizations.total, by_plan=organizations.by_plan),
        repositories=RepositoryFigures(connected=repositories.connected, archived=repositories.archived),
        scans=await _scans(session, days, start, end),
        findings=FindingFigures(open_total=sum(findings.values()), open_by_severity=findings),
        usage=await _usage(session, days, start, end),
        tasks=await _tasks(session, now),
        scheduler=[
            JobFigures(
                job_id=job.job_id,
                last_run_at=job.last_started_at,
                last_status=job.last_status,
                last_finished_at=job.last_finished_at,
                last_failure_at=job.last_failure_at,
                last_error=job.last_error,
            )
            for job in jobs
        ],
    )


@admin_stats_router.get("", summary="Platform statistics (superuser)")
async def get_stats(
    _admin: Superuser,
    session: DbSession,
    request: Request,
    range_: Annotated[
        StatsRange, Query(alias="range", description="The days the per-day series cover, today (UTC) included.")
    ] = StatsRange.D30,
) -> PlatformStats:
    """Accounts (total, disabled, active in 7 and 30 days — signed in or synced —, new per day),
    organizations by plan, repositories, scans per day by status with the median and p95
    duration and engine calls vs cache hits, unresolved findings by severity, usage per day
    (syncs, records, tokens, cost, unpriced records and their models), the task queue (queued,
    running, dead by kind, the oldest due task's wait) and each scheduler job's last run and
    failure. Days are UTC, but usage records count on the user's local day they were stored
    under. An unknown `range` is a 422 listing 7d, 30d, 90d and 365d."""
    state = request.app.state
    return await platform_stats(session, state.settings.DEFAULT_PLAN, state.clock(), range_)
