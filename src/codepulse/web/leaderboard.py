"""The leaderboard pages: the public board and each organization's, with period and metric
pickers, pages of 50, my row highlighted and my standing shown even when it is off the page (the
board's `me`), and the community benchmarks with my percentiles — through the leaderboard slice's
service and benchmark reads, as `GET /api/v1/leaderboard`, `/orgs/{org}/leaderboard`,
`/benchmarks` and `/benchmarks/me` answer them.

An organization's board is for its members: an outsider gets the 404 page (`web/scoped.py`).
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import Query, Request
from fastapi.responses import HTMLResponse

from codepulse.db import DbSession
from codepulse.leaderboard.benchmark_reads import community_benchmarks, my_benchmarks
from codepulse.leaderboard.dependencies import LeaderboardServiceDep
from codepulse.leaderboard.models import BenchmarkRange, Metric, Period
from codepulse.leaderboard.schemas import Board
from codepulse.orgs.dependencies import OrgServiceDep
from codepulse.pagination import MAX_CURSOR_LENGTH, PageRequest
from codepulse.routing import DomainRouter
from codepulse.web.rendering import render
from codepulse.web.scoped import org_access
from codepulse.web.session import SignedIn, Viewer

router = DomainRouter(tags=["web"])

BOARD_LIMIT = 50
ORGS_LIMIT = 50
PERIODS = (
    (Period.DAY, "Today"),
    (Period.WEEK, "This week"),
    (Period.ROLLING_7D, "Last 7 days"),
    (Period.MONTH, "This month"),
    (Period.ROLLING_30D, "Last 30 days"),
    (Period.ALL, "All time"),
)
METRICS = (
    (Metric.TOKENS, "Tokens"),
    (Metric.COST, "Cost"),
    (Metric.ACTIVE_DAYS, "Active days"),
    (Metric.STREAK, "Streak"),
    (Metric.CACHE_EFFICIENCY, "Cache efficiency"),
)
RANGES = ((BenchmarkRange.D7, "Last 7 days"), (BenchmarkRange.D30, "Last 30 days"), (BenchmarkRange.ALL, "All time"))
BENCHMARKS = (
    ("tokens_per_active_day", "Tokens per active day"),
    ("cost_per_active_day", "Cost per active day"),
    ("active_days", "Active days"),
    ("streak", "Current streak"),
    ("cache_efficiency", "Cache efficiency"),
)
NOT_RANKED = {
    "private": "Your profile is private: public boards show public profiles only.",
    "excluded": "Your account is kept off the boards.",
    "no_usage": "No usage in this period yet.",
    "no_streak": "No current streak.",
    "below_minimum": "Not enough tokens in this period for this metric.",
    "not_sharing": "You do not share your usage with organizations (Settings).",
    "not_computed": "The boards have not been computed yet.",
}

PeriodQuery = Annotated[Period, Query()]
MetricQuery = Annotated[Metric, Query()]
CursorQuery = Annotated[str | None, Query(max_length=MAX_CURSOR_LENGTH)]
RangeQuery = Annotated[BenchmarkRange, Query(alias="range")]


def _query(**values: str | None) -> str:
    return urlencode({key: value for key, value in values.items() if value})


def _board_context(
    board: Board, viewer: Viewer, base_path: str, range_: BenchmarkRange | None, cursor: str | None
) -> dict[str, Any]:
    me = board.me
    on_page = any(entry.user.username == viewer.user.username for entry in board.items)
    picked = {"period": board.period.value, "metric": board.metric.value}
    if range_ is not None:
        picked["range"] = range_.value
    return {
        "board": board,
        "me": me,
        "me_on_page": on_page,
        "not_ranked": NOT_RANKED.get(me.reason.value, "") if me is not None and me.reason is not None else "",
        "periods": PERIODS,
        "metrics": METRICS,
        "base_path": base_path,
        "cursor_given": cursor is not None,
        "next_url": f"{base_path}?{_query(**picked, cursor=board.next_cursor)}" if board.next_cursor else None,
        "first_url": f"{base_path}?{_query(**picked)}",
    }


async def _my_orgs(orgs: OrgServiceDep, viewer: Viewer) -> list[Any]:
    mine, _ = await orgs.list_mine(viewer.user, PageRequest(limit=ORGS_LIMIT))
    return [org for org, _role in mine]


@router.get("/leaderboard", include_in_schema=False, response_class=HTMLResponse)
async def leaderboard_page(
    request: Request,
    viewer: SignedIn,
    service: LeaderboardServiceDep,
    orgs: OrgServiceDep,
    session: DbSession,
    period: PeriodQuery = Period.WEEK,
    metric: MetricQuery = Metric.TOKENS,
    cursor: CursorQuery = None,
    range_: RangeQuery = BenchmarkRange.D30,
) -> HTMLResponse:
    page = PageRequest(limit=BOARD_LIMIT, cursor=cursor, signer=request.app.state.cursor_signer)
    board = await service.board(period, metric, page, viewer.user)
    return render(
        request,
        "leaderboard.html",
        org=None,
        my_orgs=await _my_orgs(orgs, viewer),
        community=await community_benchmarks(session, range_),
        mine=await my_benchmarks(session, viewer.user.id, range_),
        ranges=RANGES,
        benchmark_range=range_,
        benchmarks=BENCHMARKS,
        **_board_context(board, viewer, "/leaderboard", range_, cursor),
    )


@router.get("/orgs/{slug}/leaderboard", include_in_schema=False, response_class=HTMLResponse)
async def org_leaderboard_page(
    request: Request,
    slug: str,
    viewer: SignedIn,
    service: LeaderboardServiceDep,
    orgs: OrgServiceDep,
    period: PeriodQuery = Period.WEEK,
    metric: MetricQuery = Metric.TOKENS,
    cursor: CursorQuery = None,
) -> HTMLResponse:
    """An organization's board: its members who share usage with it (viewer+; outsiders 404)."""
    access = await org_access(orgs, viewer, slug)
    page = PageRequest(limit=BOARD_LIMIT, cursor=cursor, signer=request.app.state.cursor_signer)
    board = await service.org_board(access, period, metric, page, viewer.user)
    return render(
        request,
        "leaderboard.html",
        org=access.org,
        my_orgs=await _my_orgs(orgs, viewer),
        **_board_context(board, viewer, f"/orgs/{access.org.slug}/leaderboard", None, cursor),
    )
