"""Concurrent exclusions of one account: one exclusion, every change audited once, in order.

On a database of its own with real commits and the app's own engine and pool, so concurrent
requests are concurrent transactions (on PostgreSQL, one connection each; on SQLite, writers
queueing on the file lock).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select, update

from codepulse.app import create_app
from codepulse.auth.models import User
from codepulse.config import Settings
from codepulse.db import Database
from codepulse.leaderboard.models import LeaderboardExclusion
from codepulse.orgs.models import AuditEvent
from tests.auth.helpers import register
from tests.databases import DatabaseServer
from tests.helpers import FakeClock


@pytest.fixture
async def race_app(
    database_server: DatabaseServer, make_settings: Callable[..., Settings], clock: FakeClock
) -> AsyncIterator[FastAPI]:
    settings = make_settings(DATABASE_URL=await database_server.clone("exclusion_race"))
    app = create_app(settings, clock=clock)
    async with app.router.lifespan_context(app):
        yield app


async def test_concurrent_exclusions_of_one_account_keep_one_and_audit_each_change(race_app: FastAPI) -> None:
    database: Database = race_app.state.database
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=race_app), base_url="http://t") as client:
        root = await register(client, "admin-ada")
        target = await register(client, "target")
        async with database.transaction() as session:
            await session.execute(update(User).where(User.username == "admin-ada").values(is_superuser=True))
        path = f"/api/v1/admin/users/{target.user['id']}/leaderboard-exclusion"
        reasons = [f"reason {n}" for n in range(8)]
        responses = await asyncio.gather(
            *(client.post(path, headers=root.headers, json={"reason": reason}) for reason in reasons)
        )
    assert Counter(response.status_code for response in responses) == {201: 1, 200: 7}
    async with database.transaction(write=False) as session:
        [row] = (await session.scalars(select(LeaderboardExclusion))).all()
        events = (await session.scalars(select(AuditEvent).where(AuditEvent.org_id.is_(None)))).all()
    assert row.reason in reasons
    assert len(events) == 8
    assert {event.action for event in events} == {"leaderboard.user_excluded"}
    # The changes form one chain: each replaced the reason the one before it set, none was lost.
    previous = {event.details["reason"]: event.details.get("previous_reason") for event in events}
    chain: list[str] = [row.reason or ""]
    while (before := previous[chain[-1]]) is not None:
        chain.append(before)
    assert sorted(chain) == reasons
    [first] = [event for event in events if "previous_reason" not in event.details]
    assert first.details["reason"] == chain[-1]
