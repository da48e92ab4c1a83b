"""The platform's daily sums (`usage_platform_daily`, read by the superusers' statistics) stay
equal to the sums of every user's daily aggregates, whatever changes them: syncs (new records,
records that grow, replays, several chunks), repricing, an account's deletion; and a rebuild
counts rows written around the repository."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from codepulse.auth.models import User
from codepulse.db import Database
from codepulse.usage import price_overrides as usage_prices
from codepulse.usage import sync as usage_sync
from codepulse.usage.models import UsageDaily, UsagePlatformDaily, UsagePlatformSyncs, UsageSyncBatch
from codepulse.usage.pricing import price_table
from codepulse.usage.repository import DAILY_SUMS, UsageRepository
from codepulse.usage.service import reprice
from tests.auth.helpers import SignedIn, register
from tests.factories import UserFactory
from tests.helpers import FakeClock
from tests.usage.helpers import record, streamed_lines, sync

NOON = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
Key = tuple[Any, str, str]


@pytest.fixture(autouse=True)
def _now(clock: FakeClock) -> None:
    clock.now = NOON


async def _recomputed(session: AsyncSession) -> dict[Key, tuple[int, ...]]:
    daily = UsageDaily.__table__.c
    groups = (daily.day, daily.source, daily.model)
    rows = await session.execute(select(*groups, *(func.sum(daily[name]) for name in DAILY_SUMS)).group_by(*groups))
    return {(day, source, model): tuple(int(value) for value in sums) for day, source, model, *sums in rows.all()}


async def _platform(session: AsyncSession) -> dict[Key, tuple[int, ...]]:
    """The stored platform sums, but rows left at zero (their records all moved or went)."""
    platform = UsagePlatformDaily.__table__.c
    rows = await session.execute(
        select(platform.day, platform.source, platform.model, *(platform[name] for name in DAILY_SUMS))
    )
    sums = {(day, source, model): tuple(int(value) for value in values) for day, source, model, *values in rows.all()}
    return {key: values for key, values in sums.items() if any(values)}


async def _syncs(session: AsyncSession) -> tuple[dict[Any, int], dict[Any, int]]:
    """(stored syncs per UTC day but zeros, the batches counted per UTC day of their creation)."""
    stored = {
        day: int(count)
        for day, count in await session.execute(select(UsagePlatformSyncs.day, UsagePlatformSyncs.syncs))
        if count
    }
    counted: dict[Any, int] = {}
    for (created_at,) in await session.execute(select(UsageSyncBatch.created_at)):
        day = created_at.astimezone(UTC).date()
        counted[day] = counted.get(day, 0) + 1
    return stored, counted


async def assert_platform_matches(session: AsyncSession) -> dict[Key, tuple[int, ...]]:
    stored = await _platform(session)
    assert stored == await _recomputed(session)
    syncs, batches = await _syncs(session)
    assert syncs == batches
    return stored


def _records(stored: dict[Key, tuple[int, ...]]) -> int:
    return sum(values[DAILY_SUMS.index("records")] for values in stored.values())


async def test_syncs_replays_and_growing_records_keep_the_platform_sums(
    client: httpx.AsyncClient, session: AsyncSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(usage_sync, "SYNC_CHUNK", 4)  # several chunks per batch, added up once
    ada, bob = await register(client, "ada"), await register(client, "bob")
    days = [NOON - timedelta(days=offset, hours=offset) for offset in range(3)]
    first = [
        record(f"m{i}", at=days[i % 3], model=("claude-sonnet-4-5", "mystery-model")[i % 2], output=10 + i)
        for i in range(10)
    ]
    for who in (ada, bob):
        assert (await sync(client, who, first))["inserted"] == 10
    assert _records(await assert_platform_matches(session)) == 20
    assert (await _syncs(session))[0] == {NOON.date(): 2}
    # A replay changes nothing; a re-cut batch with grown and new records takes the general path.
    assert (await sync(client, ada, first))["unchanged"] == 10
    grown = [*streamed_lines("m1", days[1], [30, 50]), record("m3", at=days[0], output=99), record("n1", at=days[2])]
    result = await sync(client, ada, [*first[4:], *grown])
    assert (result["inserted"], result["updated"]) == (1, 3)  # both streamed lines of m1 grow it
    stored = await assert_platform_matches(session)
    assert _records(stored) == 21
    assert (await _syncs(session))[0] == {NOON.date(): 3}  # the replay is no new batch
    # m1 and m7 of both users: ada's m1 grew to 50 (stored under its first model, mystery-model).
    assert stored[(days[1].date(), "claude-code", "mystery-model")][1] == 50 + 17 + 11 + 17


async def test_repricing_moves_costs_and_models_in_the_platform_sums(
    client: httpx.AsyncClient, session: AsyncSession, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    ada = await register(client, "ada")
    await sync(
        client,
        ada,
        [
            record("a", at=NOON, model="mystery-1", input=1_000_000, output=0),
            record("b", at=NOON - timedelta(days=2), model="haiku-fast-2025", input=1_000, output=0),
            record("c", at=NOON, model="claude-haiku-4-5", input=1_000, output=0),
        ],
    )
    before = await assert_platform_matches(session)
    await UsageRepository(session).save_price_override(
        "mystery-1",
        {"name": "M", "provider": "acme", "input": "2", "output": "8", "cache_write_5m": "2.5",
         "cache_write_1h": "4", "cache_read": "0.2"},
        None,
        NOON,
    )  # fmt: skip
    await session.flush()
    table = price_table()
    aliased = dataclasses.replace(table, aliases={**table.aliases, "haiku-fast-2025": "claude-haiku-4-5"})
    monkeypatch.setattr(usage_prices, "price_table", lambda: aliased)
    report = await reprice(db)
    assert report.changed == 2
    after = await assert_platform_matches(session)
    assert after != before
    assert (NOON.date() - timedelta(days=2), "claude-code", "claude-haiku-4-5") in after


async def test_a_deleted_account_leaves_the_platform_sums(client: httpx.AsyncClient, session: AsyncSession) -> None:
    ada, bob = await register(client, "ada"), await register(client, "bob")
    for who, count in ((ada, 3), (bob, 2)):
        await sync(client, who, [record(f"m{i}", at=NOON - timedelta(days=i)) for i in range(count)])
    assert _records(await assert_platform_matches(session)) == 5
    assert (await client.delete("/api/v1/users/me", headers=ada.headers)).status_code == 204
    assert _records(await assert_platform_matches(session)) == 2
    assert (await _syncs(session))[0] == {NOON.date(): 1}


async def test_a_refused_deletion_changes_nothing(
    client: httpx.AsyncClient, session: AsyncSession, make_org: Any
) -> None:
    ada: SignedIn = await register(client, "ada")
    await sync(client, ada, [record("m", at=NOON)])
    owner = await session.scalar(select(User).where(User.username == "ada"))
    assert owner is not None
    created = await client.post("/api/v1/orgs", headers=ada.headers, json={"name": "Engines", "slug": "engines"})
    assert created.status_code == 201, created.text
    refused = await client.delete("/api/v1/users/me", headers=ada.headers)
    assert refused.status_code == 409, refused.text  # the last owner of an organization
    assert _records(await assert_platform_matches(session)) == 1


async def test_a_rebuild_counts_rows_written_around_the_repository(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    """Rows a bulk load (here, ORM objects) writes without the repository are not in the platform
    sums until `rebuild_platform` recomputes them, with the synced ones."""
    ada = await register(client, "ada")
    await sync(client, ada, [record("m", at=NOON)])
    user = UserFactory.create()
    await session.flush()
    values = dict.fromkeys(DAILY_SUMS, 3)
    session.add_all(
        [
            UsageDaily(user_id=user.id, day=NOON.date(), source="codex", model="gpt-5", **values),
            UsageDaily(user_id=user.id, day=NOON.date() - timedelta(days=1), source="codex", model="gpt-5", **values),
            UsageSyncBatch(user_id=user.id, digest="d" * 64, created_at=NOON - timedelta(days=1)),
        ]
    )
    await session.flush()
    assert _records(await _platform(session)) == 1  # written around the repository: not counted
    await UsageRepository(session).rebuild_platform()
    assert _records(await assert_platform_matches(session)) == 7
    assert (await _syncs(session))[0] == {NOON.date(): 1, NOON.date() - timedelta(days=1): 1}
