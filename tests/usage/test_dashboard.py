"""Dashboards of the signed-in user, public stats and the usage settings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
import pytest

from tests.auth.helpers import SignedIn, register
from tests.helpers import FakeClock
from tests.usage.helpers import record, sync

NOON = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)  # a Monday


@pytest.fixture
async def busy(client: httpx.AsyncClient, clock: FakeClock) -> SignedIn:
    """A user with usage today, 3 days ago and 20 days ago, in two tools and three models."""
    clock.now = NOON
    user = await register(client, "busy")
    await sync(
        client,
        user,
        [
            record("t1", at=NOON, model="claude-sonnet-4-5", input=100, output=1_000, cache_read=900),
            record("t2", at=NOON, model="claude-opus-4-5", input=50, output=100, cache_1h=1_000),
            record("d3", at=NOON - timedelta(days=3), source="codex", model="gpt-5-codex", input=400, output=400),
            record("d20", at=NOON - timedelta(days=20), model="mystery-model", input=10, output=10),
        ],
    )
    return user


async def _get(client: httpx.AsyncClient, who: SignedIn, path: str) -> dict[str, object]:
    response = await client.get(path, headers=who.headers)
    assert response.status_code == 200, response.text
    result: dict[str, object] = response.json()
    return result


async def test_overview_periods_streaks_top_and_cache_efficiency(client: httpx.AsyncClient, busy: SignedIn) -> None:
    overview = await _get(client, busy, "/api/v1/dashboard/overview")
    periods = overview["periods"]
    assert isinstance(periods, dict)
    assert [periods[name]["records"] for name in ("today", "7d", "30d", "all")] == [2, 3, 4, 4]
    assert [periods[name]["active_days"] for name in ("today", "7d", "30d", "all")] == [1, 2, 3, 3]
    today = periods["today"]
    assert today["tokens"]["total"] == 100 + 1_000 + 900 + 50 + 100 + 1_000
    assert today["tokens"]["cache_creation_1h"] == 1_000
    assert today["cache_efficiency"] == round(900 / (150 + 900), 4)
    expected_today = (100 * 3 + 1_000 * 15 + 900 * Decimal("0.3") + 50 * 5 + 100 * 25 + 1_000 * 10) / 1_000_000
    assert Decimal(today["cost_usd"]) == expected_today
    assert (overview["current_streak"], overview["longest_streak"]) == (1, 1)
    assert overview["top_model"] == "claude-sonnet-4-5"
    assert overview["top_source"] == "claude-code"
    assert overview["unpriced_records"] == 1
    assert overview["today"] == "2026-11-23"


async def test_overview_of_a_new_user_is_all_zero(client: httpx.AsyncClient, ada: SignedIn) -> None:
    overview = await _get(client, ada, "/api/v1/dashboard/overview")
    assert overview["periods"]["all"]["records"] == 0  # type: ignore[index]
    assert overview["periods"]["all"]["cache_efficiency"] is None  # type: ignore[index]
    assert (overview["top_model"], overview["top_source"], overview["current_streak"]) == (None, None, 0)


async def test_trends_are_zero_filled_per_day_and_per_week(client: httpx.AsyncClient, busy: SignedIn) -> None:
    daily = await _get(client, busy, "/api/v1/dashboard/trends?range=7d")
    points = daily["points"]
    assert isinstance(points, list)
    assert [p["date"] for p in points] == [f"2026-11-{d}" for d in range(17, 24)]
    assert [p["records"] for p in points] == [0, 0, 0, 1, 0, 0, 2]
    assert points[0]["cost_usd"] == "0.000000000"
    weekly = await _get(client, busy, "/api/v1/dashboard/trends?range=30d&granularity=week")
    weeks = weekly["points"]
    assert isinstance(weeks, list)
    # 25 Oct (a Sunday) .. 23 Nov: weeks start on Mondays; the first bucket is the partial week of 19 Oct.
    assert [w["date"] for w in weeks] == ["2026-10-19", "2026-10-26", "2026-11-02", "2026-11-09", "2026-11-16",
                                          "2026-11-23"]  # fmt: skip
    assert [w["records"] for w in weeks] == [0, 0, 1, 0, 1, 2]
    # `all`: from the week of the first day with usage to today.
    everything = await _get(client, busy, "/api/v1/dashboard/trends?range=all&granularity=week")
    assert everything["range"] == "all"
    all_weeks = everything["points"]
    assert isinstance(all_weeks, list)
    assert [(w["date"], w["records"]) for w in all_weeks] == [
        ("2026-11-02", 1), ("2026-11-09", 0), ("2026-11-16", 1), ("2026-11-23", 2)
    ]  # fmt: skip
    refused = await client.get("/api/v1/dashboard/trends?range=2y", headers=busy.headers)
    assert refused.status_code == 422
    assert "all" in refused.json()["errors"][0]["message"]


async def test_sources_and_models_with_shares(client: httpx.AsyncClient, busy: SignedIn) -> None:
    sources = await _get(client, busy, "/api/v1/dashboard/sources?range=7d")
    items = sources["items"]
    assert isinstance(items, list)
    assert [item["source"] for item in items] == ["claude-code", "codex"]
    assert items[1]["tokens"]["total"] == 800
    assert sum(item["token_share"] for item in items) == pytest.approx(1, abs=1e-3)
    assert items[0]["active_days"] == 1
    models = await _get(client, busy, "/api/v1/dashboard/models?range=all")
    by_model = {item["model"]: item for item in models["items"]}  # type: ignore[attr-defined]
    assert set(by_model) == {"claude-sonnet-4-5", "claude-opus-4-5", "gpt-5-codex", "mystery-model"}
    assert by_model["mystery-model"]["priced"] is False
    assert by_model["mystery-model"]["cost_share"] == 0
    assert sum(item["cost_share"] for item in by_model.values()) == pytest.approx(1, abs=1e-3)
    assert models["unpriced_records"] == 1
    recent = await _get(client, busy, "/api/v1/dashboard/models?range=7d")
    assert recent["unpriced_records"] == 0


async def test_dashboards_need_a_session(client: httpx.AsyncClient) -> None:
    for path in ("overview", "trends", "sources", "models"):
        assert (await client.get(f"/api/v1/dashboard/{path}")).status_code == 401


async def test_a_new_accounts_stats_are_private_until_it_opts_in(client: httpx.AsyncClient, busy: SignedIn) -> None:
    other = await register(client, "other")
    for headers in ({}, other.headers):
        hidden = await client.get("/api/v1/users/busy/stats", headers=headers)
        assert hidden.status_code == 404
        # The same answer as for an account that does not exist: no existence leak.
        assert hidden.json()["code"] == "user_not_found"
    own = await client.get("/api/v1/users/busy/stats", headers=busy.headers)
    assert own.status_code == 200
    assert own.json()["active_days"] == 3
    opted_in = await client.patch("/api/v1/users/me", headers=busy.headers, json={"profile_public": True})
    assert opted_in.status_code == 200
    assert opted_in.json()["profile_public"] is True
    assert (await client.get("/api/v1/users/busy/stats")).status_code == 200
    assert (await client.get("/api/v1/users/busy/stats", headers=other.headers)).status_code == 200


async def test_public_stats_follow_the_profile_visibility(client: httpx.AsyncClient, busy: SignedIn) -> None:
    opted_in = await client.patch("/api/v1/users/me", headers=busy.headers, json={"profile_public": True})
    assert opted_in.status_code == 200
    public = await client.get("/api/v1/users/busy/stats")
    assert public.status_code == 200, public.text
    stats = public.json()
    assert stats["active_days"] == 3
    assert (stats["first_active"], stats["last_active"]) == ("2026-11-03", "2026-11-23")
    assert stats["top_sources"][0]["name"] == "claude-code"
    assert stats["current_streak"] == 1
    hidden = await client.patch("/api/v1/users/me", headers=busy.headers, json={"profile_public": False})
    assert hidden.status_code == 200
    assert (await client.get("/api/v1/users/busy/stats")).status_code == 404
    other = await register(client, "other")
    assert (await client.get("/api/v1/users/busy/stats", headers=other.headers)).status_code == 404
    assert (await client.get("/api/v1/users/busy/stats", headers=busy.headers)).status_code == 200
    missing = await client.get("/api/v1/users/nobody/stats")
    assert missing.status_code == 404
    assert missing.json()["code"] == "user_not_found"


async def test_usage_settings_default_to_sharing(client: httpx.AsyncClient, ada: SignedIn) -> None:
    path = "/api/v1/usage/settings"
    assert (await _get(client, ada, path)) == {"share_usage_with_orgs": True}
    changed = await client.patch(path, headers=ada.headers, json={"share_usage_with_orgs": False})
    assert changed.json() == {"share_usage_with_orgs": False}
    assert (await _get(client, ada, path)) == {"share_usage_with_orgs": False}
    unchanged = await client.patch(path, headers=ada.headers, json={})
    assert unchanged.json() == {"share_usage_with_orgs": False}
    again = await client.patch(path, headers=ada.headers, json={"share_usage_with_orgs": True})
    assert again.json() == {"share_usage_with_orgs": True}
