"""Notifications other slices produce through organization events (codepulse.events): billing's
quota warnings (80 %) and quota reached (100 %), once per limit and period, to admins and owners;
nothing from a refused addition. (Billing's payment and plan events: tests/billing/test_webhooks.py.)"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from codepulse.config import Settings
from codepulse.notifications.models import Notification
from tests.factories import Account, MakeMember, MakeOrg, MakeUser
from tests.helpers import FakeClock

API = "/api/v1"


@pytest.fixture
async def client(
    app_factory: Callable[[Settings], FastAPI], make_settings: Callable[..., Settings]
) -> AsyncIterator[httpx.AsyncClient]:
    app = app_factory(make_settings(PLAN_LIMITS={"free": {"repositories": 5}}))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as client,
    ):
        yield client


async def _connect(client: httpx.AsyncClient, owner: Account, name: str) -> httpx.Response:
    return await client.post(
        f"{API}/orgs/engines/repositories",
        headers=owner.headers,
        json={"clone_url": f"https://140.82.112.3/o/{name}.git"},
    )


async def _notified(session: AsyncSession) -> list[tuple[str, str, dict[str, Any]]]:
    rows = (await session.execute(select(Notification.user_id, Notification.kind, Notification.data))).all()
    return sorted((str(row.user_id), row.kind, row.data) for row in rows)


async def test_quota_warning_and_quota_reached_once_per_period_to_admins(
    client: httpx.AsyncClient,
    session: AsyncSession,
    make_user: MakeUser,
    make_org: MakeOrg,
    make_member: MakeMember,
    clock: FakeClock,
) -> None:
    owner = await make_user("ada")
    org = await make_org(owner, slug="engines")
    admin = await make_member(org, "admin", "adm")
    await make_member(org, "viewer", "vic")
    for n in range(3):
        assert (await _connect(client, owner, f"r{n}")).status_code == 201
    assert await _notified(session) == []  # 3 of 5: under 80 %

    fourth = await _connect(client, owner, "r3")
    assert fourth.status_code == 201
    warned = await _notified(session)
    assert {(user, kind) for user, kind, _ in warned} == {
        (str(owner.model.id), "quota_warning"),
        (str(admin.model.id), "quota_warning"),
    }
    assert warned[0][2] | {"org_id": None} == {
        "org_id": None,
        "resource": "repositories",
        "limit": 5,
        "used": 4,
        "plan": "free",
    }
    clock.advance(minutes=1)  # the list is newest first
    fifth = await _connect(client, owner, "r4")
    assert fifth.status_code == 201
    assert (await _connect(client, owner, "r5")).status_code == 402  # refused: announces nothing
    kinds = sorted(kind for _, kind, _ in await _notified(session))
    assert kinds == ["quota_reached", "quota_reached", "quota_warning", "quota_warning"]

    # Back under the limit and up again in the same period: no second notification.
    archived = await client.patch(
        f"{API}/repositories/{fifth.json()['id']}", headers=owner.headers, json={"archived": True}
    )
    assert archived.status_code == 200
    assert (await _connect(client, owner, "r6")).status_code == 201
    assert len(await _notified(session)) == 4
    listed = (await client.get(f"{API}/notifications", headers=admin.headers)).json()["items"]
    assert [item["kind"] for item in listed] == ["quota_reached", "quota_warning"]
    assert listed[0]["org_id"] == str(org.id)


async def test_an_invited_user_with_a_verified_email_is_notified(
    client: httpx.AsyncClient, session: AsyncSession, make_user: MakeUser, make_org: MakeOrg
) -> None:
    owner = await make_user("ada")
    org = await make_org(owner, slug="engines")
    grace = await make_user("grace")
    unverified = await make_user("hedy", email_verified_at=None)
    for user in (grace, unverified):
        invited = await client.post(
            f"{API}/orgs/engines/invitations", headers=owner.headers, json={"email": user.model.email, "role": "member"}
        )
        assert invited.status_code == 201, invited.text
    # (The owner is told the seats are all taken: the free plan has three.)
    notified = [entry for entry in await _notified(session) if entry[1] == "invitation_received"]
    assert [(user, kind) for user, kind, _ in notified] == [(str(grace.model.id), "invitation_received")]
    assert notified[0][2]["role"] == "member"
    items = (await client.get(f"{API}/notifications", headers=grace.headers)).json()["items"]
    assert (items[0]["title"], items[0]["org_id"]) == (f"{owner.model.name} invited you to {org.name}", str(org.id))
