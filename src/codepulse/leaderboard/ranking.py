"""The recompute: every period x metric ranked into a new snapshot, swapped in atomically.

One INSERT ... SELECT computes every board from usage's daily aggregates: per-user day totals,
the current streak (gaps and islands), per-period sums, then `rank()` and `row_number()` per
period and metric. Everyone with usage in a window is stored, public or not (organization boards
rank members from the same rows); the global ranks count public profiles only. The new snapshot
becomes `current` in the transaction that built it, so a reader sees the old snapshot or the new
one, never a mix; the snapshot it replaces is kept as `previous` for rank changes, and the one
before that is deleted. On PostgreSQL each snapshot's standings are a partition of their own:
written into a bare table, indexed in bulk as it is attached, detached and dropped whole once its
snapshot is gone.
"""

from __future__ import annotations

import calendar
import time
import typing
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import (
    ColumnElement,
    Float,
    Integer,
    Table,
    and_,
    case,
    cast,
    delete,
    func,
    insert,
    literal,
    null,
    select,
    union_all,
    update,
)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.selectable import CompoundSelect, FromClause

from codepulse.auth import service as auth_service
from codepulse.clock import utcnow
from codepulse.config import Settings
from codepulse.db import (
    Database,
    advisory_xact_lock,
    attach_partition,
    bytewise,
    create_partition_table,
    create_temporary_table,
    drop_partition,
    drop_temporary_table,
    list_partitioned,
    partition_tables,
    set_local_bulk_query_settings,
)
from codepulse.leaderboard.activity import EPOCH, SUMS, Bounds, active_days, activity, current_runs, groupings
from codepulse.leaderboard.cache import board_cache
from codepulse.leaderboard.models import (
    LeaderboardSnapshot,
    LeaderboardStanding,
    Metric,
    Period,
    SnapshotState,
)
from codepulse.usage.streaks import zone

log = structlog.get_logger("codepulse.leaderboard")

# The `all` window's bounds as day numbers: before any usage, and after any local date.
ALL_START = -1_000_000
ALL_END = 1_000_000
RECOMPUTE_LOCK = "leaderboard.recompute"
# Memory for the recompute's sorts and hashes (PostgreSQL), instead of spilling to disk.
WORK_MEM_MB = 256


@dataclass(frozen=True)
class Window:
    """A period's first and last local date (inclusive); `all` has neither."""

    start: date | None
    end: date | None


def windows(today: date) -> dict[Period, Window]:
    """Each period's window on `today` (a UTC date): calendar day, ISO week (Monday to Sunday) and
    month, all time, and the rolling 7 and 30 days ending today."""
    monday = today - timedelta(days=today.weekday())
    last_of_month = today.replace(day=calendar.monthrange(today.year, today.month)[1])
    return {
        Period.DAY: Window(today, today),
        Period.WEEK: Window(monday, monday + timedelta(days=6)),
        Period.MONTH: Window(today.replace(day=1), last_of_month),
        Period.ALL: Window(None, None),
        Period.ROLLING_7D: Window(today - timedelta(days=6), today),
        Period.ROLLING_30D: Window(today - timedelta(days=29), today),
    }


def _number(day: date) -> int:
    return (day - EPOCH).days


@dataclass(frozen=True)
class RecomputeResult:
    snapshot_id: uuid.UUID
    computed_at: datetime
    today: date
    duration_ms: int
    totals: dict[str, dict[str, int]]


# What a metric ranks on, and who is eligible for it beyond having a public profile.
def _metric_values(scored: Any) -> dict[Metric, tuple[ColumnElement[Any], ColumnElement[bool] | None]]:
    return {
        Metric.TOKENS: (scored.c.tokens, None),
        Metric.COST: (scored.c.cost, None),
        Metric.ACTIVE_DAYS: (scored.c.active_days, None),
        Metric.STREAK: (scored.c.streak, scored.c.streak > 0),
        Metric.CACHE_EFFICIENCY: (scored.c.cache_efficiency, scored.c.cache_efficiency.is_not(None)),
    }


