"""Superusers' price overrides, and repricing stored records (service and CLI)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from typer.testing import CliRunner

from codepulse.app import create_app
from codepulse.auth.models import User
from codepulse.cli import app as cli
from codepulse.config import Settings
from codepulse.db import Database
from codepulse.usage import price_overrides as usage_service
from codepulse.usage.models import UsageDaily, UsageRecord
from codepulse.usage.pricing import price_table
from codepulse.usage.service import reprice
from tests.auth.helpers import SignedIn, register
from tests.databases import TEST_SECRET_KEY, DatabaseServer
from tests.helpers import FakeClock
from tests.usage.helpers import record, sync

NOON = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
PRICING = "/api/v1/admin/pricing"
MYSTERY_PRICE = {
    "name": "Mystery 1",
    "provider": "acme",
    "input": "2",
    "output": "8",
    "cache_write_5m": "2.5",
    "cache_write_1h": "4",
    "cache_read": "0.2",
}


async def _superuser(client: httpx.AsyncClient, session: AsyncSession, username: str = "pricer") -> SignedIn:
    user = await register(client, username)
    await session.execute(update(User).where(User.username == username).values(is_superuser=True))
    await session.flush()
    return user


async def _cost(client: httpx.AsyncClient, who: SignedIn) -> Decimal:
    overview = (await client.get("/api/v1/dashboard/overview", headers=who.headers)).json()
    return Decimal(overview["periods"]["all"]["cost_usd"])


async def _assert_aggregates_match_records(session: AsyncSession) -> None:
    records = (
        await session.execute(
            select(
                func.count(), func.coalesce(func.sum(UsageRecord.cost_nanousd), 0), func.sum(UsageRecord.output_tokens)
            )
        )
    ).one()
    daily = (
        await session.execute(
            select(
                func.coalesce(func.sum(UsageDaily.records), 0),
                func.coalesce(func.sum(UsageDaily.cost_nanousd), 0),
                func.sum(UsageDaily.output_tokens),
            )
        )
    ).one()
    assert tuple(int(value or 0) for value in records) == tuple(int(value or 0) for value in daily)


async def test_prices_are_read_and_overridden_by_superusers_only(
    client: httpx.AsyncClient, session: AsyncSession, ada: SignedIn
) -> None:
    denied = await client.get(PRICING, headers=ada.headers)
    assert denied.status_code == 403
    assert denied.json()["code"] == "superuser_required"
    assert (await client.put(f"{PRICING}/x", headers=ada.headers, json=MYSTERY_PRICE)).status_code == 403
    root = await _superuser(client, session)

    listed = (await client.get(PRICING, headers=root.headers)).json()
    assert listed["version"] == price_table().version
    assert len(listed["items"]) == len(price_table().prices)
    opus = (await client.get(f"{PRICING}/claude-opus-4-0", headers=root.headers)).json()  # an alias
    assert (opus["model"], opus["source"], opus["input"], opus["cache_write_1h"]) == (
        "claude-opus-4",
        "file",
        "15",
        "30",
    )
    missing = await client.get(f"{PRICING}/mystery-1", headers=root.headers)
    assert missing.status_code == 404
    assert missing.json()["code"] == "model_price_not_found"

    created = await client.put(f"{PRICING}/Mystery-1", headers=root.headers, json=MYSTERY_PRICE)
    assert created.status_code == 200, created.text
    assert (created.json()["model"], created.json()["source"]) == ("mystery-1", "override")
    assert created.json()["version"].startswith("override:")
    # Overriding a shipped price keeps the shipped one visible.
    cheaper = await client.put(
        f"{PRICING}/anthropic/claude-opus-4-5", headers=root.headers, json={**MYSTERY_PRICE, "input": "4.5"}
    )
    assert cheaper.json()["file_price"]["input"] == "5"
    assert cheaper.json()["input"] == "4.5"
    invalid = await client.put(f"{PRICING}/m", headers=root.headers, json={**MYSTERY_PRICE, "input": "0.0000001"})
    assert invalid.status_code == 422

    assert (await client.delete(f"{PRICING}/claude-opus-4-5", headers=root.headers)).status_code == 204
    assert (await client.get(f"{PRICING}/claude-opus-4-5", headers=root.headers)).json()["source"] == "file"
    gone = await client.delete(f"{PRICING}/claude-opus-4-5", headers=root.headers)
    assert gone.status_code == 404
    assert gone.json()["code"] == "price_override_not_found"


async def test_reprice_applies_new_prices_to_stored_records_and_aggregates(
    client: httpx.AsyncClient, session: AsyncSession, db: Database, clock: FakeClock
) -> None:
    clock.now = NOON
    ada = await register(client, "ada")
    old = NOON - timedelta(days=10)
    await sync(
        client,
        ada,
        [
            record("new", at=NOON, model="mystery-1", input=1_000_000, output=0),
            record("old", at=old, model="MYSTERY-1", input=1_000_000, output=0),
            record("known", at=NOON, model="claude-haiku-4-5", input=1_000_000, output=0),
        ],
    )
    assert await _cost(client, ada) == Decimal(1)  # only Haiku 4.5 is priced
    root = await _superuser(client, session)
    assert (await client.put(f"{PRICING}/mystery-1", headers=root.headers, json=MYSTERY_PRICE)).status_code == 200
    # New syncs use the new price at once; stored records wait for a reprice.
    assert await _cost(client, ada) == Decimal(1)

    report = await reprice(db, since=(NOON - timedelta(days=1)).date())
    assert (report.users, report.records, report.changed) == (1, 2, 1)
    assert await _cost(client, ada) == Decimal(3)
    models = (await client.get("/api/v1/dashboard/models?range=all", headers=ada.headers)).json()
    assert models["unpriced_records"] == 1  # the old record, outside --since

    report = await reprice(db)
    assert (report.records, report.changed, report.cost_delta_nanousd) == (3, 1, 2_000_000_000)
    assert await _cost(client, ada) == Decimal(5)
    assert (await reprice(db)).changed == 0  # idempotent
    await _assert_aggregates_match_records(session)


async def test_reprice_moves_records_when_an_alias_changes(
    client: httpx.AsyncClient, session: AsyncSession, db: Database, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock.now = NOON
    ada = await register(client, "ada")
    await sync(client, ada, [record("r", at=NOON, model="haiku-fast-2025", input=1_000_000, output=0, cache_read=10)])
    table = price_table()
    aliased = dataclasses.replace(table, aliases={**table.aliases, "haiku-fast-2025": "claude-haiku-4-5"})
    monkeypatch.setattr(usage_service, "price_table", lambda: aliased)
    report = await reprice(db)
    assert report.models_moved == {"haiku-fast-2025 -> claude-haiku-4-5": 1}
    models = (await client.get("/api/v1/dashboard/models?range=all", headers=ada.headers)).json()
    assert [(m["model"], m["records"], m["tokens"]["cache_read"]) for m in models["items"]] == [
        ("claude-haiku-4-5", 1, 10)
    ]
    await _assert_aggregates_match_records(session)


async def test_reprice_command(
    database_server: DatabaseServer, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    url = await database_server.clone("reprice")
    settings = make_settings(DATABASE_URL=url)
    clock = FakeClock()
    clock.now = NOON
    app = create_app(settings, clock=clock)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as client,
    ):
        ada = await register(client, "ada")
        await sync(client, ada, [record("m", at=NOON, model="mystery-1", input=1_000_000, output=0)])
        database: Database = app.state.database
        async with database.transaction() as session:
            await session.execute(update(User).where(User.username == "ada").values(is_superuser=True))
        assert (await client.put(f"{PRICING}/mystery-1", headers=ada.headers, json=MYSTERY_PRICE)).status_code == 200

        env: dict[str, Any] = {
            "DATABASE_URL": url,
            "SECRET_KEY": TEST_SECRET_KEY,
            "VAR_DIR": str(tmp_path / "var"),
            "LOG_LEVEL": "WARNING",
        }
        result = await asyncio.to_thread(
            CliRunner().invoke, cli, ["usage", "reprice", "--since", date(2026, 11, 1).isoformat()], env=env
        )
        assert result.exit_code == 0, result.output
        assert "repriced 1 of 1 records of 1 users; cost changed by 2.000000000 USD" in result.output
        assert await _cost(client, ada) == Decimal(2)
        bad = await asyncio.to_thread(CliRunner().invoke, cli, ["usage", "reprice", "--since", "yesterday"], env=env)
        assert bad.exit_code == 2


async def test_new_syncs_are_priced_with_the_overrides_in_force(
    client: httpx.AsyncClient, session: AsyncSession, clock: FakeClock
) -> None:
    """A sync reuses the prices it compiled from the overrides while they stay the same, and sees
    every change at once (even one made at the same instant, as with this fixed clock)."""
    clock.now = NOON
    ada = await register(client, "ada")
    root = await _superuser(client, session)

    async def cost_of(message_id: str) -> int:
        await sync(client, ada, [record(message_id, at=NOON, model="mystery-1", input=1_000_000, output=0)])
        query = select(UsageRecord.cost_nanousd).where(UsageRecord.message_id == message_id)
        return int((await session.execute(query)).scalar_one())

    assert await cost_of("before") == 0
    assert (await client.put(f"{PRICING}/mystery-1", headers=root.headers, json=MYSTERY_PRICE)).status_code == 200
    assert await cost_of("first") == 2_000_000_000
    assert await cost_of("second") == 2_000_000_000
    changed = {**MYSTERY_PRICE, "input": "3"}
    assert (await client.put(f"{PRICING}/mystery-1", headers=root.headers, json=changed)).status_code == 200
    assert await cost_of("changed") == 3_000_000_000
    assert (await client.delete(f"{PRICING}/mystery-1", headers=root.headers)).status_code == 204
    assert await cost_of("deleted") == 0
