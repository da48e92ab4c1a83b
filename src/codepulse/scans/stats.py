"""Platform figures about scans and findings for the superusers' statistics
(`codepulse.admin.stats`): the scans of a window from their per-day counts (`ScanDayCount`), their
durations' percentiles from the scans, and the unresolved findings."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from codepulse.db import ordered_percentiles
from codepulse.scans.days import ScanDays
from codepulse.scans.models import SEVERITIES, UNRESOLVED_STATUSES, Finding, Scan, stored_severity

DURATION_FRACTIONS = {"median": 0.5, "p95": 0.95}


@dataclass(frozen=True)
class ScanStats:
    per_day: dict[date, dict[str, int]]  # UTC day queued -> status -> scans
    durations: int  # scans with a duration (finished)
    median_ms: float | None
    p95_ms: float | None
    engine_calls: int
    cache_hits: int


async def scan_stats(
    session: AsyncSession, *, first_day: date, last_day: date, start: datetime, end: datetime
) -> ScanStats:
    """Scans queued from `first_day` to `last_day` (UTC days; `[start, end)` are their bounds as
    instants): per day and status, the engine calls they made and the results they took from
    the cache instead, from the per-day counts; the median and 95th percentile of their durations
    (continuous percentiles, as PostgreSQL's percentile_cont computes them, over the window's
    scans only: `db.ordered_percentiles`, which counts none: the per-day counts did)."""
    per_day: dict[date, dict[str, int]] = {}
    engine_calls = cache_hits = timed = 0
    for day, status, scans, calls, hits, durations in await ScanDays(session).day_counts(first_day, last_day):
        per_day.setdefault(day, {})[status] = scans
        engine_calls += calls
        cache_hits += hits
        timed += durations
    # Two values per fraction, read along ix_scans_duration_ms_queued_at (no sort of the window).
    count, spread = await ordered_percentiles(
        session,
        Scan.duration_ms,
        (Scan.queued_at >= start, Scan.queued_at < end),
        fractions=DURATION_FRACTIONS,
        count=timed,
    )
    return ScanStats(
        per_day=per_day,
        durations=count,
        median_ms=spread["median"],
        p95_ms=spread["p95"],
        engine_calls=engine_calls,
        cache_hits=cache_hits,
    )


async def rebuild_scan_days(session: AsyncSession) -> None:
    """Recompute the per-day counts from every scan (`ScanDays.rebuild`)."""
    await ScanDays(session).rebuild()


async def open_findings_by_severity(session: AsyncSession) -> dict[str, int]:
    """Unresolved findings (open at the head or still in the history) of every repository, per
    severity, each severity present (0 when none)."""
    counts = dict.fromkeys(SEVERITIES, 0)
    rows = await session.execute(
        select(Finding.severity, func.count()).where(Finding.status.in_(UNRESOLVED_STATUSES)).group_by(Finding.severity)
    )
    for severity, count in rows.all():
        counts[stored_severity(str(severity))] += int(count)
    return counts
