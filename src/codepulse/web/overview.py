"""The usage overview, the dashboard's home page: the periods' cards, streaks, the trends chart
(uPlot, fed by the JSON in the chart element's `data-chart` attribute, which our own static JS
reads: no inline script; htmx drops `<script>` elements, data blocks too, from what it swaps in),
and the models and sources breakdowns — all from the usage slice's `DashboardService`.

`GET /overview/usage` answers the chart and breakdowns alone, for htmx to swap when the range or
the granularity changes (without JavaScript the same form reloads the page).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from typing import Annotated, Any

from fastapi import Query, Request
from fastapi.responses import HTMLResponse

from codepulse.routing import DomainRouter
from codepulse.usage.dependencies import DashboardServiceDep
from codepulse.usage.schemas import Granularity, ModelBreakdown, Range, SourceBreakdown, Trends
from codepulse.web.rendering import render
from codepulse.web.session import SignedIn

router = DomainRouter(tags=["web"])

RANGES = (Range.D7, Range.D30, Range.D90, Range.D365)
PERIODS = (("today", "Today"), ("7d", "Last 7 days"), ("30d", "Last 30 days"), ("all", "All time"))

RangeQuery = Annotated[Range, Query(alias="range")]


@dataclass(frozen=True)
class UsageDetail:
    range: Range
    granularity: Granularity
    trends: Trends
    models: ModelBreakdown
    sources: SourceBreakdown

    @property
    def chart_json(self) -> str:
        """The chart's data for static/app.js: buckets as epoch seconds (UTC midnight), tokens by
        kind and cost per bucket (autoescaped into the `data-chart` attribute)."""
        points = self.trends.points
        data: dict[str, Any] = {
            "granularity": self.granularity.value,
            "x": [_epoch_day(point.date) for point in points],
            "input": [point.tokens.input for point in points],
            "output": [point.tokens.output for point in points],
            "cache_write": [point.tokens.cache_creation_5m + point.tokens.cache_creation_1h for point in points],
            "cache_read": [point.tokens.cache_read for point in points],
            "cost": [float(point.cost_usd) for point in points],
        }
        return json.dumps(data, separators=(",", ":"))


def _epoch_day(day: date) -> int:
    return (day.toordinal() - 719163) * 86400  # date(1970, 1, 1).toordinal() == 719163


async def _detail(
    service: DashboardServiceDep, viewer: SignedIn, range_: Range, granularity: Granularity
) -> UsageDetail:
    user = viewer.user
    return UsageDetail(
        range=range_,
        granularity=granularity,
        trends=await service.trends(user, range_, granularity),
        models=await service.models(user, range_),
        sources=await service.sources(user, range_),
    )


def _allowed(range_: Range) -> Range:
    return range_ if range_ in RANGES else Range.D30


@router.get("/", include_in_schema=False, response_class=HTMLResponse)
async def overview_page(
    request: Request,
    viewer: SignedIn,
    service: DashboardServiceDep,
    range_: RangeQuery = Range.D30,
    granularity: Granularity = Granularity.DAY,
) -> HTMLResponse:
    overview = await service.overview(viewer.user)
    has_usage = overview.periods["all"].records > 0
    detail = await _detail(service, viewer, _allowed(range_), granularity) if has_usage else None
    server_url = str(request.base_url).rstrip("/")
    return render(
        request,
        "overview.html",
        overview=overview,
        periods=[(key, label, overview.periods[key]) for key, label in PERIODS],
        detail=detail,
        ranges=RANGES,
        granularities=tuple(Granularity),
        server_url=server_url,
        page_scripts=("vendor/uPlot-1.6.32.iife.min.js",) if has_usage else (),
        page_styles=("vendor/uPlot-1.6.32.min.css",) if has_usage else (),
    )


@router.get("/overview/usage", include_in_schema=False, response_class=HTMLResponse)
async def usage_detail(
    request: Request,
    viewer: SignedIn,
    service: DashboardServiceDep,
    range_: RangeQuery = Range.D30,
    granularity: Granularity = Granularity.DAY,
) -> HTMLResponse:
    detail = await _detail(service, viewer, _allowed(range_), granularity)
    return render(request, "_usage_detail.html", detail=detail, ranges=RANGES, granularities=tuple(Granularity))
