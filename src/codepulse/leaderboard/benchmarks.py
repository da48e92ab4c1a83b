"""The community benchmarks' computation (the hourly job `leaderboard.benchmarks`).

For each range (`7d`, `30d`, `all`: windows of UTC dates ending on now's UTC date, compared with
the aggregates' local days) and each active user (a usage row in the window), the values

    tokens_per_active_day   tokens (input + output + cache writes + cache reads) / active days
    cost_per_active_day     cost / active days (nano-dollars; USD in the API)
    active_days             local dates with usage in the window
    streak                  the current streak: consecutive active days ending on the user's
                            local today, or yesterday when today has no usage yet (whatever the
                            range; as codepulse.usage.streaks counts it)
    cache_efficiency        cache reads / (input + cache reads); null below
                            LEADERBOARD_CACHE_MIN_TOKENS tokens in the window

and each value's percentile within the public community (see `BenchmarkMember`); then the
community's distribution of each value (count, mean, median, p75, p90, p99) and its tokens and
cost per model and per source. The community is the public profiles not excluded from the
boards: only they make the published figures. Everything is set-based SQL, a few statements in
one transaction, so readers see the previous computation or the new one, never a mix.
"""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import (
    CompoundSelect,
    Date,
    Float,
    FromClause,
    Select,
    String,
    Uuid,
    and_,
    case,
    cast,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    union_all,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.selectable import CTE

from codepulse.auth import service as auth_service
from codepulse.clock import utcnow
from codepulse.config import Settings
from codepulse.db import Database, advisory_xact_lock, day_number, percentiles
from codepulse.leaderboard.models import (
    BenchmarkMember,
    BenchmarkMetric,
    BenchmarkRange,
    BenchmarkShare,
    BenchmarkSnapshot,
    BenchmarkStanding,
    BenchmarkStat,
    LeaderboardExclusion,
)
from codepulse.usage import service as usage_service

log = structlog.get_logger("codepulse.leaderboard")

LOCK_NAME = "leaderboard.benchmarks"
# The published percentiles: column of BenchmarkStat -> fraction.
FRACTIONS = {"median": 0.5, "p75": 0.75, "p90": 0.9, "p99": 0.99}
SHARE_KINDS = ("model", "source")


def window(range_: BenchmarkRange, today: date) -> tuple[date | None, date]:
    """The range's first and last UTC dates (no first date for `all`)."""
    days = range_.days
    return (None if days is None else today - timedelta(days=days - 1)), today


async def compute_benchmarks(database: Database, settings: Settings, now: datetime | None = None) -> None:
    """Compute every range's benchmarks as of `now` and make them the current ones."""
    now = now or utcnow()
    today = now.astimezone(UTC).date()
    started = time.perf_counter()
    async with database.transaction() as session:
        # Two computations at once (a manual run beside the job) would each delete the other's.
        await advisory_xact_lock(session, LOCK_NAME)
        snapshot = BenchmarkSnapshot(id=uuid.uuid4(), computed_at=now, today=today, duration_ms=0, community={})
        session.add(snapshot)
        await session.flush()
        local_todays = await _local_todays(session, now)
        members = _members(snapshot.id, today, local_todays, settings.LEADERBOARD_CACHE_MIN_TOKENS)
        await session.execute(insert(BenchmarkMember).from_select(list(members.selected_columns.keys()), members))
        snapshot.community = await _community_sizes(session, snapshot.id)
        stats = _stats(session, snapshot.id)
        await session.execute(insert(BenchmarkStat).from_select(list(stats.selected_columns.keys()), stats))
        shares = _shares(snapshot.id, today)
        await session.execute(insert(BenchmarkShare).from_select(list(shares.selected_columns.keys()), shares))
        await _keep_previous_only(session, snapshot)
        snapshot.duration_ms = round((time.perf_counter() - started) * 1000)
    log.info("leaderboard.benchmarks_computed", today=today.isoformat(), duration_ms=snapshot.duration_ms)


async def _keep_previous_only(session: AsyncSession, snapshot: BenchmarkSnapshot) -> None:
    """Delete every computation but this one and the one before it. The previous one stays a
    computation longer: a reader that found it just before this commit reads its figures in
    further statements (the public endpoint's three), which must still find them."""
    previous = (
        select(BenchmarkSnapshot.id)
        .where(BenchmarkSnapshot.id != snapshot.id)
        .order_by(BenchmarkSnapshot.computed_at.desc())
        .limit(1)
    )
    keep = [snapshot.id, *(await session.scalars(previous)).all()]
    for table in (BenchmarkMember, BenchmarkStat, BenchmarkShare):
        await session.execute(delete(table).where(table.snapshot_id.not_in(keep)))
    await session.execute(delete(BenchmarkSnapshot).where(BenchmarkSnapshot.id.not_in(keep)))


async def _local_todays(session: AsyncSession, now: datetime) -> dict[date, list[str]]:
    """Users' local today by time zone name: one date per distinct zone, not per user."""
    profiles = auth_service.user_profiles().subquery()
    names = (await session.scalars(select(profiles.c.timezone).distinct())).all()
    by_date: dict[date, list[str]] = defaultdict(list)
    for name in names:
        by_date[now.astimezone(usage_service.zone(name)).date()].append(name)
    return dict(by_date)


def _ranges(today: date) -> CTE:
    """(range, start): one row per range; start is null for `all`."""
    rows = [
        select(literal(range_.value, String).label("range"), literal(window(range_, today)[0], Date).label("start"))
        for range_ in BenchmarkRange
    ]
    return union_all(*rows).cte("ranges")


def _in_window(day: Any, ranges: FromClause, today: date) -> Any:
    return and_(day <= literal(today, Date), or_(ranges.c.start.is_(None), day >= ranges.c.start))


def _community() -> tuple[FromClause, FromClause]:
    """The users table's public flag and the exclusions, to join on user_id."""
    return auth_service.user_profiles().subquery("profiles"), LeaderboardExclusion.__table__


def _members(
    snapshot_id: uuid.UUID, today: date, local_todays: dict[date, list[str]], cache_min_tokens: int
) -> Select[Any]:
    """Every active user's values and percentiles, per range: BenchmarkMember's rows."""
    daily = usage_service.daily_usage().subquery("daily")
    days = (
        select(
            daily.c.user_id,
            daily.c.day,
            func.sum(daily.c.tokens).label("tokens"),
            func.sum(daily.c.input_tokens).label("input_tokens"),
            func.sum(daily.c.cache_read_tokens).label("cache_read_tokens"),
            func.sum(daily.c.cost_nanousd).label("cost"),
        )
        .group_by(daily.c.user_id, daily.c.day)
        .cte("days")
    )
    ranges = _ranges(today)
    totals = (
        select(
            ranges.c.range,
            days.c.user_id,
            cast(func.sum(days.c.tokens), Float).label("tokens"),
            cast(func.sum(days.c.input_tokens), Float).label("input_tokens"),
            cast(func.sum(days.c.cache_read_tokens), Float).label("cache_read_tokens"),
            cast(func.sum(days.c.cost), Float).label("cost"),
            func.count().label("active_days"),
        )
        .select_from(days.join(ranges, _in_window(days.c.day, ranges, today)))
        .group_by(ranges.c.range, days.c.user_id)
        .subquery("totals")
    )
    streaks = _streaks(days, local_todays, today)
    profiles, exclusions = _community()
    read_base = totals.c.input_tokens + totals.c.cache_read_tokens
    valued = (
        select(
            totals.c.range,
            totals.c.user_id,
            case(
                (exclusions.c.user_id.is_not(None), BenchmarkStanding.EXCLUDED.value),
                (profiles.c.profile_public, BenchmarkStanding.PUBLIC.value),
                else_=BenchmarkStanding.PRIVATE.value,
            ).label("standing"),
            (totals.c.tokens / totals.c.active_days).label(BenchmarkMetric.TOKENS_PER_ACTIVE_DAY),
            (totals.c.cost / totals.c.active_days).label(BenchmarkMetric.COST_PER_ACTIVE_DAY),
            totals.c.active_days.label(BenchmarkMetric.ACTIVE_DAYS),
            func.coalesce(streaks.c.streak, 0).label(BenchmarkMetric.STREAK),
            case(
                (and_(totals.c.tokens >= cache_min_tokens, read_base > 0), totals.c.cache_read_tokens / read_base),
                else_=None,
            ).label(BenchmarkMetric.CACHE_EFFICIENCY),
        )
        .select_from(
            totals.join(profiles, profiles.c.user_id == totals.c.user_id)
            .outerjoin(exclusions, exclusions.c.user_id == totals.c.user_id)
            .outerjoin(streaks, streaks.c.user_id == totals.c.user_id)
        )
        .subquery("valued")
    )
    return select(
        literal(snapshot_id, Uuid).label("snapshot_id"),
        valued.c.range,
        valued.c.user_id,
        valued.c.standing,
        *(valued.c[metric] for metric in BenchmarkMetric),
        *(_percentile(valued, metric).label(f"{metric}_percentile") for metric in BenchmarkMetric),
    )


def _percentile(valued: FromClause, metric: BenchmarkMetric) -> Any:
    """The share of the range's community (public, non-null values) whose value is below this
    one, ties counted half, in percent: 100 * (below + equal / 2) / community. Window sums of a
    0/1 community flag, so private users are placed without being counted (excluded ones get
    none)."""
    value = valued.c[metric]
    counted = case(
        (and_(valued.c.standing == BenchmarkStanding.PUBLIC.value, value.is_not(None)), 1.0),
        else_=0.0,
    )
    # Default frame (RANGE ... CURRENT ROW): every row up to this value, its peers included.
    at_or_below = func.sum(counted).over(partition_by=valued.c.range, order_by=value)
    equal = func.sum(counted).over(partition_by=[valued.c.range, value])
    community = func.sum(counted).over(partition_by=valued.c.range)
    return case(
        (
            and_(value.is_not(None), valued.c.standing != BenchmarkStanding.EXCLUDED.value, community > 0),
            (at_or_below - equal / 2) * 100 / community,
        ),
        else_=None,
    )


def _streaks(days: CTE, local_todays: dict[date, list[str]], today: date) -> FromClause:
    """(user_id, streak) of every user with a day up to their local today (gaps and islands:
    along a user's days, newest first, day number + row number is constant within a run)."""
    profiles = auth_service.user_profiles().subquery("streak_profiles")
    others = [
        (profiles.c.timezone.in_(names), literal(local, Date))
        for local, names in local_todays.items()
        if local != today
    ]
    local_today = case(*others, else_=literal(today, Date)) if others else literal(today, Date)
    dated = (
        select(days.c.user_id, days.c.day, local_today.label("local_today"))
        .join_from(days, profiles, profiles.c.user_id == days.c.user_id)
        .where(days.c.day <= local_today)
        .subquery("dated")
    )
    ordered = select(
        dated.c.user_id,
        dated.c.local_today,
        (
            day_number(dated.c.day) + func.row_number().over(partition_by=dated.c.user_id, order_by=dated.c.day.desc())
        ).label("run"),
        func.max(dated.c.day).over(partition_by=dated.c.user_id).label("last_day"),
    ).subquery("ordered")
    last = day_number(ordered.c.last_day)
    in_current_run = and_(ordered.c.run == last + 1, last >= day_number(ordered.c.local_today) - 1)
    return (
        select(ordered.c.user_id, func.sum(case((in_current_run, 1), else_=0)).label("streak"))
        .group_by(ordered.c.user_id)
        .subquery("streaks")
    )


async def _community_sizes(session: AsyncSession, snapshot_id: uuid.UUID) -> dict[str, int]:
    counts = await session.execute(
        select(BenchmarkMember.range, func.count())
        .where(BenchmarkMember.snapshot_id == snapshot_id, BenchmarkMember.standing == BenchmarkStanding.PUBLIC.value)
        .group_by(BenchmarkMember.range)
    )
    sizes = {range_.value: 0 for range_ in BenchmarkRange}
    sizes.update(dict(counts.all()))
    return sizes


def _stats(session: AsyncSession, snapshot_id: uuid.UUID) -> Select[Any]:
    """The community's distribution of every metric per range, from the members just stored."""
    members = BenchmarkMember.__table__
    values = union_all(
        *(
            select(
                members.c.range, literal(metric.value, String).label("metric"), members.c[metric].label("value")
            ).where(members.c.snapshot_id == snapshot_id, members.c.standing == BenchmarkStanding.PUBLIC.value)
            for metric in BenchmarkMetric
        )
    ).subquery("metric_values")
    stats = percentiles(session, values, "value", fractions=FRACTIONS, group_by=("range", "metric")).subquery(
        "distribution"
    )
    return select(
        literal(snapshot_id, Uuid).label("snapshot_id"),
        stats.c.range,
        stats.c.metric,
        stats.c.count,
        stats.c.mean,
        *(stats.c[name] for name in FRACTIONS),
    )


def _shares(snapshot_id: uuid.UUID, today: date) -> CompoundSelect[Any]:
    """The community's tokens and cost per model and per source, per range."""
    daily = usage_service.daily_usage().subquery("share_daily")
    ranges = _ranges(today)
    profiles, exclusions = _community()
    source = (
        daily.join(ranges, _in_window(daily.c.day, ranges, today))
        .join(profiles, profiles.c.user_id == daily.c.user_id)
        .outerjoin(exclusions, exclusions.c.user_id == daily.c.user_id)
    )
    community = and_(profiles.c.profile_public.is_(True), exclusions.c.user_id.is_(None))
    per_kind = [
        select(
            literal(snapshot_id, Uuid).label("snapshot_id"),
            ranges.c.range,
            literal(kind, String).label("kind"),
            daily.c[kind].label("name"),
            func.sum(daily.c.tokens).label("tokens"),
            func.sum(daily.c.cost_nanousd).label("cost"),
        )
        .select_from(source)
        .where(community)
        .group_by(ranges.c.range, daily.c[kind])
        for kind in SHARE_KINDS
    ]
    return union_all(*per_kind)
