"""Request and response bodies of the leaderboard's rankings."""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum

from pydantic import BaseModel, Field

from codepulse.leaderboard.models import Metric, Period
from codepulse.pagination import DEFAULT_LIMIT, MAX_CURSOR_LENGTH, MAX_LIMIT

VALUE_DESCRIPTION = (
    "`tokens` (input + output + cache writes + cache reads), `active_days` and `streak`: integers; "
    "`cost`: US dollars as a decimal string; `cache_efficiency`: cache reads / (input + cache reads), 0 to 1."
)


PERIOD_DESCRIPTION = (
    "Calendar `day`, ISO `week` (Monday to Sunday), `month`, `all`, or the rolling `7d` and `30d` ending today "
    "(UTC dates, compared with the local dates usage was recorded on)."
)
METRIC_DESCRIPTION = (
    "`tokens`, `cost`, `active_days`, `streak` (current streak, days of it inside the window) or "
    "`cache_efficiency` (only with at least LEADERBOARD_CACHE_MIN_TOKENS tokens in the window)."
)


class BoardQuery(BaseModel):
    """The global board's query string (parsed in one validation: `codepulse.query`)."""

    period: Period = Field(Period.WEEK, description=PERIOD_DESCRIPTION)
    metric: Metric = Field(Metric.TOKENS, description=METRIC_DESCRIPTION)
    limit: int = Field(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT, description=f"Page size, 1 to {MAX_LIMIT}.")
    cursor: str | None = Field(
        None, max_length=MAX_CURSOR_LENGTH, description="The `next_cursor` of the previous page; omit for the first."
    )


class WindowOut(BaseModel):
    """The period's first and last day (inclusive), compared with the local dates usage was
    recorded on; null for `all`."""

    start: date | None
    end: date | None


class RankedUser(BaseModel):
    username: str
    name: str
    avatar_url: str | None


class Entry(BaseModel):
    rank: int = Field(description='Standard competition ranking ("1224"): ties share a rank.')
    user: RankedUser
    value: int | float | str = Field(description=VALUE_DESCRIPTION)
    previous_rank: int | None = Field(description="The rank in the previous computation; null when not ranked then.")
    rank_change: int | None = Field(description="previous_rank - rank: positive when moving up.")


class NotRankedReason(StrEnum):
    PRIVATE = "private"
    EXCLUDED = "excluded"
    NO_USAGE = "no_usage"
    NO_STREAK = "no_streak"
    BELOW_MINIMUM = "below_minimum"
    NOT_SHARING = "not_sharing"
    NOT_COMPUTED = "not_computed"


class MyStanding(BaseModel):
    """The caller's place on this board, whether or not it is on the page."""

    rank: int | None
    value: int | float | str | None = Field(description=VALUE_DESCRIPTION)
    percentile: float | None = Field(
        description="100 x (ranked - rank) / (ranked - 1): the share of the others ranked at or below "
        "you (100 for the top, 0 for the last; 100 when alone)."
    )
    previous_rank: int | None
    rank_change: int | None
    reason: NotRankedReason | None = Field(description="Why `rank` is null: private, excluded, no_usage, ...")


class Board(BaseModel):
    period: Period
    metric: Metric
    window: WindowOut
    computed_at: datetime | None = Field(description="When the snapshot was computed; null before the first.")
    total_ranked: int
    items: list[Entry]
    next_cursor: str | None
    me: MyStanding | None = Field(description="With a bearer token: the caller's standing; otherwise null.")


class MetricStanding(BaseModel):
    rank: int | None
    value: int | float | str | None = Field(description=VALUE_DESCRIPTION)
    percentile: float | None
    previous_rank: int | None
    total_ranked: int


class PeriodStandings(BaseModel):
    window: WindowOut
    metrics: dict[Metric, MetricStanding]


class UserStandings(BaseModel):
    username: str
    computed_at: datetime | None
    periods: dict[Period, PeriodStandings]


class RecomputeOut(BaseModel):
    snapshot_id: str
    computed_at: datetime
    duration_ms: int
    totals: dict[str, dict[str, int]] = Field(description="Public profiles ranked: {period: {metric: count}}.")
