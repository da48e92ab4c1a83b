"""Responses of the community benchmarks: GET /benchmarks and GET /benchmarks/me."""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum

from pydantic import BaseModel, Field

from codepulse.leaderboard.models import BenchmarkRange, BenchmarkStanding
from codepulse.usage.schemas import Usd

PERCENTILE_DEFINITION = (
    "A percentile is the share of the community whose value is below yours, ties counted half, in percent: "
    "`100 * (below + equal / 2) / community`, where the community is the range's active public profiles "
    "(not excluded from the boards) with a value for that metric. 50 is the middle (a community of one puts "
    "its member at 50). A private profile is compared with the same community without being part of it."
)


class BenchmarkWindow(BaseModel):
    start: date | None = Field(description="First UTC date of the range; null for `all`.")
    end: date = Field(description="Last UTC date of the range (the computation's UTC date).")


class Distribution(BaseModel):
    """A metric's distribution over the community: null figures when `count` is 0."""

    count: int
    mean: float | None = None
    median: float | None = None
    p75: float | None = None
    p90: float | None = None
    p99: float | None = None


class CostDistribution(BaseModel):
    """Cost per active day over the community, in USD: null figures when `count` is 0."""

    count: int
    mean: Usd | None = None
    median: Usd | None = None
    p75: Usd | None = None
    p90: Usd | None = None
    p99: Usd | None = None


class CommunityFigures(BaseModel):
    tokens_per_active_day: Distribution = Field(
        description="Tokens (input + output + cache writes + cache reads) per active day in the range."
    )
    cost_per_active_day: CostDistribution = Field(description="Cost (USD) per active day in the range.")
    active_days: Distribution = Field(description="Local dates with usage in the range.")
    streak: Distribution = Field(
        description="Current streak: consecutive active days ending on the user's local today (or yesterday)."
    )
    cache_efficiency: Distribution = Field(
        description="Cache reads / (input + cache reads), of users with at least LEADERBOARD_CACHE_MIN_TOKENS "
        "tokens in the range (the others are not counted)."
    )


class Share(BaseModel):
    name: str
    tokens: int
    cost_usd: Usd
    token_share: float = Field(description="This name's part of the community's tokens in the range, 0 to 1.")
    cost_share: float = Field(description="This name's part of the community's cost in the range, 0 to 1.")


class CommunityBenchmarks(BaseModel):
    computed_at: datetime | None = Field(description="Null before the first computation (figures empty then).")
    range: BenchmarkRange
    window: BenchmarkWindow | None = Field(description="Null before the first computation.")
    active_users: int = Field(description="Active public profiles in the range: the community.")
    metrics: CommunityFigures
    models: list[Share] = Field(description="Per model, most tokens first.")
    sources: list[Share] = Field(description="Per tool (Claude Code, Codex, ...), most tokens first.")


class Standing(BaseModel):
    """A value and its percentile within the community (both null without usage in the range;
    the percentile null without a community, or for an excluded account)."""

    value: float | None = None
    percentile: float | None = None


class CostStanding(BaseModel):
    value: Usd | None = None
    percentile: float | None = None


class MyFigures(BaseModel):
    tokens_per_active_day: Standing
    cost_per_active_day: CostStanding
    active_days: Standing
    streak: Standing
    cache_efficiency: Standing = Field(description="Value null below LEADERBOARD_CACHE_MIN_TOKENS tokens.")


class NoStandingReason(StrEnum):
    NOT_COMPUTED = "not_computed"
    NO_USAGE = "no_usage"
    EXCLUDED = "excluded"


class MyBenchmarks(BaseModel):
    computed_at: datetime | None
    range: BenchmarkRange
    window: BenchmarkWindow | None
    active_users: int = Field(description="The community's size (active public profiles in the range).")
    standing: BenchmarkStanding | None = Field(
        description="`public`: counted in the community; `private`: compared with it, not counted; "
        "`excluded`: kept off the boards (no percentiles). Null without usage in the range."
    )
    reason: NoStandingReason | None = Field(
        description="Why the percentiles are null: `not_computed` (no computation yet), `no_usage` (no usage "
        "in the range), `excluded`. Null otherwise."
    )
    metrics: MyFigures