async def _local_today_numbers(session: AsyncSession, now: datetime) -> dict[str, int]:
    """Day numbers of "today" in every time zone users have where it is not the UTC date: one
    entry per zone, not per user."""
    names = await auth_service.user_timezones(session)
    utc_today = now.date()
    local = {name: now.astimezone(zone(name)).date() for name in names}
    return {name: _number(day) for name, day in local.items() if day != utc_today}


@dataclass(frozen=True)
class Days:
    """A recompute's day numbers: the anchor of the activity blocks and each period's window."""

    today: int
    anchor: int
    bounds: dict[Period, Bounds]


def days_of(now: datetime) -> Days:
    today = now.date()
    bounds = {
        period: Bounds(
            ALL_START if window.start is None else _number(window.start),
            ALL_END if window.end is None else _number(window.end),
        )
        for period, window in windows(today).items()
    }
    # No local date is later than the day after tomorrow (UTC+14 at the end of tomorrow, UTC).
    return Days(_number(today), _number(today) + 2, bounds)


def standings_query(
    session: AsyncSession,
    snapshot_id: uuid.UUID,
    days: Days,
    local_today: dict[str, int],
    settings: Settings,
    blocks: FromClause,
    recent: FromClause,
) -> CompoundSelect[Any]:
    """Every (period, user with usage in it) of a snapshot with values, ranks and positions, from
    the staged groupings (`activity.Groupings`) of the daily aggregates."""
    anchor, bounds = days.anchor, days.bounds
    people, chains = activity(bounds, blocks, recent, session)
    profiles = auth_service.user_profiles().subquery("profiles")
    today_n: ColumnElement[int] = (
        case(local_today, value=profiles.c.timezone, else_=days.today) if local_today else literal(days.today, Integer)
    )
    runs = current_runs(session, people, blocks, chains, anchor, today_n, profiles)
    per_user = (
        select(
            people.c.user_id,
            profiles.c.profile_public.label("public"),
            bytewise(session, profiles.c.username).label("username"),
            runs.c.run_start,
            runs.c.run_end,
            *(people.c[f"{name}_{period.name}"] for period in bounds for name in SUMS),
            *(
                active_days(people, session, period, period_bounds, anchor).label(f"active_days_{period.name}")
                for period, period_bounds in bounds.items()
            ),
        )
        .select_from(
            people.join(profiles, profiles.c.id == people.c.user_id).outerjoin(runs, runs.c.user_id == people.c.user_id)
        )
        .cte("per_user")
    )
    values = union_all(
        *(
            select(
                per_user.c.user_id,
                literal(period.value).label("period"),
                literal(period_bounds.start, Integer).label("start_n"),
                literal(period_bounds.end, Integer).label("end_n"),
                per_user.c.public,
                per_user.c.username,
                per_user.c.run_start,
                per_user.c.run_end,
                *(per_user.c[f"{name}_{period.name}"].label(name) for name in SUMS),
                per_user.c[f"active_days_{period.name}"].label("active_days"),
            ).where(per_user.c[f"active_days_{period.name}"] > 0)
            for period, period_bounds in bounds.items()
        )
    ).cte("period_values")

    # A window counts the current streak's days that fall inside it.
    first = case((values.c.run_start > values.c.start_n, values.c.run_start), else_=values.c.start_n)
    last = case((values.c.run_end < values.c.end_n, values.c.run_end), else_=values.c.end_n)
    streak = case((and_(values.c.run_end.is_not(None), last >= first), last - first + 1), else_=0)
    cache_efficiency = case(
        (
            and_(values.c.tokens >= settings.LEADERBOARD_CACHE_MIN_TOKENS, values.c.cache_base > 0),
            cast(values.c.cache_read, Float) / values.c.cache_base,
        ),
        else_=None,
    )
    scored = select(
        values.c.user_id,
        values.c.period,
        values.c.public,
        values.c.username,
        values.c.tokens,
        values.c.cost,
        values.c.active_days,
        streak.label("streak"),
        cache_efficiency.label("cache_efficiency"),
    ).cte("scored")

    # Only public profiles are ranked: private ones are stored unranked (organization boards rank
    # them when read), so the window sorts take the public rows alone.
    ranked: list[ColumnElement[Any]] = []
    for metric, (value, condition) in _metric_values(scored).items():
        partition = [scored.c.period] if condition is None else [scored.c.period, condition]
        # Standard competition ranking ("1224"); ties are listed by username (byte order).
        rank: ColumnElement[Any] = func.rank().over(partition_by=partition, order_by=value.desc())
        position: ColumnElement[Any] = func.row_number().over(
            partition_by=partition, order_by=[value.desc(), scored.c.username]
        )
        if condition is not None:
            rank, position = case((condition, rank), else_=None), case((condition, position), else_=None)
        ranked += [rank.label(f"{metric.value}_rank"), position.label(f"{metric.value}_position")]
    unranked = [null().label(f"{metric.value}_{part}") for metric in Metric for part in ("rank", "position")]
    stored: list[ColumnElement[Any]] = [
        literal(snapshot_id, LeaderboardStanding.snapshot_id.type).label("snapshot_id"),
        scored.c.period,
        scored.c.user_id,
        scored.c.public,
        scored.c.tokens,
        scored.c.cost,
        scored.c.active_days,
        scored.c.streak,
        scored.c.cache_efficiency,
    ]
    return union_all(
        select(*stored, *ranked).where(scored.c.public.is_(True)),
        select(*stored, *unranked).where(scored.c.public.is_not(True)),
    )


