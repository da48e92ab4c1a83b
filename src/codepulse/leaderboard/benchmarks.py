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
from dataclasses import dataclass
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
    distinct,
    exists,
    func,
    insert,
    literal,
    select,
    union_all,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.selectable import CTE

from codepulse.auth import service as auth_service
from codepulse.clock import utcnow
from codepulse.config import Settings
from codepulse.db import Database, add_days, advisory_xact_lock, percentiles
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
        calendar = await _Calendar.of(session, now)
        members = _members(snapshot.id, calendar, settings.LEADERBOARD_CACHE_MIN_TOKENS)
        await session.execute(insert(BenchmarkMember).from_select(list(members.selected_columns.keys()), members))
        snapshot.community = await _community_sizes(session, snapshot.id)
        stats = _stats(session, snapshot.id)
        await session.execute(insert(BenchmarkStat).from_select(list(stats.selected_columns.keys()), stats))
        shares = _shares(snapshot.id, calendar)
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


@dataclass(frozen=True)
class _Calendar:
    """The computation's dates: UTC today (the windows' end) and each time zone's local today."""

    today: date
    # Local today -> the zones whose local today it is, for zones where it is not `today`.
    elsewhere: dict[date, list[str]]

    @classmethod
    async def of(cls, session: AsyncSession, now: datetime) -> _Calendar:
        # One date per distinct zone name, not per user.
        profiles = auth_service.user_profiles().subquery()
        today = now.astimezone(UTC).date()
        elsewhere: dict[date, list[str]] = defaultdict(list)
        for name in (await session.scalars(select(profiles.c.timezone).distinct())).all():
            local = now.astimezone(usage_service.zone(name)).date()
            if local != today:
                elsewhere[local].append(name)
        return cls(today, dict(elsewhere))

    def local_today(self, timezone: Any, days_before: int = 0) -> Any:
        """A user's local today (or a day `days_before` it), from their time zone column."""
        shift = timedelta(days=days_before)
        whens = [(timezone.in_(names), literal(local - shift, Date)) for local, names in self.elsewhere.items()]
        default = literal(self.today - shift, Date)
        return case(*whens, else_=default) if whens else default

    def in_range(self, day: Any, range_: BenchmarkRange) -> Any:
        start, end = window(range_, self.today)
        return day <= literal(end, Date) if start is None else day.between(literal(start, Date), literal(end, Date))


def _community() -> tuple[FromClause, FromClause]:
    """The users' profiles and the exclusions, to join on user_id."""
    return auth_service.user_profiles().subquery("profiles"), LeaderboardExclusion.__table__


def _run_starts(calendar: _Calendar) -> FromClause:
    """(user_id, run_start): each user's latest active day, up to their local today, whose day
    before has no usage: where their latest run of consecutive days starts. An anti-join on the
    daily aggregates' key instead of a window over each user's whole history."""
    usage = usage_service.daily_usage().subquery("run_usage")
    before = usage_service.daily_usage().subquery("run_day_before")
    profiles = auth_service.user_profiles().subquery("run_profiles")
    starts_a_run = ~exists().where(before.c.user_id == usage.c.user_id, before.c.day == add_days(usage.c.day, -1))
    return (
        select(usage.c.user_id, func.max(usage.c.day).label("run_start"))
        .join_from(usage, profiles, profiles.c.id == usage.c.user_id)
        .where(usage.c.day <= calendar.local_today(profiles.c.timezone), starts_a_run)
        .group_by(usage.c.user_id)
        .subquery("run_starts")
    )


def _per_user(calendar: _Calendar) -> CTE:
    """One row per user with usage: per range i, the sums (`tokens_i`, `input_i`, `cache_read_i`,
    `cost_i`) and active days (`days_i`); and `streak`, the days of their latest run when it
    reaches their local today or yesterday. One pass over the daily aggregates."""
    usage = usage_service.daily_usage().subquery("usage")
    profiles = auth_service.user_profiles().subquery("user_profiles")
    starts = _run_starts(calendar)
    local_today = calendar.local_today(profiles.c.timezone)
    columns: list[Any] = [usage.c.user_id]
    for index, range_ in enumerate(BenchmarkRange):
        inside = calendar.in_range(usage.c.day, range_)
        for name, column in (
            ("tokens", usage.c.tokens),
            ("input", usage.c.input_tokens),
            ("cache_read", usage.c.cache_read_tokens),
            ("cost", usage.c.cost_nanousd),
        ):
            columns.append(cast(func.sum(case((inside, column), else_=0)), Float).label(f"{name}_{index}"))
        columns.append(func.count(distinct(case((inside, usage.c.day)))).label(f"days_{index}"))
    in_run = and_(usage.c.day >= starts.c.run_start, usage.c.day <= local_today)
    recent = usage.c.day.between(calendar.local_today(profiles.c.timezone, days_before=1), local_today)
    run_days = func.count(distinct(case((in_run, usage.c.day))))
    columns.append(case((func.max(case((recent, 1), else_=0)) == 1, run_days), else_=0).label("streak"))
    return (
        select(*columns)
        .select_from(
            usage.join(profiles, profiles.c.id == usage.c.user_id).outerjoin(
                starts, starts.c.user_id == usage.c.user_id
            )
        )
        .group_by(usage.c.user_id)
        .cte("per_user")
    )


