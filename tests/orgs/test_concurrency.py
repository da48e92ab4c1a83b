"""Concurrent invitations: the seat quota and one open invitation per email hold under races.

These run on a database of their own with real commits and the app's own engine and pool, so
concurrent requests are concurrent transactions (on PostgreSQL, one connection each; on SQLite,
writers queueing on the file lock).
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from codepulse.app import create_app
from codepulse.config import Settings
from codepulse.db import Database
from codepulse.orgs.models import Invitation
from tests.auth.helpers import SignedIn, register
from tests.databases import DatabaseServer
from tests.helpers import FakeClock
from tests.orgs.helpers import create_org


@pytest.fixture
async def race_app(
    database_server: DatabaseServer, make_settings: Callable[..., Settings], clock: FakeClock
) -> AsyncIterator[FastAPI]:
    settings = make_settings(DATABASE_URL=await database_server.clone("orgs_race"), PLAN_LIMITS={"free": {"seats": 5}})
    app = create_app(settings, clock=clock)
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
async def client(race_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=race_app), base_url="http://t") as client:
        yield client


async def _owner_with_org(client: httpx.AsyncClient) -> SignedIn:
    ada = await register(client, "ada")
    await create_org(client, ada, "engines")
    return ada


def _invite(client: httpx.AsyncClient, owner: SignedIn, email: str) -> asyncio.Future[httpx.Response]:
    return asyncio.ensure_future(
        client.post("/api/v1/orgs/engines/invitations", headers=owner.headers, json={"email": email})
    )


async def _open_invitations(app: FastAPI) -> list[str]:
    database: Database = app.state.database
    async with database.transaction(write=False) as session:
        rows = await session.scalars(
            select(Invitation.email).where(Invitation.accepted_at.is_(None), Invitation.revoked_at.is_(None))
        )
        return sorted(rows)


async def test_concurrent_invitations_never_exceed_the_seats(client: httpx.AsyncClient, race_app: FastAPI) -> None:
    """Regression: 10 concurrent invitations with 4 seats free created 7 on PostgreSQL."""
    ada = await _owner_with_org(client)  # 1 of 5 seats
    responses = await asyncio.gather(*(_invite(client, ada, f"p{n}@example.com") for n in range(10)))
    assert Counter(r.status_code for r in responses) == {201: 4, 402: 6}
    assert len(await _open_invitations(race_app)) == 4


async def test_concurrent_invitations_of_one_email_open_one(client: httpx.AsyncClient, race_app: FastAPI) -> None:
    """Regression: 5 concurrent invitations of one email left 3 pending on PostgreSQL."""
    ada = await _owner_with_org(client)
    responses = await asyncio.gather(*(_invite(client, ada, "grace@example.com") for _ in range(5)))
    assert Counter(r.status_code for r in responses) == {201: 1, 409: 4}
    assert {r.json()["code"] for r in responses if r.status_code == 409} == {"already_invited"}
    assert await _open_invitations(race_app) == ["grace@example.com"]


async def test_the_database_refuses_a_second_open_invitation(client: httpx.AsyncClient, race_app: FastAPI) -> None:
    """The partial unique index is the last line: whatever the code path, one open invitation
    per organization and email; accepted or revoked ones do not count."""
    ada = await _owner_with_org(client)
    first = await _invite(client, ada, "grace@example.com")
    assert first.status_code == 201
    database: Database = race_app.state.database
    async with database.transaction() as session:
        original = await session.get(Invitation, uuid.UUID(first.json()["id"]))
        assert original is not None
        org_id, now = original.org_id, original.created_at

    def duplicate(revoked_at: datetime | None = None) -> Invitation:
        return Invitation(
            org_id=org_id,
            email="grace@example.com",
            role="member",
            token_hash=uuid.uuid4().hex,
            created_at=now,
            expires_at=now + timedelta(days=7),
            revoked_at=revoked_at,
        )

    with pytest.raises(IntegrityError):
        async with database.transaction() as session:
            session.add(duplicate())
    async with database.transaction() as session:
        session.add(duplicate(revoked_at=now))  # a closed one is no conflict
    async with database.transaction(write=False) as session:
        count = await session.scalar(select(func.count()).select_from(Invitation))
    assert count == 2


async def test_an_expired_invitation_is_replaced_by_a_new_one(
    client: httpx.AsyncClient, race_app: FastAPI, clock: FakeClock
) -> None:
    ada = await _owner_with_org(client)
    first = await _invite(client, ada, "grace@example.com")
    clock.advance(days=7, seconds=1)
    again = await _invite(client, ada, "grace@example.com")
    assert again.status_code == 201
    assert again.json()["id"] != first.json()["id"]
    assert await _open_invitations(race_app) == ["grace@example.com"]
    pending = await client.get("/api/v1/orgs/engines/invitations", headers=ada.headers)
    assert [item["id"] for item in pending.json()["items"]] == [again.json()["id"]]