STANDING_COLUMNS = [
    "snapshot_id",
    "period",
    "user_id",
    "public",
    "tokens",
    "cost",
    "active_days",
    "streak",
    "cache_efficiency",
    *(f"{metric.value}_{part}" for metric in Metric for part in ("rank", "position")),
]


async def _totals(session: AsyncSession, snapshot_id: uuid.UUID) -> dict[str, dict[str, int]]:
    """How many public profiles each board ranks: {period: {metric: count}}."""
    standing = LeaderboardStanding
    counts = [func.count(getattr(standing, f"{metric.value}_rank")).label(metric.value) for metric in Metric]
    rows = (
        await session.execute(
            select(standing.period, *counts).where(standing.snapshot_id == snapshot_id).group_by(standing.period)
        )
    ).all()
    found = {row.period: {metric.value: int(getattr(row, metric.value)) for metric in Metric} for row in rows}
    return {period.value: found.get(period.value, {metric.value: 0 for metric in Metric}) for period in Period}


STANDINGS = typing.cast(Table, LeaderboardStanding.__table__)


PARTITION_PATTERN = f"^{LeaderboardStanding.__tablename__}_[0-9a-f]{{32}}$"


def partition_name(snapshot_id: uuid.UUID) -> str:
    """The table holding a snapshot's standings on PostgreSQL (a partition of the standings)."""
    return f"{LeaderboardStanding.__tablename__}_{snapshot_id.hex}"


async def _write_standings(session: AsyncSession, snapshot_id: uuid.UUID, query: CompoundSelect[Any]) -> None:
    """Insert a snapshot's standings: on PostgreSQL into a partition of their own, attached once
    full; on SQLite into the table."""
    if not list_partitioned(session):
        await session.execute(insert(STANDINGS).from_select(STANDING_COLUMNS, query))
        return
    name = partition_name(snapshot_id)
    partition = await create_partition_table(session, STANDINGS, name)
    await session.execute(insert(partition).from_select(STANDING_COLUMNS, query))
    await attach_partition(session, STANDINGS, name, snapshot_id)


