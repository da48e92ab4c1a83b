"""The leaderboard benchmark's database: created and dropped, and realistic users and daily usage
aggregates loaded into it with COPY.

Not a benchmark itself (see leaderboard.py). Rows are generated in Python, deterministically
from a seed, and streamed to PostgreSQL with asyncpg's `copy_records_to_table` while they are
generated (asyncpg sends its buffer as it fills, so PostgreSQL works on one core while Python
generates on the other). User ids are sorted and each user's rows go out in day order, so the
primary key index of usage_daily grows at its right edge instead of at random pages.

The shape (printed by `Shape.describe`):
* users in a few time zones; a share of them public; a share never synced anything;
* rows per active user from a heavy-tailed (log-normal) weight, scaled so the total is exact;
* each user's activity ends today or yesterday (local date) for most, long ago for the churned,
  and spans a stretch of the last year at the user's density: recent days are the densest;
* 1 to 3 (source, model) rows per active day out of the user's three favourite pairs;
* token sums per row from a per-user intensity tier times a per-day factor, cache reads
  dominant; the cost from the project's price table (nano-dollars); unpriced models cost 0.
"""

from __future__ import annotations

import asyncio
import gc
import math
import random
import secrets
import time
import uuid
from bisect import bisect
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from itertools import accumulate, islice
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from codepulse.usage.pricing import price_table

TIMEZONES = (
    ("UTC", 0.10),
    ("America/Los_Angeles", 0.22),
    ("America/New_York", 0.18),
    ("Europe/Berlin", 0.22),
    ("Asia/Kolkata", 0.12),
    ("Asia/Tokyo", 0.10),
    ("Australia/Sydney", 0.06),
)
# source -> (model key, weight); and a median user's day on one pair: records, input, output,
# 5-minute and 1-hour cache writes, cache reads, reasoning (part of output).
SOURCES = {
    "claude-code": ([("claude-sonnet-4-5", 0.6), ("claude-opus-4-5", 0.3), ("claude-haiku-4-5", 0.1)], 0.55),
    "codex": ([("gpt-5-1-codex", 0.5), ("gpt-5-codex", 0.3), ("gpt-5-1-codex-mini", 0.2)], 0.2),
    "gemini-cli": ([("gemini-2-5-pro", 0.5), ("gemini-3-pro-preview", 0.3), ("gemini-2-5-flash", 0.2)], 0.15),
    "opencode": ([("claude-sonnet-4-5", 0.5), ("glm-4-6", 0.3), ("qwen3-coder-local", 0.2)], 0.1),
}
MEDIAN_DAY = {
    "claude-code": (150, 15_000, 60_000, 400_000, 150_000, 12_000_000, 0),
    "codex": (80, 600_000, 40_000, 0, 0, 5_000_000, 20_000),
    "gemini-cli": (50, 500_000, 20_000, 0, 0, 2_000_000, 10_000),
    "opencode": (90, 300_000, 30_000, 0, 0, 3_000_000, 0),
}
TIERS = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)  # intensity multipliers, by log-normal draw
TEMPLATES_PER_POOL = 1024  # a power of 2: picked with getrandbits(10)
USAGE_COLUMNS = (
    "user_id", "day", "source", "model", "input_tokens", "output_tokens", "cache_creation_5m_tokens",
    "cache_creation_1h_tokens", "cache_read_tokens", "reasoning_tokens", "cost_nanousd", "records",
    "unpriced_records",
)  # fmt: skip
USER_COLUMNS = (
    "id", "email", "username", "name", "avatar_url", "password_hash", "email_verified_at", "is_superuser",
    "timezone", "profile_public", "created_at", "updated_at",
)  # fmt: skip
PICO_PER_NANO = 1000


# --- the database ----------------------------------------------------------------------------


@dataclass
class BenchDatabase:
    url: str  # postgresql+asyncpg://.../cp_bench_<random>
    admin_url: str
    name: str

    @classmethod
    def create(cls, server_url: str) -> BenchDatabase:
        admin = make_url(server_url)
        if not admin.drivername.startswith("postgresql"):
            raise ValueError(f"--database-url must name a PostgreSQL server, not {admin.drivername}")
        name = f"cp_bench_{secrets.token_hex(4)}"
        admin_url = admin.render_as_string(hide_password=False)
        asyncio.run(_admin(admin_url, f'CREATE DATABASE "{name}"'))
        return cls(admin.set(database=name).render_as_string(hide_password=False), admin_url, name)

    @property
    def dsn(self) -> str:
        return make_url(self.url).set(drivername="postgresql").render_as_string(hide_password=False)

    @classmethod
    def existing(cls, server_url: str, name: str) -> BenchDatabase:
        admin = make_url(server_url)
        admin_url = admin.render_as_string(hide_password=False)
        return cls(admin.set(database=name).render_as_string(hide_password=False), admin_url, name)

    def drop(self) -> None:
        asyncio.run(_admin(self.admin_url, f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))


