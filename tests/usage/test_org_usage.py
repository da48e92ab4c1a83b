"""GET /api/v1/orgs/{org}/usage: members who share their usage, for admins."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from tests.auth.helpers import register
from tests.helpers import FakeClock, Mailbox
from tests.orgs.helpers import add_member, create_org, put_on_plan
from tests.usage.helpers import record, sync

NOON = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


async def test_admins_see_members_who_share_and_nobody_else(
    client: httpx.AsyncClient, session: AsyncSession, mailbox: Mailbox, clock: FakeClock
) -> None:
    clock.now = NOON
    owner = await register(client, "owner")
    await create_org(client, owner, "engines")
    await put_on_plan(session, "engines", "pro")  # four members: more seats than the free plan's
    admin = await add_member(client, session, mailbox, owner, "engines", "boss", "admin")
    sharer = await add_member(client, session, mailbox, owner, "engines", "sharer", "member")
    private = await add_member(client, session, mailbox, owner, "engines", "private", "member")
    outsider = await register(client, "outsider")

    await sync(client, sharer, [record("s1", at=NOON, input=100, output=900)])
    await sync(client, sharer, [record("s2", at=NOON - timedelta(days=45), input=1, output=1)])
    await sync(client, private, [record("p1", at=NOON, input=5_000, output=5_000)])
    await sync(client, outsider, [record("o1", at=NOON, input=7, output=7)])
    opted_out = await client.patch(
        "/api/v1/usage/settings", headers=private.headers, json={"share_usage_with_orgs": False}
    )
    assert opted_out.status_code == 200

    response = await client.get("/api/v1/orgs/engines/usage?range=30d", headers=admin.headers)
    assert response.status_code == 200, response.text
    usage = response.json()
    assert (usage["members_sharing"], usage["members_not_sharing"]) == (3, 1)
    assert [m["user"]["username"] for m in usage["members"]] == ["sharer", "boss", "owner"]
    assert usage["members"][0]["tokens"]["total"] == 1_000  # the 45-day-old record is out of range
    assert usage["members"][0]["last_active"] == "2026-11-23"
    assert usage["totals"]["tokens"]["total"] == 1_000
    assert usage["totals"]["active_members"] == 1
    everything = (await client.get("/api/v1/orgs/engines/usage?range=all", headers=owner.headers)).json()
    assert everything["totals"]["records"] == 2
    assert everything["start"] is None

    member = await client.get("/api/v1/orgs/engines/usage", headers=sharer.headers)
    assert member.status_code == 403
    assert member.json()["code"] == "insufficient_role"
    stranger = await client.get("/api/v1/orgs/engines/usage", headers=outsider.headers)
    assert stranger.status_code == 404
