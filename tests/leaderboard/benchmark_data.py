"""The community benchmarks' test data set and its pure-Python reference: users (time zones,
public, private, excluded, without usage) with usage_daily rows built directly, and the values,
percentiles and ranks the computation must give for them."""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from factory.declarations import LazyFunction
from sqlalchemy.ext.asyncio import AsyncSession

from codepulse.leaderboard.models import BenchmarkRange, LeaderboardExclusion
from codepulse.usage.models import UsageDaily
from codepulse.usage.streaks import streaks
from tests.factories import Account, MakeUser, ModelFactory

NOW = datetime(2026, 12, 3, 11, 0, tzinfo=UTC)  # 01:00 on 12-04 in Kiritimati, 23:00 on 12-02 at GMT-12
TODAY = NOW.date()
CACHE_MIN_TOKENS = 10_000
FRACTIONS = {"median": 0.5, "p75": 0.75, "p90": 0.9, "p99": 0.99}


class UsageDailyFactory(ModelFactory[UsageDaily]):
    class Meta:
        model = UsageDaily

    source = "claude-code"
    model = "claude-sonnet-4"
    input_tokens = 0
    output_tokens = 0
    cache_creation_5m_tokens = 0
    cache_creation_1h_tokens = 0
    cache_read_tokens = 0
    reasoning_tokens = 0
    cost_nanousd = 0
    records = 1
    unpriced_records = 0
    user_id = LazyFunction(uuid.uuid4)


@dataclass(frozen=True)
class Row:
    day: date
    source: str
    model: str
    input: int
    output: int
    cache_read: int
    cost: int
    cache_write: int = 0

    @property
    def tokens(self) -> int:
        return self.input + self.output + self.cache_read + self.cache_write


def d(month: int, day: int) -> date:
    return date(2026, month, day)


# name -> (timezone, public, excluded, rows)
DATA: dict[str, tuple[str, bool, bool, list[Row]]] = {
    "ada": (
        "UTC",
        True,
        False,
        # A gap on 11-30: the current streak is the last three days.
        [
            Row(d(m, n), "claude-code", "claude-sonnet-4", 1000, 500, 3000, 2_000_000)
            for m, n in ((11, 28), (11, 29), (12, 1), (12, 2), (12, 3))
        ],
    ),
    "bob": (
        "UTC",
        True,
        False,
        [Row(d(11, 20), "codex", "gpt-5", 200, 100, 0, 500_000), Row(d(12, 2), "codex", "gpt-5", 200, 100, 0, 500_000)],
    ),
    # Ahead of UTC: its local today (12-04) has usage, outside the windows (which end on 12-03).
    "cy": (
        "Pacific/Kiritimati",
        True,
        False,
        [Row(d(12, n), "claude-code", "claude-opus-4", 10_000, 2_000, 50_000, 30_000_000, 400) for n in (2, 3, 4)],
    ),
    # Two rows one day: one active day. No usage today nor yesterday: no streak.
    "dan": (
        "UTC",
        True,
        False,
        [
            Row(d(11, 30), "claude-code", "claude-sonnet-4", 3000, 1000, 0, 4_000_000),
            Row(d(12, 1), "claude-code", "claude-sonnet-4", 3000, 1000, 0, 4_000_000),
            Row(d(12, 1), "codex", "gpt-5", 1000, 1000, 0, 1_000_000),
        ],
    ),
    # Behind UTC: local today is 12-02, active: a streak of 2.
    "lee": (
        "Etc/GMT+12",
        True,
        False,
        [Row(d(12, n), "codex", "gpt-5", 700, 300, 9000, 800_000) for n in (1, 2)],
    ),
    "olga": ("UTC", True, False, [Row(d(9, 1), "claude-code", "claude-sonnet-4", 5, 5, 0, 10_000)]),
    "pat": ("UTC", False, False, [Row(d(12, 3), "claude-code", "claude-opus-4", 90_000, 9_000, 0, 99_000_000)]),
    "eve": ("UTC", True, True, [Row(d(12, 3), "claude-code", "claude-opus-4", 80_000, 8_000, 0, 88_000_000)]),
    "nia": ("UTC", True, False, []),
}

METRICS = ("tokens_per_active_day", "cost_per_active_day", "active_days", "streak", "cache_efficiency")


# --- the pure-Python reference ---------------------------------------------------------------


def reference_percentile(values: Sequence[float], fraction: float) -> float:
    """PostgreSQL's percentile_cont: linear interpolation at position fraction * (n - 1)."""
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    lower = math.floor(position)
    upper = min(lower + 1, len(ordered) - 1)
    return ordered[lower] + (ordered[upper] - ordered[lower]) * (position - lower)


def reference_rank(values: Sequence[float], mine: float) -> float:
    below = sum(1 for value in values if value < mine)
    equal = sum(1 for value in values if value == mine)
    return 100 * (below + equal / 2) / len(values)


def reference_values(name: str, range_: BenchmarkRange) -> dict[str, float | None] | None:
    timezone, _, _, rows = DATA[name]
    start = None if range_.days is None else TODAY - timedelta(days=range_.days - 1)
    in_window = [row for row in rows if row.day <= TODAY and (start is None or row.day >= start)]
    if not in_window:
        return None
    active_days = len({row.day for row in in_window})
    tokens = sum(row.tokens for row in in_window)
    read_base = sum(row.input + row.cache_read for row in in_window)
    local_today = NOW.astimezone(ZoneInfo(timezone)).date()
    return {
        "tokens_per_active_day": tokens / active_days,
        "cost_per_active_day": sum(row.cost for row in in_window) / active_days,
        "active_days": active_days,
        "streak": streaks({row.day for row in rows if row.day <= local_today}, local_today).current,
        "cache_efficiency": (
            sum(row.cache_read for row in in_window) / read_base if tokens >= CACHE_MIN_TOKENS and read_base else None
        ),
    }


def community(range_: BenchmarkRange) -> dict[str, dict[str, float | None]]:
    found = {}
    for name, (_, public, excluded, _) in DATA.items():
        values = reference_values(name, range_)
        if public and not excluded and values is not None:
            found[name] = values
    return found


def community_values(range_: BenchmarkRange, metric: str) -> list[float]:
    return [v[metric] for v in community(range_).values() if v[metric] is not None]  # type: ignore[misc]


async def add_usage(session: AsyncSession, user_id: uuid.UUID, rows: Sequence[Row]) -> None:
    for row in rows:
        UsageDailyFactory.create(
            user_id=user_id,
            day=row.day,
            source=row.source,
            model=row.model,
            input_tokens=row.input,
            output_tokens=row.output,
            cache_read_tokens=row.cache_read,
            cache_creation_5m_tokens=row.cache_write,
            cost_nanousd=row.cost,
        )
    await session.flush()


async def make_people(session: AsyncSession, make_user: MakeUser) -> dict[str, Account]:
    """Every user of DATA, signed in, with their usage and exclusions."""
    accounts = {}
    for name, (timezone, public, excluded, rows) in DATA.items():
        account = await make_user(name, timezone=timezone, profile_public=public)
        accounts[name] = account
        await add_usage(session, account.model.id, rows)
        if excluded:
            session.add(LeaderboardExclusion(user_id=account.model.id, reason="test", created_at=NOW))
    await session.flush()
    return accounts
