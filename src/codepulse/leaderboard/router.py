"""HTTP endpoints of the rankings: the public board, one user's standings, organization boards,
and the superusers' recompute."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query, Request, Response

from codepulse.auth.dependencies import OptionalUser, Superuser, optional_user_scheme
from codepulse.leaderboard.dependencies import LeaderboardServiceDep, service_of
from codepulse.leaderboard.models import Metric, Period
from codepulse.leaderboard.ranking import recompute_rankings
from codepulse.leaderboard.schemas import (
    METRIC_DESCRIPTION,
    PERIOD_DESCRIPTION,
    Board,
    BoardQuery,
    RecomputeOut,
    UserStandings,
)
from codepulse.orgs.dependencies import OrgViewer
from codepulse.pagination import PageParams, PageRequest
from codepulse.query import parse_query, query_parameters
from codepulse.routing import DomainRouter

router = DomainRouter(tags=["leaderboard"])

PeriodParam = Annotated[Period, Query(description=PERIOD_DESCRIPTION)]
MetricParam = Annotated[Metric, Query(description=METRIC_DESCRIPTION)]


@router.get(
    "/leaderboard",
    response_model=Board,
    summary="The public leaderboard (public profiles only)",
    description='Ties share a rank (standard competition ranking, "1224") and are listed by username '
    "(byte order). With a bearer token, `me` is the caller's standing even when off the page.",
    openapi_extra={
        "parameters": query_parameters(BoardQuery),
        "security": [{optional_user_scheme.scheme_name: []}],
    },
)
async def global_board(request: Request) -> Response:
    # The hottest read: its query and token are read here, not by FastAPI's per-parameter and
    # per-dependency solving, which cost more than the rest of a cached answer (codepulse.query).
    query = parse_query(BoardQuery, request)
    viewer = await optional_user_scheme(request)
    page = PageRequest(limit=query.limit, cursor=query.cursor, signer=request.app.state.cursor_signer)
    service = service_of(request)
    # Rendered by the service (mostly from its cache): FastAPI need not validate it again.
    return Response(await service.board_json(query.period, query.metric, page, viewer), media_type="application/json")


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
