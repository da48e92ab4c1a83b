"""The rankings: windows, metrics, ties, privacy, `me`, rank changes, pages."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import httpx
from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession

from codepulse.leaderboard.models import LeaderboardExclusion, LeaderboardStanding
from tests.factories import MakeUser
from tests.leaderboard.conftest import Recompute
from tests.leaderboard.helpers import board, names, ranks, usage

TODAY = date(2026, 12, 3)  # a Thursday
DAY = timedelta(days=1)


async def test_each_period_counts_the_days_of_its_window(
    client: httpx.AsyncClient, session: AsyncSession, make_user: MakeUser, recompute: Recompute
) -> None:
    ada = await make_user("ada")
    await usage(session, ada, date(2026, 11, 3), output=1)  # 30 days ago: only `all`
    await usage(session, ada, date(2026, 11, 4), output=10)  # first day of 30d
    await usage(session, ada, date(2026, 11, 27), output=100)  # first day of 7d
    await usage(session, ada, date(2026, 11, 29), output=1_000)  # Sunday: last week
    await usage(session, ada, date(2026, 11, 30), output=10_000)  # Monday: this week, last month
    await usage(session, ada, TODAY, output=100_000)
    await usage(session, ada, TODAY, output=200_000, model="gpt-5", source="codex")
    await recompute()

    expected = {
        "day": (300_000, "2026-12-03", "2026-12-03"),
        "week": (310_000, "2026-11-30", "2026-12-06"),
        "month": (300_000, "2026-12-01", "2026-12-31"),
        "7d": (311_100, "2026-11-27", "2026-12-03"),
        "30d": (311_110, "2026-11-04", "2026-12-03"),
        "all": (311_111, None, None),
    }
    for period, (tokens, start, end) in expected.items():
        body = await board(client, period=period, metric="tokens")
        assert ranks(body) == [("ada", 1, tokens)], period
        assert body["window"] == {"start": start, "end": end}, period
        assert body["total_ranked"] == 1
        assert body["computed_at"] is not None
    active = await board(client, period="all", metric="active_days")
    assert ranks(active) == [("ada", 1, 6)]


async def test_metrics_count_tokens_cost_and_cache_efficiency(
    client: httpx.AsyncClient, session: AsyncSession, make_user: MakeUser, recompute: Recompute
) -> None:
    big = await make_user("big")
    small = await make_user("small")
    await usage(
        session, big, TODAY, input=100_000, output=50_000, cache_write=50_000, cache_read=900_000, cost=2_500_000_000
    )
    # Perfect efficiency, but far below the minimum volume (LEADERBOARD_CACHE_MIN_TOKENS).
    await usage(session, small, TODAY, input=0, output=1, cache_read=500, cost=1)
    await recompute()

    tokens = await board(client, period="day", metric="tokens")
    assert ranks(tokens) == [("big", 1, 1_100_000), ("small", 2, 501)]
    cost = await board(client, period="day", metric="cost")
    assert ranks(cost) == [("big", 1, "2.500000000"), ("small", 2, "0.000000001")]
    efficiency = await board(client, period="day", metric="cache_efficiency", who=small)
    assert ranks(efficiency) == [("big", 1, 0.9)]
    assert efficiency["total_ranked"] == 1
    assert efficiency["me"]["rank"] is None
    assert efficiency["me"]["reason"] == "below_minimum"


async def test_ties_share_a_rank_and_are_listed_by_username(
    client: httpx.AsyncClient, session: AsyncSession, make_user: MakeUser, recompute: Recompute
) -> None:
    for username, output in (("carol", 500), ("bob", 500), ("dave", 100), ("alice", 900), ("erin", 500)):
        await usage(session, await make_user(username), TODAY, output=output)
    await recompute()

    body = await board(client, period="day", metric="tokens")
    assert ranks(body) == [
        ("alice", 1, 900),
        ("bob", 2, 500),
        ("carol", 2, 500),
        ("erin", 2, 500),
        ("dave", 5, 100),
    ]


async def test_private_and_excluded_profiles_are_not_ranked_and_me_says_why(
    client: httpx.AsyncClient, session: AsyncSession, make_user: MakeUser, recompute: Recompute
) -> None:
    public = await make_user("public")
    private = await make_user("private", profile_public=False)
    banned = await make_user("banned")
    idle = await make_user("idle")
    for who, output in ((public, 10), (private, 1_000), (banned, 5_000)):
        await usage(session, who, TODAY, output=output)
    session.add(LeaderboardExclusion(user_id=banned.model.id, reason="abuse", created_at=datetime.now(UTC)))
    await session.flush()
    await recompute()

    body = await board(client, period="day", metric="tokens", who=public)
    assert ranks(body) == [("public", 1, 10)]
    assert body["total_ranked"] == 1
    assert body["me"] == {
        "rank": 1,
        "value": 10,
        "percentile": 100.0,
        "previous_rank": None,
        "rank_change": None,
        "reason": None,
    }
    mine = (await board(client, period="day", metric="tokens", who=private))["me"]
    assert (mine["rank"], mine["value"], mine["reason"]) == (None, 1_000, "private")
    assert (await board(client, period="day", metric="tokens", who=banned))["me"]["reason"] == "excluded"
    assert (await board(client, period="day", metric="tokens", who=idle))["me"]["reason"] == "no_usage"
    assert (await board(client, period="day", metric="tokens"))["me"] is None


async def test_a_profile_made_private_leaves_the_board_before_the_next_recompute(
    client: httpx.AsyncClient, session: AsyncSession, make_user: MakeUser, recompute: Recompute
) -> None:
    first = await make_user("first")
    second = await make_user("second")
    await usage(session, first, TODAY, output=900)
    await usage(session, second, TODAY, output=100)
    await recompute()
    assert names(await board(client, period="day")) == ["first", "second"]

    response = await client.patch("/api/v1/users/me", headers=first.headers, json={"profile_public": False})
    assert response.status_code == 200, response.text
    # The profile change cleared this process's cached pages once it committed.
    assert ranks(await board(client, period="day")) == [("second", 2, 100)]
    await recompute()
    assert ranks(await board(client, period="day")) == [("second", 1, 100)]


async def test_streaks_count_from_each_users_own_today(
    client: httpx.AsyncClient, session: AsyncSession, make_user: MakeUser, recompute: Recompute
) -> None:
    # At 05:00 UTC on 12-03 it is still 12-02 in Honolulu: 12-01 is its yesterday.
    early = datetime(2026, 12, 3, 5, 0, tzinfo=UTC)
    honolulu = await make_user("honolulu", timezone="Pacific/Honolulu")
    london = await make_user("london", timezone="Europe/London")
    runner = await make_user("runner")
    for who in (honolulu, london):
        for day in (date(2026, 11, 29), date(2026, 11, 30), date(2026, 12, 1)):
            await usage(session, who, day)
    # 40 days in a row up to today, with a gap before them.
    await usage(session, runner, TODAY - 45 * DAY)
    for back in range(40):
        await usage(session, runner, TODAY - back * DAY)
    await recompute(early)

    streak_all = await board(client, period="all", metric="streak", who=london)
    assert ranks(streak_all) == [("runner", 1, 40), ("honolulu", 2, 3)]
    assert streak_all["me"]["reason"] == "no_streak"
    # Only the streak's days inside the window count.
    assert ranks(await board(client, period="week", metric="streak")) == [("runner", 1, 4), ("honolulu", 2, 2)]
    assert ranks(await board(client, period="7d", metric="streak")) == [("runner", 1, 7), ("honolulu", 2, 3)]


async def test_rank_changes_between_two_computations_and_leaving_a_window(
    client: httpx.AsyncClient, session: AsyncSession, make_user: MakeUser, recompute: Recompute, now: datetime
) -> None:
    leaver = await make_user("leaver")
    steady = await make_user("steady")
    climber = await make_user("climber")
    await usage(session, leaver, TODAY - 6 * DAY, output=5_000)  # first day of the 7d window
    await usage(session, steady, TODAY, output=1_000)
    await usage(session, climber, TODAY, output=10)
    await recompute()
    assert ranks(await board(client, period="7d")) == [("leaver", 1, 5_000), ("steady", 2, 1_000), ("climber", 3, 10)]

    await usage(session, climber, TODAY + DAY, output=100_000)
    await recompute(now + DAY)
    body = await board(client, period="7d", who=steady)
    assert [(e["user"]["username"], e["rank"], e["previous_rank"], e["rank_change"]) for e in body["items"]] == [
        ("climber", 1, 3, 2),
        ("steady", 2, 2, 0),
    ]
    assert body["window"] == {"start": "2026-11-28", "end": "2026-12-04"}
    assert (body["me"]["rank"], body["me"]["previous_rank"], body["me"]["rank_change"]) == (2, 2, 0)
    assert body["me"]["percentile"] == 0.0
    # The leaver is still on the all-time board.
    assert names(await board(client, period="all")) == ["climber", "leaver", "steady"]


async def test_pages_follow_positions_and_me_is_there_when_off_the_page(
    client: httpx.AsyncClient, session: AsyncSession, make_user: MakeUser, recompute: Recompute
) -> None:
    accounts = []
    for i in range(7):
        account = await make_user(f"user{i}")
        accounts.append(account)
        await usage(session, account, TODAY, output=1_000 - i * 100)
    await recompute()

    first = await board(client, period="day", limit=3, who=accounts[6])
    assert names(first) == ["user0", "user1", "user2"]
    assert first["me"]["rank"] == 7
    assert first["me"]["percentile"] == 0.0
    second = await board(client, period="day", limit=3, cursor=first["next_cursor"])
    assert names(second) == ["user3", "user4", "user5"]
    third = await board(client, period="day", limit=3, cursor=second["next_cursor"])
    assert names(third) == ["user6"]
    assert third["next_cursor"] is None
    middle = (await board(client, period="day", who=accounts[3]))["me"]
    assert middle["percentile"] == 50.0
    other_metric = await client.get(
        "/api/v1/leaderboard", params={"period": "day", "metric": "cost", "cursor": first["next_cursor"]}
    )
    assert other_metric.status_code == 422
    assert other_metric.json()["code"] == "invalid_cursor"


async def test_before_the_first_computation_boards_are_empty(
    client: httpx.AsyncClient, make_user: MakeUser, now: datetime
) -> None:
    ada = await make_user("ada")
    body = await board(client, period="month", metric="cost", who=ada)
    assert (body["items"], body["total_ranked"], body["computed_at"]) == ([], 0, None)
    assert body["window"] == {"start": "2026-12-01", "end": "2026-12-31"}
    assert body["me"]["reason"] == "not_computed"


async def test_bad_period_or_metric_is_a_422(client: httpx.AsyncClient) -> None:
    cases = [
        ({"period": "year"}, ["query.period"]),
        ({"metric": "lines"}, ["query.metric"]),
        ({"limit": "0"}, ["query.limit"]),
        ({"limit": "many", "period": "year"}, ["query.period", "query.limit"]),  # every problem at once
        ({"cursor": "x" * 1025}, ["query.cursor"]),
    ]
    for params, fields in cases:
        response = await client.get("/api/v1/leaderboard", params=params)
        assert response.status_code == 422, params
        assert response.headers["content-type"] == "application/problem+json"
        body = response.json()
        assert body["code"] == "validation_failed"
        assert [error["field"] for error in body["errors"]] == fields, body


async def test_the_board_documents_its_query_and_its_optional_token(client: httpx.AsyncClient) -> None:
    operation = (await client.get("/openapi.json")).json()["paths"]["/api/v1/leaderboard"]["get"]
    parameters = {parameter["name"]: parameter for parameter in operation["parameters"]}
    assert list(parameters) == ["period", "metric", "limit", "cursor"]
    assert all(parameter["in"] == "query" and not parameter["required"] for parameter in parameters.values())
    assert parameters["period"]["schema"]["enum"] == ["day", "week", "month", "all", "7d", "30d"]
    assert parameters["period"]["schema"]["default"] == "week"
    assert (parameters["limit"]["schema"]["minimum"], parameters["limit"]["schema"]["maximum"]) == (1, 100)
    assert operation["security"] == [{"BearerToken": []}]
    assert "Board" in operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]


async def test_a_repeated_parameter_counts_by_its_last_value(
    client: httpx.AsyncClient, session: AsyncSession, make_user: MakeUser, recompute: Recompute
) -> None:
    await usage(session, await make_user("ada"), TODAY, output=900)
    await recompute()
    response = await client.get("/api/v1/leaderboard?period=year&period=day&metric=tokens")
    assert response.status_code == 200, response.text
    assert response.json()["period"] == "day"


async def test_long_streaks_and_active_days_span_many_weeks(
    client: httpx.AsyncClient, session: AsyncSession, make_user: MakeUser, recompute: Recompute
) -> None:
    marathon = await make_user("marathon")
    seventy = await make_user("seventy")
    gap = await make_user("gap")
    for back in range(130):
        await usage(session, marathon, TODAY - back * DAY)
    for back in range(1, 71):  # up to yesterday: still current
        await usage(session, seventy, TODAY - back * DAY, model="a")
        await usage(session, seventy, TODAY - back * DAY, model="b")
    for back in (*range(64), *range(65, 100)):
        await usage(session, gap, TODAY - back * DAY)
    await recompute()

    streaks = await board(client, period="all", metric="streak")
    assert [(name, value) for name, _, value in ranks(streaks)] == [("marathon", 130), ("seventy", 70), ("gap", 64)]
    days = await board(client, period="all", metric="active_days")
    assert [(name, value) for name, _, value in ranks(days)] == [("marathon", 130), ("gap", 99), ("seventy", 70)]
    month = await board(client, period="30d", metric="active_days")
    assert [(name, value) for name, _, value in ranks(month)] == [("gap", 30), ("marathon", 30), ("seventy", 29)]
    assert [(name, value) for name, _, value in ranks(await board(client, period="30d", metric="streak"))] == [
        ("gap", 30),
        ("marathon", 30),
        ("seventy", 29),
    ]


async def test_me_is_kept_between_reads_but_follows_privacy_and_exclusions_at_once(
    client: httpx.AsyncClient, session: AsyncSession, make_user: MakeUser, recompute: Recompute
) -> None:
    ada = await make_user("ada")
    root = await make_user("root", is_superuser=True)
    await usage(session, ada, TODAY, output=900)
    await recompute()
    first = (await board(client, period="day", who=ada))["me"]
    assert (first["rank"], first["reason"]) == (1, None)
    # A second read is answered from the cache: the same standing, even with the row gone.
    await session.execute(delete(LeaderboardStanding).where(LeaderboardStanding.user_id == ada.model.id))
    await session.commit()
    assert (await board(client, period="day", who=ada))["me"] == first

    response = await client.patch("/api/v1/users/me", headers=ada.headers, json={"profile_public": False})
    assert response.status_code == 200, response.text
    assert (await board(client, period="day", who=ada))["me"]["reason"] == "no_usage"  # read anew
    await client.patch("/api/v1/users/me", headers=ada.headers, json={"profile_public": True})
    await recompute()
    assert (await board(client, period="day", who=ada))["me"]["rank"] == 1

    path = f"/api/v1/admin/users/{ada.model.id}/leaderboard-exclusion"
    response = await client.post(path, headers=root.headers, json={"reason": "abuse"})
    assert response.status_code == 201, response.text
    assert (await board(client, period="day", who=ada))["me"]["reason"] == "excluded"
    assert (await client.delete(path, headers=root.headers)).status_code == 204
    assert (await board(client, period="day", who=ada))["me"]["rank"] == 1
