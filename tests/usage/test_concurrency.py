"""Concurrent and replayed syncs of the same records add up to exactly one sync.

These run on a database of their own with real commits and the app's own engine and pool, so
the eight requests really are eight transactions racing (on PostgreSQL, eight connections; on
SQLite, eight writers queueing on the file lock).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, text

from codepulse.app import create_app
from codepulse.config import Settings
from codepulse.db import Database
from codepulse.usage.models import UsageDaily, UsageRecord
from codepulse.usage.pricing import nanousd_to_usd, price_table
from tests.auth.helpers import register
from tests.databases import DatabaseServer
from tests.helpers import FakeClock
from tests.usage.helpers import record, sync

NOON = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
RESPONSES = 60


@pytest.fixture
async def race_client(
    database_server: DatabaseServer, make_settings: Callable[..., Settings]
) -> AsyncIterator[httpx.AsyncClient]:
    # Eight writers queue on SQLite's lock: what is checked is what they store, so a loaded
    # machine's long wait must stay a wait, not become a 503 at the default 5 s.
    settings = make_settings(DATABASE_URL=await database_server.clone("usage_race"), SQLITE_BUSY_TIMEOUT_MS=120_000)
    clock = FakeClock()
    clock.now = NOON
    app = create_app(settings, clock=clock)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as client,
    ):
        client.app = app  # type: ignore[attr-defined]
        yield client


def _streams() -> list[list[dict[str, Any]]]:
    """Realistic lines: each response is logged several times with its output growing; some are
    Codex responses with reasoning, some use 1-hour cache writes, a few are unknown models."""
    rng = random.Random(7)
    streams = []
    for i in range(RESPONSES):
        at = NOON - timedelta(minutes=7 * i)
        kind = i % 4
        fields: dict[str, Any] = {"input": rng.randint(1, 50), "cache_read": rng.randint(0, 90_000)}
        if kind == 0:
            fields |= {"model": "claude-opus-4-5-20251101", "cache_5m": rng.randint(0, 4_000)}
        elif kind == 1:
            fields |= {"model": "claude-sonnet-4-5-20250929", "cache_1h": rng.randint(0, 9_000)}
        elif kind == 2:
            fields |= {"model": "gpt-5.1-codex", "source": "codex", "reasoning": rng.randint(0, 300)}
        else:
            fields |= {"model": "qwen3-coder-local", "source": "opencode"}
        final = rng.randint(50, 3_000)
        steps = sorted({rng.randint(1, final) for _ in range(rng.randint(1, 4))} | {final})
        streams.append([record(f"msg_{i:03d}", at=at, output=out, **fields) for out in steps])
    return streams


def _expected(streams: list[list[dict[str, Any]]]) -> tuple[int, Decimal]:
    """Tokens and cost of one correct sync, computed independently from the API."""
    table = price_table()
    tokens = 0
    cost = 0
    for lines in streams:
        final = max(lines, key=lambda line: line["output_tokens"])
        counts = [
            final[name]
            for name in (
                "input_tokens",
                "output_tokens",
                "cache_creation_5m_tokens",
                "cache_creation_1h_tokens",
                "cache_read_tokens",
            )
        ]
        tokens += sum(counts)
        price = table.prices.get(table.model_key(final["model"]))
        cost += price.cost_nanousd(*counts, fast=False) if price else 0
    return tokens, nanousd_to_usd(cost)


async def _stored(client: httpx.AsyncClient) -> tuple[tuple[int, ...], tuple[int, ...]]:
    database: Database = client.app.state.database  # type: ignore[attr-defined]
    columns = ("output_tokens", "cache_read_tokens", "cost_nanousd")
    async with database.transaction(write=False) as session:
        records = (
            await session.execute(select(func.count(), *(func.sum(getattr(UsageRecord, name)) for name in columns)))
        ).one()
        daily = (
            await session.execute(
                select(func.sum(UsageDaily.records), *(func.sum(getattr(UsageDaily, name)) for name in columns))
            )
        ).one()
    return tuple(int(v) for v in records), tuple(int(v) for v in daily)


async def test_eight_concurrent_syncs_of_the_same_batch_count_once(race_client: httpx.AsyncClient) -> None:
    ada = await register(race_client, "ada")
    streams = _streams()
    batch = [line for lines in streams for line in lines]
    results = await asyncio.gather(*(sync(race_client, ada, batch) for _ in range(8)))
    tokens, cost = _expected(streams)
    # Exactly one of the eight inserted each record; every answer saw consistent totals.
    assert sum(result["inserted"] for result in results) == RESPONSES
    assert max(result["totals"]["tokens"] for result in results) == tokens
    final = await sync(race_client, ada, batch)
    assert (final["inserted"], final["updated"], final["unchanged"]) == (0, 0, len(batch))
    assert (final["totals"]["tokens"], Decimal(final["totals"]["cost_usd"])) == (tokens, cost)
    records, daily = await _stored(race_client)
    assert records == daily
    assert records[0] == RESPONSES


async def test_concurrent_syncs_of_partial_streams_end_at_the_final_counts(race_client: httpx.AsyncClient) -> None:
    """Eight syncs racing, each carrying a different, partly overlapping slice of the streamed lines
    (as when a CLI on a timer reads a log that is still being written)."""
    ada = await register(race_client, "ada")
    streams = _streams()
    rng = random.Random(11)
    slices = []
    for n in range(8):
        lines = [line for stream in streams for line in stream if rng.random() < 0.4]
        if n == 7:
            lines += [stream[-1] for stream in streams]  # someone has every final line
        rng.shuffle(lines)
        slices.append(lines)
    await asyncio.gather(*(sync(race_client, ada, lines) for lines in slices))
    tokens, cost = _expected(streams)
    final = await sync(race_client, ada, [line for stream in streams for line in stream])
    assert (final["inserted"], final["updated"]) == (0, 0)
    assert (final["totals"]["tokens"], Decimal(final["totals"]["cost_usd"])) == (tokens, cost)
    records, daily = await _stored(race_client)
    assert records == daily


@pytest.mark.postgres_only
async def test_count_events_is_served_by_its_index(race_client: httpx.AsyncClient) -> None:
    database: Database = race_client.app.state.database  # type: ignore[attr-defined]
    async with database.transaction(write=False) as session:
        await session.execute(text("SET LOCAL enable_seqscan = off"))
        plan = "\n".join(
            await session.scalars(
                text(
                    "EXPLAIN SELECT sum(quantity) FROM usage_events WHERE org_id = :org AND kind = 'scan' "
                    "AND occurred_at >= :since"
                ),
                {"org": "00000000-0000-0000-0000-000000000000", "since": NOON},
            )
        )
    assert "ix_usage_events_org_id_kind_occurred_at" in plan
