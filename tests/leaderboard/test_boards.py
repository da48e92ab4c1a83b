"""Organization boards, one user's standings, and the superusers' recompute."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from codepulse.orgs.models import Role
from codepulse.usage.models import UsageSettings
from tests.factories import MakeMember, MakeOrg, MakeUser
from tests.leaderboard.conftest import Recompute
from tests.leaderboard.helpers import board, ranks, usage

TODAY = date(2026, 12, 3)


async def test_org_board_ranks_members_who_share_public_or_not(
    client: httpx.AsyncClient,
    session: AsyncSession,
    make_user: MakeUser,
    make_org: MakeOrg,
    make_member: MakeMember,
    recompute: Recompute,
    now: datetime,
) -> None:
    owner = await make_user("owner")
    org = await make_org(owner, slug="engines")
    viewer = await make_member(org, Role.VIEWER, "viewer")
    private = await make_member(org, Role.MEMBER, "private", profile_public=False)
    hidden = await make_member(org, Role.MEMBER, "hidden")
    outsider = await make_user("outsider")
    await usage(session, owner, TODAY, output=100)
    await usage(session, private, TODAY, output=5_000)
    await usage(session, hidden, TODAY, output=9_000)
    await usage(session, outsider, TODAY, output=99_000)
    session.add(UsageSettings(user_id=hidden.model.id, share_usage_with_orgs=False, updated_at=now))
    await session.flush()
    await recompute()

    body = await board(client, "/api/v1/orgs/engines/leaderboard", viewer, period="day", metric="tokens")
    assert ranks(body) == [("private", 1, 5_000), ("owner", 2, 100)]
    assert body["total_ranked"] == 2
    assert body["me"]["reason"] == "no_usage"
    mine = (await board(client, "/api/v1/orgs/engines/leaderboard", owner, period="day"))["me"]
    assert (mine["rank"], mine["percentile"]) == (2, 0.0)
    assert (await board(client, "/api/v1/orgs/engines/leaderboard", hidden, period="day"))["me"]["reason"] == (
        "not_sharing"
    )
    # The public board ranks every public profile, sharing with organizations or not.
    assert ranks(await board(client, period="day")) == [
        ("outsider", 1, 99_000),
        ("hidden", 2, 9_000),
        ("owner", 3, 100),
    ]

    stranger = await client.get("/api/v1/orgs/engines/leaderboard", headers=outsider.headers)
    assert stranger.status_code == 404
    anonymous = await client.get("/api/v1/orgs/engines/leaderboard")
    assert anonymous.status_code == 401


async def test_org_board_rank_changes_and_pages(
    client: httpx.AsyncClient,
    session: AsyncSession,
    make_user: MakeUser,
    make_org: MakeOrg,
    make_member: MakeMember,
    recompute: Recompute,
    now: datetime,
) -> None:
    owner = await make_user("owner")
    org = await make_org(owner, slug="engines")
    members = [await make_member(org, Role.MEMBER, f"m{i}") for i in range(4)]
    for i, member in enumerate(members):
        await usage(session, member, TODAY, output=100 * (i + 1))
    await recompute()
    await usage(session, members[0], TODAY, output=1_000, model="other")
    await recompute(now + timedelta(minutes=10))

    path = "/api/v1/orgs/engines/leaderboard"
    first = await board(client, path, owner, period="day", limit=2)
    assert [(e["user"]["username"], e["rank"], e["previous_rank"], e["rank_change"]) for e in first["items"]] == [
        ("m0", 1, 4, 3),
        ("m3", 2, 1, -1),
    ]
    second = await board(client, path, owner, period="day", limit=2, cursor=first["next_cursor"])
    assert [e["user"]["username"] for e in second["items"]] == ["m2", "m1"]
    assert second["next_cursor"] is None
    assert second["total_ranked"] == 4


async def test_a_public_users_standings_on_every_board(
    client: httpx.AsyncClient, session: AsyncSession, make_user: MakeUser, recompute: Recompute
) -> None:
    ada = await make_user("ada")
    bob = await make_user("bob")
    shy = await make_user("shy", profile_public=False)
    await usage(session, ada, TODAY, output=500, cache_read=2_000_000, input=0)
    await usage(session, bob, TODAY - timedelta(days=40), output=900)
    await usage(session, shy, TODAY, output=1)
    await recompute()

    response = await client.get("/api/v1/leaderboard/users/ada")
    assert response.status_code == 200, response.text
    standings = response.json()
    assert set(standings["periods"]) == {"day", "week", "month", "all", "7d", "30d"}
    day = standings["periods"]["day"]["metrics"]
    assert day["tokens"] == {
        "rank": 1,
        "value": 2_000_500,
        "percentile": 100.0,
        "previous_rank": None,
        "total_ranked": 1,
    }
    assert day["cache_efficiency"]["value"] == 1.0
    everything = standings["periods"]["all"]["metrics"]["tokens"]
    assert (everything["rank"], everything["total_ranked"], everything["percentile"]) == (1, 2, 100.0)
    bobs = (await client.get("/api/v1/leaderboard/users/bob")).json()
    assert bobs["periods"]["day"]["metrics"]["tokens"]["rank"] is None
    assert bobs["periods"]["all"]["metrics"]["tokens"]["percentile"] == 0.0

    assert (await client.get("/api/v1/leaderboard/users/shy")).status_code == 404
    assert (await client.get("/api/v1/leaderboard/users/shy", headers=ada.headers)).status_code == 404
    own = await client.get("/api/v1/leaderboard/users/shy", headers=shy.headers)
    assert own.status_code == 200
    assert own.json()["periods"]["day"]["metrics"]["tokens"]["value"] == 1
    missing = await client.get("/api/v1/leaderboard/users/nobody")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"


async def test_superusers_recompute_now(
    client: httpx.AsyncClient, session: AsyncSession, make_user: MakeUser, now: datetime
) -> None:
    admin = await make_user("admin", is_superuser=True)
    user = await make_user("user")
    await usage(session, user, TODAY, output=42)

    assert (await client.post("/api/v1/admin/leaderboard/recompute")).status_code == 401
    forbidden = await client.post("/api/v1/admin/leaderboard/recompute", headers=user.headers)
    assert forbidden.status_code == 403
    assert (await board(client, period="day"))["items"] == []

    response = await client.post("/api/v1/admin/leaderboard/recompute", headers=admin.headers)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["totals"]["day"]["tokens"] == 1
    assert result["totals"]["day"]["streak"] == 1
    assert result["totals"]["month"]["cache_efficiency"] == 0
    assert ranks(await board(client, period="day")) == [("user", 1, 42)]


async def test_an_exclusion_takes_the_account_off_the_boards_at_once(
    client: httpx.AsyncClient, session: AsyncSession, make_user: MakeUser, recompute: Recompute
) -> None:
    admin = await make_user("admin", is_superuser=True)
    cheater = await make_user("cheater")
    honest = await make_user("honest")
    await usage(session, cheater, TODAY, output=10**9)
    await usage(session, honest, TODAY, output=10)
    await recompute()
    assert [name for name, _, _ in ranks(await board(client, period="day"))] == ["cheater", "honest"]

    path = f"/api/v1/admin/users/{cheater.model.id}/leaderboard-exclusion"
    excluded = await client.post(path, headers=admin.headers, json={"reason": "fake usage"})
    assert excluded.status_code == 201, excluded.text
    assert ranks(await board(client, period="day")) == [("honest", 2, 10)]
    assert (await board(client, period="day", who=cheater))["me"]["reason"] == "excluded"
    assert (await client.get("/api/v1/leaderboard/users/cheater")).json()["periods"]["day"]["metrics"]["tokens"][
        "rank"
    ] is None
    await recompute()
    assert ranks(await board(client, period="day")) == [("honest", 1, 10)]

    assert (await client.delete(path, headers=admin.headers)).status_code == 204
    await recompute()
    assert [name for name, _, _ in ranks(await board(client, period="day"))] == ["cheater", "honest"]
