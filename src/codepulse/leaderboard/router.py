"""HTTP endpoints of the rankings: the public board, one user's standings, organization boards,
and the superusers' recompute."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query, Request, Response

from codepulse.auth.dependencies import OptionalUser, Superuser
from codepulse.leaderboard.dependencies import LeaderboardServiceDep
from codepulse.leaderboard.models import Metric, Period
from codepulse.leaderboard.ranking import recompute_rankings
from codepulse.leaderboard.schemas import Board, RecomputeOut, UserStandings
from codepulse.orgs.dependencies import OrgViewer
from codepulse.pagination import PageParams
from codepulse.routing import DomainRouter

router = DomainRouter(tags=["leaderboard"])

PeriodParam = Annotated[
    Period,
    Query(
        description="Calendar `day`, ISO `week` (Monday to Sunday), `month`, `all`, or the rolling `7d` and "
        "`30d` ending today (UTC dates, compared with the local dates usage was recorded on)."
    ),
]
MetricParam = Annotated[
    Metric,
    Query(
        description="`tokens`, `cost`, `active_days`, `streak` (current streak, days of it inside the window) "
        "or `cache_efficiency` (only with at least LEADERBOARD_CACHE_MIN_TOKENS tokens in the window)."
    ),
]


@router.get(
    "/leaderboard",
    response_model=Board,
    summary="The public leaderboard (public profiles only)",
    description='Ties share a rank (standard competition ranking, "1224") and are listed by username '
    "(byte order). With a bearer token, `me` is the caller's standing even when off the page.",
)
async def global_board(
    service: LeaderboardServiceDep,
    page: PageParams,
    viewer: OptionalUser,
    period: PeriodParam = Period.WEEK,
    metric: MetricParam = Metric.TOKENS,
) -> Response:
    # Rendered by the service (mostly from its cache): FastAPI need not validate it again.
    return Response(await service.board_json(period, metric, page, viewer), media_type="application/json")


@router.get("/leaderboard/users/{username}", summary="A public user's rank on every period and metric")
async def user_standings(
    username: Annotated[str, Path(min_length=1, max_length=30)], viewer: OptionalUser, service: LeaderboardServiceDep
) -> UserStandings:
    return await service.user_standings(username, viewer)


@router.get(
    "/orgs/{org}/leaderboard",
    summary="The organization's board: its members who share usage with it (viewer+)",
)
async def org_board(
    access: OrgViewer,
    service: LeaderboardServiceDep,
    page: PageParams,
    period: PeriodParam = Period.WEEK,
    metric: MetricParam = Metric.TOKENS,
) -> Board:
    return await service.org_board(access, period, metric, page, access.user)


@router.post("/admin/leaderboard/recompute", summary="Recompute every board now (superuser)")
async def recompute(request: Request, _admin: Superuser) -> RecomputeOut:
    state = request.app.state
    result = await recompute_rankings(state.database, state.settings, state.clock())
    return RecomputeOut(
        snapshot_id=str(result.snapshot_id),
        computed_at=result.computed_at,
        duration_ms=result.duration_ms,
        totals=result.totals,
    )
