"""The overview page with usage: the periods' cards, streaks, the chart's data block, the
breakdowns with shares, unpriced models flagged; the htmx partial; error pages."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from html import unescape
from typing import Any

import httpx
import pytest

from codepulse.usage.dashboards import DashboardService
from tests.factories import MakeUser
from tests.helpers import FakeClock
from tests.usage.helpers import record, sync
from tests.web.helpers import use_session

NOON = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)  # a Monday


def chart_of(html: str) -> dict[str, Any]:
    [attribute] = re.findall(r'data-chart="([^"]*)"', html)
    chart: dict[str, Any] = json.loads(unescape(attribute))
    return chart


def by_testid(html: str, name: str) -> str:
    match = re.search(rf'data-testid="{name}">([^<]*)<', html)
    assert match is not None, name
    return match.group(1)


async def test_overview_shows_cards_streaks_chart_and_breakdowns(
    client: httpx.AsyncClient, make_user: MakeUser, clock: FakeClock
) -> None:
    clock.now = NOON
    ada = await make_user("ada")
    await sync(
        client,
        ada,
        [
            record("t1", at=NOON, model="claude-sonnet-4-5", input=100, output=1_000, cache_read=900),
            record("y1", at=NOON - timedelta(days=1), model="claude-sonnet-4-5", input=100, output=100),
            record("d3", at=NOON - timedelta(days=3), source="codex", model="gpt-5-codex", input=400, output=400),
            record("d20", at=NOON - timedelta(days=20), model="mystery-model", input=10, output=10),
        ],
    )
    use_session(client, ada.token)
    page = await client.get("/")
    assert page.status_code == 200
    html = page.text
    assert 'data-testid="connect-cli"' not in html
    totals = {key: by_testid(html, f"total-{key}") for key in ("today", "7d", "30d", "all")}
    assert totals == {"today": "2,000", "7d": "3,000", "30d": "3,020", "all": "3,020"}
    assert [by_testid(html, f"days-{key}") for key in ("today", "7d", "30d", "all")] == ["1", "3", "4", "4"]
    assert (by_testid(html, "current-streak"), by_testid(html, "longest-streak")) == ("2", "2")
    assert "1 record of unpriced models" in html
    assert re.search(r'data-model="mystery-model".*?unpriced</span>', html, re.DOTALL)

    chart = chart_of(html)
    assert len(chart["x"]) == 30
    assert chart["granularity"] == "day"
    assert chart["x"][-1] == int(datetime(2026, 11, 23, tzinfo=UTC).timestamp())
    assert (chart["input"][-1], chart["output"][-1], chart["cache_read"][-1]) == (100, 1_000, 900)

    models = dict(re.findall(r'data-model="([^"]+)">.*?data-tokens="(\d+)"', html, re.DOTALL))
    assert models == {"claude-sonnet-4-5": "2200", "gpt-5-codex": "800", "mystery-model": "20"}
    sources = dict(re.findall(r'data-source="([^"]+)">.*?data-tokens="(\d+)"', html, re.DOTALL))
    assert sources == {"claude-code": "2220", "codex": "800"}
    assert "73.5\u202f%" in html  # claude-code's share of 3,020 tokens

    partial = await client.get("/overview/usage?range=7d&granularity=week", headers={"HX-Request": "true"})
    assert partial.status_code == 200
    assert "<html" not in partial.text
    weekly = chart_of(partial.text)
    assert weekly["granularity"] == "week"
    assert len(weekly["x"]) == 2  # the 7 days reach back into the previous week
    assert "mystery-model" not in partial.text  # 20 days ago: outside the range


async def test_bad_query_and_unknown_pages_are_html(client: httpx.AsyncClient, make_user: MakeUser) -> None:
    missing = await client.get("/no/such/page")
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("text/html")
    assert "Page not found" in missing.text
    static = await client.get("/static/nope.js")
    assert (static.status_code, static.headers["content-type"][:9]) == (404, "text/html")
    api = await client.get("/api/v1/no/such/thing")
    assert (api.status_code, api.headers["content-type"]) == (404, "application/problem+json")
    ada = await make_user("ada")
    use_session(client, ada.token)
    bad = await client.get("/overview/usage?range=2d")
    assert bad.status_code == 422
    assert bad.headers["content-type"].startswith("text/html")
    assert "That request was not understood" in bad.text
    assert 'data-testid="sign-out"' in bad.text  # the layout knows who is signed in
    wrong_method = await client.delete("/sign-in")
    assert (wrong_method.status_code, wrong_method.headers["content-type"][:9]) == (405, "text/html")


async def test_static_files_are_served(client: httpx.AsyncClient) -> None:
    for path in ("app.js", "app.css", "vendor/htmx-2.0.11.min.js", "vendor/uPlot-1.6.32.iife.min.js"):
        response = await client.get(f"/static/{path}")
        assert response.status_code == 200, path


async def test_an_unexpected_error_on_a_page_is_an_html_500(
    client: httpx.AsyncClient, make_user: MakeUser, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*_args: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(DashboardService, "overview", broken)
    use_session(client, (await make_user("ada")).token)
    response = await client.get("/")
    assert response.status_code == 500
    assert response.headers["content-type"].startswith("text/html")
    assert "Something went wrong" in response.text
    assert "boom" not in response.text
    assert response.headers["content-security-policy"].startswith("default-src 'self'")
    api = await client.get(
        "/api/v1/dashboard/overview", headers={"Authorization": f"Bearer {client.cookies['codepulse_session']}"}
    )
    assert (api.status_code, api.headers["content-type"]) == (500, "application/problem+json")
