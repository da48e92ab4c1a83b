"""Platform figures about scans and findings for the superusers' statistics
(`codepulse.admin.stats`): aggregate statements over the scans of a window and the unresolved
findings."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from codepulse.db import epoch_day, ordered_percentiles, utc_day_number
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


async def scan_stats(session: AsyncSession, *, start: datetime, end: datetime) -> ScanStats:
    """Scans queued in `[start, end)`: per UTC day and status; the median and 95th percentile of
    their durations (continuous percentiles, as PostgreSQL's percentile_cont computes them, over
    the window's scans only: `db.ordered_percentiles`); the
    engine calls they made and the results they took from the cache instead."""
    in_window = (Scan.queued_at >= start, Scan.queued_at < end)
    day = utc_day_number(Scan.queued_at)
    per_day: dict[date, dict[str, int]] = {}
    engine_calls = cache_hits = 0
    grouped = select(day, Scan.status, func.count(), func.sum(Scan.engine_calls), func.sum(Scan.cache_hits))
    for number, status, count, calls, hits in (
        await session.execute(grouped.where(*in_window).group_by(day, Scan.status))
    ).all():
        per_day.setdefault(epoch_day(number), {})[str(status)] = int(count)
        engine_calls += int(calls or 0)
        cache_hits += int(hits or 0)
    # Two values per fraction, read along ix_scans_duration_ms_queued_at (no sort of the window).
    count, spread = await ordered_percentiles(session, Scan.duration_ms, in_window, fractions=DURATION_FRACTIONS)
    return ScanStats(
        per_day=per_day,
        durations=count,
        median_ms=spread["median"],
        p95_ms=spread["p95"],
        engine_calls=engine_calls,
        cache_hits=cache_hits,
    )


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
