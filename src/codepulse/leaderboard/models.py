"""Leaderboard snapshots (every period x metric, computed together and swapped in at once),
accounts excluded from every board, and the community benchmarks.

A snapshot's standings hold one row per (period, user with usage in the period's window): the
user's value on every metric and, for public profiles, their global rank and position (the
rank's unique, deterministic order, used for keyset pages). Organization boards rank the same
rows among an organization's members when they are read.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    Float,
    ForeignKey,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from codepulse.db import Base, UUIDPrimaryKey


class Period(StrEnum):
    DAY = "day"
    WEEK = "week"
    MONTH = "month"
    ALL = "all"
    ROLLING_7D = "7d"
    ROLLING_30D = "30d"


class Metric(StrEnum):
    TOKENS = "tokens"
    COST = "cost"
    ACTIVE_DAYS = "active_days"
    STREAK = "streak"
    CACHE_EFFICIENCY = "cache_efficiency"


class SnapshotState(StrEnum):
    BUILDING = "building"
    CURRENT = "current"
    PREVIOUS = "previous"


class LeaderboardSnapshot(UUIDPrimaryKey, Base):
    """One computation of every board. At rest there is one `current` and at most one `previous`
    (kept for rank changes); a `building` one is invisible until its transaction commits."""

    __tablename__ = "leaderboard_snapshots"

    state: Mapped[str] = mapped_column(String(16))
    computed_at: Mapped[datetime]
    # The UTC date the windows were computed for.
    today: Mapped[date] = mapped_column(Date)
    duration_ms: Mapped[int] = mapped_column(Integer)
    # {period: {metric: number of ranked public profiles}}
    totals: Mapped[dict[str, Any]] = mapped_column(JSON)


class LeaderboardStanding(Base):
    __tablename__ = "leaderboard_standings"
    __table_args__ = (
        PrimaryKeyConstraint("snapshot_id", "period", "user_id"),
        # A board's pages, by position: ranked rows only (private profiles have no position).
        *(
            Index(
                f"ix_leaderboard_standings_{metric}",
                "snapshot_id",
                "period",
                f"{metric}_position",
                postgresql_where=text(f"{metric}_position IS NOT NULL"),
                sqlite_where=text(f"{metric}_position IS NOT NULL"),
            )
            for metric in ("tokens", "cost", "active_days", "streak", "cache_efficiency")
        ),
        # One partition per snapshot on PostgreSQL (`leaderboard_standings_<snapshot hex>`): a
        # recompute fills a bare table, attaches it (its indexes built in bulk) and drops the stale
        # snapshot's partition, instead of updating six indexes row by row and deleting the rows.
        {"postgresql_partition_by": "LIST (snapshot_id)"},
    )

    # No foreign keys, so a recompute does not pay a check per row: standings are written only
    # with their snapshot, in its transaction, and the swap deletes a dropped snapshot's own;
    # reads join users, so a deleted account drops out at once.
    snapshot_id: Mapped[uuid.UUID]
    # Byte order on PostgreSQL: every index starts with it, and the locale's comparison cost more.
    period: Mapped[str] = mapped_column(String(8).with_variant(String(8, collation="C"), "postgresql"))
    user_id: Mapped[uuid.UUID]
    public: Mapped[bool] = mapped_column(Boolean)
    tokens: Mapped[int] = mapped_column(BigInteger)
    cost: Mapped[int] = mapped_column(BigInteger)  # nano-dollars
    active_days: Mapped[int] = mapped_column(Integer)
    streak: Mapped[int] = mapped_column(Integer)
    # Null below the minimum volume (LEADERBOARD_CACHE_MIN_TOKENS).
    cache_efficiency: Mapped[float | None] = mapped_column(Float)
    tokens_rank: Mapped[int | None] = mapped_column(Integer)
    tokens_position: Mapped[int | None] = mapped_column(Integer)
    cost_rank: Mapped[int | None] = mapped_column(Integer)
    cost_position: Mapped[int | None] = mapped_column(Integer)
    active_days_rank: Mapped[int | None] = mapped_column(Integer)
    active_days_position: Mapped[int | None] = mapped_column(Integer)
    streak_rank: Mapped[int | None] = mapped_column(Integer)
    streak_position: Mapped[int | None] = mapped_column(Integer)
    cache_efficiency_rank: Mapped[int | None] = mapped_column(Integer)
    cache_efficiency_position: Mapped[int | None] = mapped_column(Integer)


class LeaderboardExclusion(Base):
    """An account a superuser keeps off every board (abuse, test accounts)."""

    __tablename__ = "leaderboard_exclusions"

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    reason: Mapped[str | None] = mapped_column(String(500))
    excluded_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime]


# --- community benchmarks ----------------------------------------------------------------------
# One computation (hourly) of every range: the published figures of the public community, and
# every active user's values and percentiles (read by GET /benchmarks/me with one key lookup).
# Readers use the newest snapshot. A computation inserts its snapshot and deletes all but it and
# the previous one in one transaction (the previous one for readers that started on it).


class BenchmarkRange(StrEnum):
    D7 = "7d"
    D30 = "30d"
    ALL = "all"

    @property
    def days(self) -> int | None:
        return None if self is BenchmarkRange.ALL else int(self.value[:-1])


class BenchmarkMetric(StrEnum):
    TOKENS_PER_ACTIVE_DAY = "tokens_per_active_day"
    COST_PER_ACTIVE_DAY = "cost_per_active_day"
    ACTIVE_DAYS = "active_days"
    STREAK = "streak"
    CACHE_EFFICIENCY = "cache_efficiency"


class BenchmarkStanding(StrEnum):
    """How a member's values count: `public` ones make the community (published figures and
    the reference of every percentile), `private` ones are only compared with it, `excluded`
    ones (leaderboard_exclusions) neither."""

    PUBLIC = "public"
    PRIVATE = "private"
    EXCLUDED = "excluded"


class BenchmarkSnapshot(UUIDPrimaryKey, Base):
    __tablename__ = "leaderboard_benchmark_snapshots"

    computed_at: Mapped[datetime]
    # The UTC date the windows end on.
    today: Mapped[date] = mapped_column(Date)
    duration_ms: Mapped[int] = mapped_column(Integer)
    # {range: active public profiles not excluded}: the community each percentile is within.
    community: Mapped[dict[str, int]] = mapped_column(JSON)


class BenchmarkStat(Base):
    """The public community's distribution of one metric over one range."""

    __tablename__ = "leaderboard_benchmark_stats"
    __table_args__ = (PrimaryKeyConstraint("snapshot_id", "range", "metric"),)

    snapshot_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("leaderboard_benchmark_snapshots.id", ondelete="CASCADE"))
    range: Mapped[str] = mapped_column(String(8))
    metric: Mapped[str] = mapped_column(String(32))
    count: Mapped[int] = mapped_column(Integer)
    mean: Mapped[float] = mapped_column(Float)
    median: Mapped[float] = mapped_column(Float)
    p75: Mapped[float] = mapped_column(Float)
    p90: Mapped[float] = mapped_column(Float)
    p99: Mapped[float] = mapped_column(Float)


