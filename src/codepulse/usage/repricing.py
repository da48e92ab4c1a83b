"""Repricing: stored costs (and model keys, after an alias change) recomputed with the prices in
force, the differences moved into the daily aggregates (`codepulse usage reprice`)."""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal

import structlog

from codepulse.clock import ClockFunc, utcnow
from codepulse.config import Settings
from codepulse.db import Database
from codepulse.usage.models import TOKEN_COLUMNS
from codepulse.usage.price_overrides import load_price_book
from codepulse.usage.pricing import Price, PriceBook, nanousd_to_usd
from codepulse.usage.repository import UsageRepository

log = structlog.get_logger("codepulse.usage")


def _cost(price: Price | None, tokens: Sequence[int], fast: bool) -> int:
    if price is None:
        return 0
    return price.cost_nanousd(tokens[0], tokens[1], tokens[2], tokens[3], tokens[4], fast=fast)


@dataclass
class RepriceReport:
    users: int = 0
    records: int = 0
    changed: int = 0
    cost_delta_nanousd: int = 0
    models_moved: dict[str, int] = field(default_factory=dict)

    @property
    def cost_delta_usd(self) -> Decimal:
        return nanousd_to_usd(self.cost_delta_nanousd)


def reprice_database(settings: Settings, since: date | None) -> RepriceReport:
    """`reprice` on the configured database (blocking; for the CLI)."""

    async def run() -> RepriceReport:
        database = Database.from_settings(settings)
        try:
            return await reprice(database, since=since)
        finally:
            await database.dispose()

    return asyncio.run(run())


async def reprice(database: Database, *, since: date | None = None, clock: ClockFunc = utcnow) -> RepriceReport:
    """Recompute stored costs (and model keys, after an alias change) with the prices in force, and
    move the differences into the daily aggregates. One transaction per user, under the user's
    sync lock, so it can run while clients sync. `since` limits it to records of that local day
    or later."""
    report = RepriceReport()
    async with database.transaction(write=False) as session:
        book = await load_price_book(session)
        users = await UsageRepository(session).users_with_records(since)
    for user_id in users:
        async with database.transaction() as session:
            await _reprice_user(UsageRepository(session), user_id, book, since, clock(), report)
        report.users += 1
    log.info(
        "usage.repriced",
        users=report.users,
        records=report.records,
        changed=report.changed,
        cost_delta_nanousd=report.cost_delta_nanousd,
    )
    return report


async def _reprice_user(
    repo: UsageRepository, user_id: uuid.UUID, book: PriceBook, since: date | None, now: datetime, report: RepriceReport
) -> None:
    await repo.lock_user(user_id)
    changes = []
    deltas: dict[tuple[date, str, str], list[int]] = defaultdict(lambda: [0] * 9)
    for row in await repo.records_of(user_id, since):
        report.records += 1
        tokens = [int(getattr(row, name)) for name in TOKEN_COLUMNS]
        key = book.model_key(row.model)
        price = book.price(key)
        cost = _cost(price, tokens, row.speed == "fast")
        version = price.version if price is not None else book.table.version
        priced = price is not None
        if (key, cost, priced, version) == (row.model_key, row.cost_nanousd, bool(row.priced), row.pricing_version):
            continue
        changes.append(
            {
                "message_id": row.message_id,
                "source": row.source,
                "request_id": row.request_id,
                "model_key": key,
                "cost_nanousd": cost,
                "priced": priced,
                "pricing_version": version,
                "updated_at": now,
            }
        )
        report.changed += 1
        report.cost_delta_nanousd += cost - row.cost_nanousd
        if key != row.model_key:
            move = f"{row.model_key} -> {key}"
            report.models_moved[move] = report.models_moved.get(move, 0) + 1
        # The record leaves its old group and joins its new one (the same group unless the key moved).
        old = deltas[(row.day, row.source, row.model_key)]
        new = deltas[(row.day, row.source, key)]
        for i, value in enumerate(tokens):
            old[i] -= value
            new[i] += value
        old[6] -= row.cost_nanousd
        new[6] += cost
        old[7] -= 1
        new[7] += 1
        old[8] -= 0 if row.priced else 1
        new[8] += 0 if priced else 1
    if not changes:
        return
    await repo.reprice_records(user_id, changes)
    moved = [(group, values) for group, values in sorted(deltas.items()) if any(values)]
    await repo.add_to_daily([(user_id, *group, *values) for group, values in moved])
    await repo.add_to_platform([(*group, *values) for group, values in moved])
    await repo.prune_empty_daily(user_id)
