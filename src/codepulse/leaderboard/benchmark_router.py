"""HTTP endpoints of the community benchmarks: GET /benchmarks (public) and GET /benchmarks/me."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query

from codepulse.auth.dependencies import CurrentUser
from codepulse.db import DbSession
from codepulse.leaderboard.benchmark_reads import community_benchmarks, my_benchmarks
from codepulse.leaderboard.benchmark_schemas import PERCENTILE_DEFINITION, CommunityBenchmarks, MyBenchmarks
from codepulse.leaderboard.models import BenchmarkRange
from codepulse.routing import DomainRouter

benchmarks_router = DomainRouter(prefix="/benchmarks", tags=["leaderboard"])

RangeParam = Annotated[
    BenchmarkRange,
    Query(alias="range", description="`7d`, `30d` or `all`: UTC dates ending today, matched with local usage days."),
]


@benchmarks_router.get("", summary="The community's benchmarks (public)")
async def get_benchmarks(session: DbSession, range_: RangeParam = BenchmarkRange.D30) -> CommunityBenchmarks:
    """Count, mean, median, p75, p90 and p99 of tokens and cost per active day, active days, current
    streak and cache efficiency, and the community's token and cost shares per model and per source.
    Percentiles are continuous (linear interpolation, PostgreSQL's `percentile_cont`). Computed
    hourly (job `leaderboard.benchmarks`) over active users, people with usage in the range; only
    public profiles not excluded from the boards count.

    Before the first computation: 200 with `computed_at` and `window` null, `active_users` 0, every
    metric's `count` 0 with null figures, and no shares."""
    return await community_benchmarks(session, range_)


@benchmarks_router.get(
    "/me",
    summary="My values and percentiles within the community",
    description=(
        "For each metric of GET /benchmarks: my value over the range and my percentile within the community. "
        f"{PERCENTILE_DEFINITION} As of the last hourly computation. "
        "Without usage in the range, or before the first computation, values and percentiles are null and "
        "`reason` says why."
    ),
)
async def get_my_benchmarks(
    user: CurrentUser, session: DbSession, range_: RangeParam = BenchmarkRange.D30
) -> MyBenchmarks:
    return await my_benchmarks(session, user.id, range_)