async def _swap(session: AsyncSession, snapshot_id: uuid.UUID) -> None:
    """Make `snapshot_id` current, the current one previous, and delete the previous one."""
    snapshot = LeaderboardSnapshot
    stale = (await session.scalars(select(snapshot.id).where(snapshot.state == SnapshotState.PREVIOUS.value))).all()
    await session.execute(delete(snapshot).where(snapshot.state == SnapshotState.PREVIOUS.value))
    await session.execute(
        update(snapshot).where(snapshot.state == SnapshotState.CURRENT.value).values(state=SnapshotState.PREVIOUS.value)
    )
    await session.execute(update(snapshot).where(snapshot.id == snapshot_id).values(state=SnapshotState.CURRENT.value))
    if not list_partitioned(session):
        await session.execute(delete(LeaderboardStanding).where(LeaderboardStanding.snapshot_id.in_(stale)))
    # PostgreSQL: the stale snapshot's partition is dropped once this commits
    # (`_drop_stale_partitions`); dropping it here would lock every reader out until the commit.


async def _drop_stale_partitions(database: Database) -> None:
    """Drop the partitions of snapshots that are gone (PostgreSQL), detaching them without blocking
    the boards' readers: the one this recompute replaced, and any that a crash or a failure here
    left, attached or not. A failure is logged and left to the next recompute: the new snapshot
    is in place."""
    if database.dialect != "postgresql":
        return
    try:
        async with database.autocommit() as connection:
            # Tables first, then snapshots: a recompute that commits in between adds a snapshot
            # whose table the first list does not hold, so a new partition is never taken for a
            # stale one.
            tables = await partition_tables(connection, STANDINGS.name, PARTITION_PATTERN)
            kept = {partition_name(kept_id) for kept_id in (await connection.scalars(select(LeaderboardSnapshot.id)))}
            for name, state in tables.items():
                if name not in kept:
                    await drop_partition(connection, STANDINGS.name, name, state)
    except DBAPIError:
        log.warning("leaderboard.stale_partitions_not_dropped", exc_info=True)


async def recompute_rankings(
    database: Database,
    settings: Settings,
    now: datetime | None = None,
    *,
    before_swap: Callable[[], Awaitable[None]] | None = None,
) -> RecomputeResult:
    """Compute every board into a new snapshot and swap it in, in one transaction.

    Concurrent recomputes (the scheduler's and a superuser's) run one after the other.
    `before_swap` runs inside the transaction once the new snapshot is written (tests use it to
    read while a recompute is under way)."""
    now = now or utcnow()
    started = time.perf_counter()
    snapshot_id = uuid.uuid4()
    async with database.transaction() as session:
        await advisory_xact_lock(session, RECOMPUTE_LOCK)
        await set_local_bulk_query_settings(session, WORK_MEM_MB, eager_parallel=True)
        session.add(
            LeaderboardSnapshot(
                id=snapshot_id,
                state=SnapshotState.BUILDING.value,
                computed_at=now,
                today=now.date(),
                duration_ms=0,
                totals={},
            )
        )
        await session.flush()
        local_today = await _local_today_numbers(session, now)
        days = days_of(now)
        # Staged, so PostgreSQL groups the 10^7 rows in parallel: it never plans the SELECT of an
        # INSERT in parallel (a third of the recompute on 100,000 users).
        grouped = groupings(session, days.bounds, days.anchor)
        blocks = await create_temporary_table(session, "leaderboard_stage_blocks", grouped.blocks)
        recent = await create_temporary_table(session, "leaderboard_stage_recent", grouped.recent)
        query = standings_query(session, snapshot_id, days, local_today, settings, blocks, recent)
        await _write_standings(session, snapshot_id, query)
        await drop_temporary_table(session, blocks)
        await drop_temporary_table(session, recent)
        totals = await _totals(session, snapshot_id)
        if before_swap is not None:
            await before_swap()
        duration_ms = int((time.perf_counter() - started) * 1000)
        await session.execute(
            update(LeaderboardSnapshot)
            .where(LeaderboardSnapshot.id == snapshot_id)
            .values(totals=totals, duration_ms=duration_ms)
        )
        await _swap(session, snapshot_id)
    board_cache.clear()
    await _drop_stale_partitions(database)
    log.info("leaderboard.recomputed", snapshot_id=str(snapshot_id), duration_ms=duration_ms)
    return RecomputeResult(snapshot_id, now, now.date(), duration_ms, totals)
