"""GET /benchmarks (public) and GET /benchmarks/me, over the data set of
tests/leaderboard/benchmark_data.py computed with `compute_benchmarks`."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from codepulse.config import Settings
from codepulse.db import Database
from codepulse.leaderboard.benchmarks import compute_benchmarks
from codepulse.leaderboard.models import BenchmarkRange
from tests.factories import Account, MakeUser
from tests.leaderboard.benchmark_data import (
    CACHE_MIN_TOKENS,
    DATA,
    METRICS,
    NOW,
    TODAY,
    Row,
    community_values,
    make_people,
    reference_percentile,
    reference_rank,
    reference_values,
)


@pytest.fixture
def bench_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"LEADERBOARD_CACHE_MIN_TOKENS": CACHE_MIN_TOKENS})


@pytest.fixture
async def people(session: AsyncSession, make_user: MakeUser) -> dict[str, Account]:
    return await make_people(session, make_user)


async def test_before_the_first_computation(client: httpx.AsyncClient, make_user: MakeUser) -> None:
    response = await client.get("/api/v1/benchmarks")
    assert response.status_code == 200
    body = response.json()
    assert body["computed_at"] is None
    assert body["window"] is None
    assert body["active_users"] == 0
    assert body["models"] == []
    assert body["sources"] == []
    assert body["metrics"]["streak"] == {
        "count": 0,
        "mean": None,
        "median": None,
        "p75": None,
        "p90": None,
        "p99": None,
    }
    me = await make_user("early")
    mine = (await client.get("/api/v1/benchmarks/me", headers=me.headers)).json()
    assert mine["reason"] == "not_computed"
    assert mine["metrics"]["streak"] == {"value": None, "percentile": None}


async def test_public_benchmarks(
    client: httpx.AsyncClient, people: dict[str, Account], db: Database, bench_settings: Settings
) -> None:
    await compute_benchmarks(db, bench_settings, NOW)
    body = (await client.get("/api/v1/benchmarks", params={"range": "7d"})).json()
    assert body["range"] == "7d"
    assert body["computed_at"] == NOW.isoformat().replace("+00:00", "Z")
    assert body["window"] == {"start": "2026-11-27", "end": "2026-12-03"}
    assert body["active_users"] == 5
    streak = body["metrics"]["streak"]
    assert streak["count"] == 5
    assert streak["median"] == pytest.approx(reference_percentile(community_values(BenchmarkRange.D7, "streak"), 0.5))
    cost = body["metrics"]["cost_per_active_day"]
    expected = reference_percentile(community_values(BenchmarkRange.D7, "cost_per_active_day"), 0.9) / 1e9
    assert float(cost["p90"]) == pytest.approx(expected, abs=1e-9)
    # Shares of the public community only: pat and eve's claude-opus-4 days are not in them.
    models = {share["name"]: share for share in body["models"]}
    opus_tokens = 2 * (10_000 + 2_000 + 50_000 + 400)
    assert models["claude-opus-4"]["tokens"] == opus_tokens
    total = sum(row.tokens for values in ("ada", "bob", "cy", "dan", "lee") for row in _window_rows(values))
    assert models["claude-opus-4"]["token_share"] == round(opus_tokens / total, 4)
    assert sum(share["tokens"] for share in body["sources"]) == total
    assert [share["name"] for share in body["sources"]] == ["claude-code", "codex"]


def _window_rows(name: str) -> list[Row]:
    return [row for row in DATA[name][3] if TODAY - timedelta(days=6) <= row.day <= TODAY]


@pytest.mark.parametrize("name", ["ada", "pat"])
async def test_my_percentiles(
    name: str, client: httpx.AsyncClient, people: dict[str, Account], db: Database, bench_settings: Settings
) -> None:
    """A public user within the community, a private one against it: the same definition."""
    await compute_benchmarks(db, bench_settings, NOW)
    body = (await client.get("/api/v1/benchmarks/me?range=7d", headers=people[name].headers)).json()
    assert body["reason"] is None
    assert body["standing"] == ("public" if name == "ada" else "private")
    assert body["active_users"] == 5
    mine = reference_values(name, BenchmarkRange.D7)
    assert mine is not None
    for metric in METRICS:
        value = mine[metric]
        figure = body["metrics"][metric]
        if value is None:
            assert figure == {"value": None, "percentile": None}
            continue
        expected = round(reference_rank(community_values(BenchmarkRange.D7, metric), value), 2)
        assert figure["percentile"] == pytest.approx(expected), metric
    if name == "pat":
        assert body["metrics"]["tokens_per_active_day"]["percentile"] == 100.0  # above everyone counted
    else:
        assert body["metrics"]["streak"] == {"value": 3, "percentile": pytest.approx(80.0)}  # ties with cy


async def test_me_without_usage_or_excluded(
    client: httpx.AsyncClient, people: dict[str, Account], db: Database, bench_settings: Settings
) -> None:
    await compute_benchmarks(db, bench_settings, NOW)
    nia = (await client.get("/api/v1/benchmarks/me", headers=people["nia"].headers)).json()
    assert (nia["reason"], nia["standing"]) == ("no_usage", None)
    assert all(figure == {"value": None, "percentile": None} for figure in nia["metrics"].values())
    olga = (await client.get("/api/v1/benchmarks/me?range=30d", headers=people["olga"].headers)).json()
    assert olga["reason"] == "no_usage"
    eve = (await client.get("/api/v1/benchmarks/me", headers=people["eve"].headers)).json()
    assert (eve["reason"], eve["standing"]) == ("excluded", "excluded")
    assert all(figure["percentile"] is None for figure in eve["metrics"].values())


@pytest.mark.parametrize("path", ["/api/v1/benchmarks", "/api/v1/benchmarks/me"])
async def test_a_bad_range_is_a_422_problem(path: str, client: httpx.AsyncClient, make_user: MakeUser) -> None:
    me = await make_user("ranger")
    response = await client.get(path, params={"range": "90d"}, headers=me.headers)
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "validation_failed"


async def test_me_needs_a_token(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/benchmarks/me")
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("application/problem+json")