async def _admin(admin_url: str, statement: str) -> None:
    engine = create_async_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            await connection.execute(text(statement))
    finally:
        await engine.dispose()


async def database_activity(database: BenchDatabase) -> tuple[int, int]:
    """(connections opened, transactions committed) on the database so far: pg_stat_database."""
    connection = await asyncpg.connect(database.dsn)
    try:
        await connection.execute("SELECT pg_stat_clear_snapshot()")
        row = await connection.fetchrow(
            "SELECT sessions, xact_commit FROM pg_stat_database WHERE datname = current_database()"
        )
        return int(row["sessions"]), int(row["xact_commit"])
    finally:
        await connection.close()


# --- the data --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    users: int = 100_000
    rows: int = 10_000_000
    public_share: float = 0.6
    inactive_share: float = 0.08  # accounts that never synced
    current_share: float = 0.7  # active users whose last active day is today or yesterday
    excluded: int = 12
    history_days: int = 365
    seed: int = 13

    def describe(self) -> str:
        zones = ", ".join(f"{name} {share:.0%}" for name, share in TIMEZONES)
        pairs = ", ".join(f"{source} {weight:.0%}" for source, (_, weight) in SOURCES.items())
        return (
            f"{self.users:,} users ({self.public_share:.0%} public, {self.inactive_share:.0%} never synced, "
            f"{self.excluded} excluded from the boards); {self.rows:,} usage_daily rows over the last "
            f"{self.history_days} days, {self.current_share:.0%} of active users active today or yesterday "
            f"(local), the others churned; 1-3 (source, model) rows per active day; time zones: {zones}; "
            f"favourite source: {pairs}; intensity tiers x{' x'.join(f'{t:g}' for t in TIERS)}; seed {self.seed}"
        )


@dataclass
class Plan:
    """One user's usage: where it ends, how many days, how many rows."""

    user_id: uuid.UUID
    timezone: str
    public: bool
    tier: int
    last: date
    span: int
    days: int
    rows: int
    pairs: tuple[tuple[str, str], ...]


@dataclass
class Users:
    plans: list[Plan]
    rows: list[tuple[Any, ...]]

    @property
    def active(self) -> list[Plan]:
        return [plan for plan in self.plans if plan.rows > 0]


class Picker:
    """A weighted choice, with the cumulative weights computed once (it runs 10^5-10^6 times)."""

    def __init__(self, weighted: Sequence[tuple[str, float]]) -> None:
        self.names = [name for name, _ in weighted]
        self.cumulative = list(accumulate(weight for _, weight in weighted))

    def __call__(self, rng: random.Random) -> str:
        return self.names[bisect(self.cumulative, rng.random() * self.cumulative[-1])]


PICK_ZONE = Picker(TIMEZONES)
PICK_SOURCE = Picker([(source, weight) for source, (_, weight) in SOURCES.items()])
PICK_MODEL = {source: Picker(models) for source, (models, _) in SOURCES.items()}


def _pairs(rng: random.Random) -> tuple[tuple[str, str], ...]:
    """Three distinct (source, model) pairs, the favourite first."""
    found: list[tuple[str, str]] = []
    while len(found) < 3:
        source = PICK_SOURCE(rng)
        pair = (source, PICK_MODEL[source](rng))
        if pair not in found:
            found.append(pair)
    return tuple(found)


def _row_targets(rng: random.Random, count: int, total: int) -> list[int]:
    weights = [rng.lognormvariate(0.0, 0.9) for _ in range(count)]
    scale = total / sum(weights)
    return [max(1, round(weight * scale)) for weight in weights]


def _as_int(value: uuid.UUID) -> int:
    return value.int