def _members(snapshot_id: uuid.UUID, calendar: _Calendar, cache_min_tokens: int) -> Select[Any]:
    """Every active user's values and percentiles, per range: BenchmarkMember's rows."""
    per_user = _per_user(calendar)
    totals = union_all(
        *(
            select(
                literal(range_.value, String).label("range"),
                per_user.c.user_id,
                per_user.c.streak,
                *(per_user.c[f"{name}_{index}"].label(name) for name in ("tokens", "input", "cache_read", "cost")),
                per_user.c[f"days_{index}"].label("active_days"),
            ).where(per_user.c[f"days_{index}"] > 0)
            for index, range_ in enumerate(BenchmarkRange)
        )
    ).subquery("totals")
    profiles, exclusions = _community()
    read_base = totals.c.input + totals.c.cache_read
    days = cast(totals.c.active_days, Float)
    valued = (
        select(
            totals.c.range,
            totals.c.user_id,
            case(
                (exclusions.c.user_id.is_not(None), BenchmarkStanding.EXCLUDED.value),
                (profiles.c.profile_public, BenchmarkStanding.PUBLIC.value),
                else_=BenchmarkStanding.PRIVATE.value,
            ).label("standing"),
            (totals.c.tokens / days).label(BenchmarkMetric.TOKENS_PER_ACTIVE_DAY),
            (totals.c.cost / days).label(BenchmarkMetric.COST_PER_ACTIVE_DAY),
            totals.c.active_days.label(BenchmarkMetric.ACTIVE_DAYS),
            totals.c.streak.label(BenchmarkMetric.STREAK),
            case(
                (and_(totals.c.tokens >= cache_min_tokens, read_base > 0), totals.c.cache_read / read_base),
                else_=None,
            ).label(BenchmarkMetric.CACHE_EFFICIENCY),
        )
        .select_from(
            totals.join(profiles, profiles.c.id == totals.c.user_id).outerjoin(
                exclusions, exclusions.c.user_id == totals.c.user_id
            )
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


def _shares(snapshot_id: uuid.UUID, calendar: _Calendar) -> CompoundSelect[Any]:
    """The community's tokens and cost per model and per source, per range: one pass over the
    daily aggregates per kind, every range summed at once."""
    usage = usage_service.daily_usage().subquery("share_usage")
    profiles, exclusions = _community()
    selects = []
    for kind in SHARE_KINDS:
        columns: list[Any] = [usage.c[kind].label("name")]
        for index, range_ in enumerate(BenchmarkRange):
            inside = calendar.in_range(usage.c.day, range_)
            columns += [
                func.sum(case((inside, usage.c.tokens), else_=0)).label(f"tokens_{index}"),
                func.sum(case((inside, usage.c.cost_nanousd), else_=0)).label(f"cost_{index}"),
                func.count(case((inside, 1))).label(f"rows_{index}"),
            ]
        sums = (
            select(*columns)
            .select_from(
                usage.join(profiles, profiles.c.id == usage.c.user_id).outerjoin(
                    exclusions, exclusions.c.user_id == usage.c.user_id
                )
            )
            .where(profiles.c.profile_public.is_(True), exclusions.c.user_id.is_(None))
            .group_by(usage.c[kind])
            .cte(f"{kind}_sums")
        )
        selects += [
            select(
                literal(snapshot_id, Uuid).label("snapshot_id"),
                literal(range_.value, String).label("range"),
                literal(kind, String).label("kind"),
                sums.c.name,
                sums.c[f"tokens_{index}"].label("tokens"),
                sums.c[f"cost_{index}"].label("cost"),
            ).where(sums.c[f"rows_{index}"] > 0)
            for index, range_ in enumerate(BenchmarkRange)
        ]
    return union_all(*selects)