class BenchmarkShare(Base):
    """The public community's tokens and cost on one model or source over one range."""

    __tablename__ = "leaderboard_benchmark_shares"
    __table_args__ = (PrimaryKeyConstraint("snapshot_id", "range", "kind", "name"),)

    snapshot_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("leaderboard_benchmark_snapshots.id", ondelete="CASCADE"))
    range: Mapped[str] = mapped_column(String(8))
    kind: Mapped[str] = mapped_column(String(8))  # "model" or "source"
    name: Mapped[str] = mapped_column(String(200))
    tokens: Mapped[int] = mapped_column(BigInteger)
    cost: Mapped[int] = mapped_column(BigInteger)  # nano-dollars


class BenchmarkMember(Base):
    """An active user's values on one range and their percentiles within the public community
    (null where the value is null or there is no community)."""

    __tablename__ = "leaderboard_benchmark_members"
    __table_args__ = (PrimaryKeyConstraint("snapshot_id", "range", "user_id"),)

    snapshot_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("leaderboard_benchmark_snapshots.id", ondelete="CASCADE"))
    range: Mapped[str] = mapped_column(String(8))
    # No foreign key, as for standings: reads are by the reader's own id.
    user_id: Mapped[uuid.UUID]
    standing: Mapped[str] = mapped_column(String(8))
    tokens_per_active_day: Mapped[float] = mapped_column(Float)
    cost_per_active_day: Mapped[float] = mapped_column(Float)  # nano-dollars
    active_days: Mapped[int] = mapped_column(Integer)
    streak: Mapped[int] = mapped_column(Integer)
    # Null below LEADERBOARD_CACHE_MIN_TOKENS in the range.
    cache_efficiency: Mapped[float | None] = mapped_column(Float)
    tokens_per_active_day_percentile: Mapped[float | None] = mapped_column(Float)
    cost_per_active_day_percentile: Mapped[float | None] = mapped_column(Float)
    active_days_percentile: Mapped[float | None] = mapped_column(Float)
    streak_percentile: Mapped[float | None] = mapped_column(Float)
    cache_efficiency_percentile: Mapped[float | None] = mapped_column(Float)