def plan_users(shape: Shape, now: datetime) -> Users:
    """Every user's row and usage plan; the plans' rows add up to shape.rows exactly (the rows a
    user cannot take, for lack of days, carry over to the next users)."""
    rng = random.Random(shape.seed)
    # Sorted as PostgreSQL sorts uuids (by their bytes, i.e. by their integer).
    ids = sorted((uuid.UUID(int=rng.getrandbits(128), version=4) for _ in range(shape.users)), key=_as_int)
    active_count = round(shape.users * (1 - shape.inactive_share))
    active = set(rng.sample(range(shape.users), active_count))
    plans: list[Plan] = []
    rows: list[tuple[Any, ...]] = []
    targets = _row_targets(rng, active_count, shape.rows)
    carry = shape.rows - sum(targets)  # what rounding lost or added, taken from the first users
    remaining = iter(targets)
    median = sorted(targets)[len(targets) // 2]
    today_in = {name: now.astimezone(ZoneInfo(name)).date() for name, _ in TIMEZONES}
    for index, user_id in enumerate(ids):
        zone = PICK_ZONE(rng)
        local_today = today_in[zone]
        public = rng.random() < shape.public_share
        plan = Plan(user_id, zone, public, 0, local_today, 0, 0, 0, _pairs(rng))
        if index in active:
            if rng.random() < shape.current_share:
                plan.last = local_today - timedelta(days=rng.choice((0, 0, 1)))
            else:
                plan.last = local_today - timedelta(days=rng.randint(2, shape.history_days - 30))
            window = shape.history_days - (local_today - plan.last).days
            target = next(remaining)
            # Heavier users are more intense too (the tier multiplies their tokens per day).
            spread = 3 + 0.8 * math.log(target / median) + rng.gauss(0, 0.9)
            plan.tier = min(len(TIERS) - 1, max(0, round(spread)))
            wanted = target + carry
            plan.rows = max(1, min(wanted, 3 * window))
            carry = wanted - plan.rows
            plan.days = min(window, max(math.ceil(plan.rows / 3), round(plan.rows / 1.65)))
            density = rng.uniform(0.15, 1.0)
            plan.span = min(window, max(plan.days, math.ceil(plan.days / density)))
        plans.append(plan)
        first_seen = datetime.combine(plan.last - timedelta(days=plan.span), datetime.min.time(), UTC)
        rows.append((
            user_id, f"dev{index:06d}@example.com", f"dev{index:06d}", f"Developer {index}",
            f"https://avatars.example.com/u/{index}" if index % 2 else None, None, first_seen, False, zone, public,
            first_seen, now,
        ))  # fmt: skip
    if carry:  # the last users were full: give it to the first ones with room
        for plan in plans:
            room = 3 * plan.days - plan.rows if plan.rows else 0
            taken = min(room, carry)
            plan.rows += taken
            carry -= taken
    return Users(plans, rows)


def users_history(users: Users) -> int:
    return max(plan.span for plan in users.plans) + 1


def _templates(rng: random.Random) -> dict[tuple[int, str, str], list[tuple[Any, ...]]]:
    """Per (tier, source, model): rows of plausible days but for user and day (source, model,
    token sums, cost, records, unpriced records)."""
    prices = price_table().prices
    pools: dict[tuple[int, str, str], list[tuple[Any, ...]]] = {}
    for tier, scale in enumerate(TIERS):
        for source, (models, _) in SOURCES.items():
            base = MEDIAN_DAY[source]
            for model, _ in models:
                price = prices.get(model)
                pool = []
                for _ in range(TEMPLATES_PER_POOL):
                    day = scale * rng.lognormvariate(0.0, 0.9)  # a light day or a marathon
                    records = max(1, round(base[0] * day))
                    tokens = [round(value * day * rng.lognormvariate(0.0, 0.25)) for value in base[1:]]
                    tokens[5] = min(tokens[5], tokens[1])  # reasoning is part of output
                    cost = 0
                    if price is not None:
                        rates = price.base
                        pico = (
                            tokens[0] * rates.input
                            + tokens[1] * rates.output
                            + tokens[2] * rates.cache_write_5m
                            + tokens[3] * rates.cache_write_1h
                            + tokens[4] * rates.cache_read
                        )
                        cost = pico // PICO_PER_NANO
                    pool.append((source, model, *tokens, cost, records, 0 if price is not None else records))
                pools[tier, source, model] = pool
    return pools


def usage_rows(users: Users, seed: int) -> Iterator[tuple[Any, ...]]:
    """usage_daily rows in primary-key order of user and day (the hot loop: ~10 M rows)."""
    rng = random.Random(seed + 1)
    pools = _templates(rng)
    getrandbits, random_ = rng.getrandbits, rng.random
    first = min(plan.last for plan in users.plans) - timedelta(days=users_history(users))
    calendar = [first + timedelta(days=i) for i in range((max(p.last for p in users.plans) - first).days + 1)]
    for plan in users.plans:
        if not plan.rows:
            continue
        last = (plan.last - first).days
        per_day = [1] * plan.days
        for slot in rng.sample(range(2 * plan.days), plan.rows - plan.days):
            per_day[slot % plan.days] += 1
        mine = [pools[(plan.tier, *pair)] for pair in plan.pairs]
        uid = (plan.user_id,)
        offsets = sorted(rng.sample(range(plan.span), plan.days), reverse=True)
        for offset, count in zip(offsets, per_day, strict=True):
            head = (*uid, calendar[last - offset])
            start = 0 if random_() < 0.7 else 1 + getrandbits(1)  # usually the favourite pair first
            for turn in range(count):
                yield head + mine[(start + turn) % 3][getrandbits(10)]


@dataclass
class LoadReport:
    users_seconds: float
    usage_seconds: float
    vacuum_seconds: float
    usage_rows: int
    excluded: list[uuid.UUID]


async def load(connection: Any, shape: Shape, now: datetime, chunk_users: int = 10_000) -> LoadReport:
    """COPY users, their usage and a few exclusions in; then VACUUM ANALYZE, as autovacuum would.

    The foreign keys' per-row checks are skipped for the load (`session_replication_role =
    replica`, the usual bulk-load switch; the generated rows satisfy them by construction).
    The cyclic garbage collector is off meanwhile: millions of new tuples would trigger full
    collections that cost more than generating them (they hold no cycles)."""
    gc.disable()
    try:
        return await _load(connection, shape, now, chunk_users)
    finally:
        gc.enable()


async def _load(connection: Any, shape: Shape, now: datetime, chunk_users: int) -> LoadReport:
    started = time.perf_counter()
    users = plan_users(shape, now)
    await connection.execute("SET session_replication_role = replica")
    await connection.copy_records_to_table("users", records=users.rows, columns=list(USER_COLUMNS))
    users_seconds = time.perf_counter() - started
    started = time.perf_counter()
    rows = usage_rows(users, shape.seed)
    copied = 0
    planned = sum(plan.rows for plan in users.plans)
    for start in range(0, len(users.plans), chunk_users):
        count = sum(plan.rows for plan in users.plans[start : start + chunk_users])
        await connection.copy_records_to_table("usage_daily", records=islice(rows, count), columns=list(USAGE_COLUMNS))
        copied += count
    if copied != planned:
        raise RuntimeError(f"copied {copied:,} usage rows, planned {planned:,}")
    # A handful of exclusions among the heaviest public users (where abuse is usually found).
    heavy = sorted((plan for plan in users.plans if plan.public and plan.rows), key=lambda p: (-p.tier, -p.rows))
    excluded = [plan.user_id for plan in heavy[: shape.excluded]]
    await connection.copy_records_to_table(
        "leaderboard_exclusions",
        records=[(user_id, "benchmark: reported for scripted usage", None, now) for user_id in excluded],
        columns=["user_id", "reason", "excluded_by", "created_at"],
    )
    await connection.execute("SET session_replication_role = DEFAULT")
    usage_seconds = time.perf_counter() - started
    started = time.perf_counter()
    await connection.execute("VACUUM (ANALYZE) users, usage_daily, leaderboard_exclusions")
    return LoadReport(users_seconds, usage_seconds, time.perf_counter() - started, copied, excluded)


async def describe_data(connection: Any, now: datetime) -> list[str]:
    """What was loaded, measured in the database (one pass over usage_daily)."""
    today = now.date()
    row = await connection.fetchrow(
        """
        SELECT count(*) AS rows, count(DISTINCT user_id) AS users, min(day) AS first, max(day) AS last,
               count(*) FILTER (WHERE day > $1::date - 7) AS rows_7d,
               count(DISTINCT user_id) FILTER (WHERE day > $1::date - 7) AS users_7d,
               count(DISTINCT user_id) FILTER (WHERE day > $1::date - 30) AS users_30d,
               sum(input_tokens + output_tokens + cache_creation_5m_tokens + cache_creation_1h_tokens
                   + cache_read_tokens)::float8 AS tokens,
               sum(cache_read_tokens)::float8 AS cache_read, sum(cost_nanousd)::float8 AS cost
        FROM usage_daily
        """,
        today,
    )
    per_day = await connection.fetchrow(
        "SELECT avg(n)::float8 AS mean, max(n) AS most FROM (SELECT count(*) AS n FROM usage_daily "
        "GROUP BY user_id, day) AS d"
    )
    active_days = await connection.fetchrow(
        "SELECT percentile_disc(ARRAY[0.5, 0.9, 0.99]) WITHIN GROUP (ORDER BY n) AS p, max(n) AS most "
        "FROM (SELECT count(DISTINCT day) AS n FROM usage_daily GROUP BY user_id) AS u"
    )
    public = await connection.fetchval("SELECT count(*) FROM users WHERE profile_public")
    size = await connection.fetchval("SELECT pg_size_pretty(pg_total_relation_size('usage_daily'))")
    p50, p90, p99 = active_days["p"]
    return [
        f"usage_daily: {row['rows']:,} rows ({size} with its index) of {row['users']:,} users, "
        f"{row['first']} .. {row['last']}; {per_day['mean']:.2f} rows per active user-day (max {per_day['most']})",
        f"active days per user: median {p50}, p90 {p90}, p99 {p99}, max {active_days['most']}; "
        f"users active in the last 7 days {row['users_7d']:,} ({row['rows_7d']:,} rows), 30 days {row['users_30d']:,}",
        f"tokens {row['tokens']:.3e} (cache reads {row['cache_read'] / row['tokens']:.0%}), "
        f"cost ${row['cost'] / 1e9:,.0f}; public profiles {public:,}",
    ]
