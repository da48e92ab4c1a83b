"""Queries on the usage domain's tables, and nothing else.

The sync path uses Core statements on the tables (bulk upserts with RETURNING) rather than ORM
objects: a first sync carries 10^4-10^5 records. The few statements that nearly every sync runs
are built once, below, with the helpers of `codepulse.db.direct` (SQL text sent straight to the
driver on PostgreSQL).
"""

from __future__ import annotations

import json
import typing
import uuid
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Label,
    Row,
    Table,
    and_,
    bindparam,
    cast,
    delete,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from codepulse.db import (
    Base,
    advisory_xact_lock,
    bulk_insert,
    bulk_upsert,
    epoch_day,
    rowcount,
    rows_by_keys,
    upsert,
    utc_day_number,
)
from codepulse.db.direct import AddToRows, GroupedSums, InsertIfAbsent, LockUnlessFound, insert_all_or_nothing
from codepulse.usage.models import (
    TOKEN_COLUMNS,
    PriceOverride,
    UsageDaily,
    UsageEvent,
    UsagePlatformDaily,
    UsagePlatformSyncs,
    UsageRecord,
    UsageSettings,
    UsageSyncBatch,
)


def _table(model: type[Base]) -> Table:
    return typing.cast(Table, model.__table__)


RECORDS = _table(UsageRecord)
DAILY = _table(UsageDaily)
PLATFORM_DAILY = _table(UsagePlatformDaily)
PLATFORM_SYNCS = _table(UsagePlatformSyncs)
SETTINGS = _table(UsageSettings)
OVERRIDES = _table(PriceOverride)
EVENTS = _table(UsageEvent)
BATCHES = _table(UsageSyncBatch)

# Summed in aggregates, in this order: the token columns, cost, record counts.
DAILY_SUMS = (*TOKEN_COLUMNS, "cost_nanousd", "records", "unpriced_records")
# What a sync reads of the stored records it receives again: their counts, then, for the few
# whose counts grow, the rest.
STORED_DETAILS = ("model_key", "day", "speed", "cost_nanousd", "priced", "client_cost_nanousd")
# The order of the rows `insert_records`, `raise_records` and `add_to_daily` take.
RECORD_COLUMNS = (
    "user_id",
    "message_id",
    "source",
    "request_id",
    "model",
    "model_key",
    "occurred_at",
    "day",
    *TOKEN_COLUMNS,
    "speed",
    "session_id",
    "machine_id",
    "cost_nanousd",
    "client_cost_nanousd",
    "priced",
    "pricing_version",
    "created_at",
    "updated_at",
)
DAILY_COLUMNS = ("user_id", "day", "source", "model", *DAILY_SUMS)
PLATFORM_KEY = ("day", "source", "model")
PLATFORM_COLUMNS = (*PLATFORM_KEY, *DAILY_SUMS)
# A record's key, after its user.
KEY_COLUMNS = ("message_id", "source", "request_id")
# The tokens totals count: all but reasoning, which is part of the output.
TOTAL_TOKEN_COLUMNS = TOKEN_COLUMNS[:5]

# The statements nearly every sync runs (see codepulse.db.direct).
_LOCK_UNLESS_STORED = LockUnlessFound(
    RECORDS,
    fixed=("user_id",),
    key_columns=KEY_COLUMNS,
    also=(OVERRIDES, ("model", "price", "updated_at"), ("model",)),
)
_CLAIM_BATCH = InsertIfAbsent(BATCHES, ("user_id", "digest", "created_at"), conflict=("user_id", "digest"))
_ADD_TO_DAILY = AddToRows(DAILY, DAILY_COLUMNS, key=("user_id", "day", "source", "model"), sums=DAILY_SUMS)
_ADD_TO_PLATFORM = AddToRows(PLATFORM_DAILY, PLATFORM_COLUMNS, key=PLATFORM_KEY, sums=DAILY_SUMS)
_ADD_TO_PLATFORM_SYNCS = AddToRows(PLATFORM_SYNCS, ("day", "syncs"), key=("day",), sums=("syncs",))
_DAY_TOTALS = GroupedSums(DAILY, where=("user_id",), group_by="day", sums=(TOTAL_TOKEN_COLUMNS, ("cost_nanousd",)))


def _lock_name(user_id: uuid.UUID) -> str:
    return f"usage:user:{user_id}"


def parse_overrides(text: str) -> list[tuple[str, dict[str, Any], datetime]]:
    """The price overrides as `price_overrides` gives them, from `lock_unless_stored`'s JSON."""
    return [
        (model, price, datetime.fromisoformat(updated_at).replace(tzinfo=UTC))
        for model, price, updated_at in json.loads(text)
    ]


@dataclass(frozen=True, slots=True)
class Sums:
    """Summed daily aggregates: tokens by kind, cost, records."""

    input: int = 0
    output: int = 0
    cache_creation_5m: int = 0
    cache_creation_1h: int = 0
    cache_read: int = 0
    reasoning: int = 0
    cost_nanousd: int = 0
    records: int = 0
    unpriced_records: int = 0

    @classmethod
    def of(cls, row: Any) -> Sums:
        return cls(*(int(getattr(row, name) or 0) for name in DAILY_SUMS))

    @property
    def total_tokens(self) -> int:
        return self.input + self.output + self.cache_creation_5m + self.cache_creation_1h + self.cache_read

    @property
    def total(self) -> int:  # as TokenCounts names it
        return self.total_tokens

    def __add__(self, other: Sums) -> Sums:
        return Sums(*(a + b for a, b in zip(self.values, other.values, strict=True)))

    @property
    def values(self) -> tuple[int, ...]:
        return (
            self.input,
            self.output,
            self.cache_creation_5m,
            self.cache_creation_1h,
            self.cache_read,
            self.reasoning,
            self.cost_nanousd,
            self.records,
            self.unpriced_records,
        )


def _sum(column: ColumnElement[Any], name: str) -> Label[int]:
    # PostgreSQL's sum(bigint) is numeric; cast back so both dialects answer ints.
    return cast(func.coalesce(func.sum(column), 0), BigInteger).label(name)


def _daily_sums() -> list[Label[int]]:
    return [_sum(DAILY.c[name], name) for name in DAILY_SUMS]


class UsageRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    # --- sync ------------------------------------------------------------------------------

    async def lock_user(self, user_id: uuid.UUID) -> None:
        """Serialise every change to one user's records and aggregates until the transaction ends."""
        await advisory_xact_lock(self.session, _lock_name(user_id))

    async def lock_unless_stored(
        self, user_id: uuid.UUID, keys: Sequence[tuple[str, str, str]]
    ) -> tuple[bool, str | None]:
        """Take the user's sync lock unless one of `keys` is stored: (whether it was taken, the
        price overrides as JSON text for `parse_overrides` when they were read with it, which
        PostgreSQL does in the same statement)."""
        return await _LOCK_UNLESS_STORED(self.session, _lock_name(user_id), (user_id,), keys)

    async def insert_new_records(self, rows: Sequence[Sequence[Any]]) -> bool:
        """Insert records read as new (rows of RECORD_COLUMNS; the caller holds the user lock).
        All or nothing: False, having written nothing and with the transaction still usable, when
        a key is stored after all."""
        return await insert_all_or_nothing(self.session, RECORDS, RECORD_COLUMNS, rows)

    async def claim_batch(self, user_id: uuid.UUID, digest: str, now: datetime) -> bool:
        """Note that this transaction applies the batch `digest`; False when it was applied before
        (by a committed transaction: a concurrent one applying it is waited for)."""
        return await _CLAIM_BATCH(self.session, user_id, digest, now)

    async def stored_counts(
        self, user_id: uuid.UUID, keys: Sequence[tuple[str, str, str]]
    ) -> dict[tuple[str, str, str], Sequence[int]]:
        """The token counts (TOKEN_COLUMNS) of the stored records with these (message_id, source,
        request_id) keys; keys not stored are absent."""
        found = await rows_by_keys(
            self.session,
            RECORDS,
            TOKEN_COLUMNS,
            fixed={"user_id": user_id},
            key_columns=KEY_COLUMNS,
            keys=keys,
        )
        return {keys[position]: counts for position, counts in found}

    async def stored_details(
        self, user_id: uuid.UUID, keys: Sequence[tuple[str, str, str]]
    ) -> dict[tuple[str, str, str], Sequence[Any]]:
        """STORED_DETAILS of the stored records with these keys."""
        found = await rows_by_keys(
            self.session,
            RECORDS,
            STORED_DETAILS,
            fixed={"user_id": user_id},
            key_columns=KEY_COLUMNS,
            keys=keys,
        )
        return {keys[position]: details for position, details in found}

    async def insert_records(self, rows: Sequence[Sequence[Any]]) -> int:
        """Insert records known to be new (rows of RECORD_COLUMNS; the caller holds the user lock
        and read their keys as absent). All or nothing: a key already there is an IntegrityError."""
        return await bulk_insert(self.session, RECORDS, RECORD_COLUMNS, rows)

    async def raise_records(self, rows: Sequence[Sequence[Any]]) -> list[Row[Any]]:
        """Raise stored records to larger counts (rows of RECORD_COLUMNS); the keys of the rows the
        database actually updated come back. A row whose counts are not larger is left alone."""
        table = RECORDS
        return await bulk_upsert(
            self.session,
            table,
            RECORD_COLUMNS,
            rows,
            conflict=["user_id", "message_id", "source", "request_id"],
            update=lambda excluded: {
                **{name: excluded[name] for name in TOKEN_COLUMNS},
                "cost_nanousd": excluded.cost_nanousd,
                "client_cost_nanousd": excluded.client_cost_nanousd,
                "priced": excluded.priced,
                "pricing_version": excluded.pricing_version,
                "updated_at": excluded.updated_at,
            },
            where=lambda excluded: or_(*(excluded[name] > table.c[name] for name in TOKEN_COLUMNS)),
            returning=("message_id", "source", "request_id"),
        )

    async def add_to_daily(self, rows: Sequence[Sequence[Any]]) -> None:
        """Add differences (rows of DAILY_COLUMNS) to the daily aggregates, creating missing days."""
        await _ADD_TO_DAILY(self.session, rows)

    async def add_to_platform(self, rows: Sequence[Sequence[Any]], syncs: Sequence[tuple[date, int]] = ()) -> None:
        """Add differences to the platform's sums: `rows` of PLATFORM_COLUMNS to the daily usage,
        `syncs` (UTC day, batches) to the sync batches per day; each key once, in key order."""
        await _ADD_TO_PLATFORM(self.session, rows)
        await _ADD_TO_PLATFORM_SYNCS(self.session, syncs)

    async def daily_rows_of(self, user_id: uuid.UUID) -> list[tuple[Any, ...]]:
        """A user's daily aggregates as rows of PLATFORM_COLUMNS, in key order."""
        result = await self.session.execute(
            select(*(DAILY.c[name] for name in PLATFORM_COLUMNS))
            .where(DAILY.c.user_id == user_id)
            .order_by(*(DAILY.c[name] for name in PLATFORM_KEY))
        )
        return [tuple(row) for row in result.all()]

    async def sync_days_of(self, user_id: uuid.UUID) -> list[tuple[date, int]]:
        """A user's applied sync batches per UTC day, in day order."""
        day = utc_day_number(BATCHES.c.created_at)
        result = await self.session.execute(
            select(day, func.count()).where(BATCHES.c.user_id == user_id).group_by(day).order_by(day)
        )
        return [(epoch_day(number), int(count)) for number, count in result.all()]

    async def rebuild_platform(self) -> None:
        """The platform's sums recomputed from every user's daily aggregates and sync batches (a
        repair, and what a bulk load that bypasses the sync runs afterwards)."""
        await self.session.execute(delete(PLATFORM_DAILY))
        groups = [DAILY.c[name] for name in PLATFORM_KEY]
        await self.session.execute(
            PLATFORM_DAILY.insert().from_select(
                list(PLATFORM_COLUMNS), select(*groups, *_daily_sums()).group_by(*groups)
            )
        )
        await self.session.execute(delete(PLATFORM_SYNCS))
        day = utc_day_number(BATCHES.c.created_at)
        counts = await self.session.execute(select(day, func.count()).group_by(day).order_by(day))
        await self.add_to_platform([], [(epoch_day(number), int(count)) for number, count in counts.all()])

    # --- aggregates ------------------------------------------------------------------------

    async def day_totals(self, user_id: uuid.UUID) -> list[tuple[date, int, int]]:
        """(day, total tokens, cost) for every active day of a user."""
        return [(day, tokens, cost) for day, tokens, cost in await _DAY_TOTALS(self.session, user_id)]

    async def sums_by(
        self,
        user_ids: Collection[uuid.UUID],
        group_by: Sequence[str],
        *,
        start: date | None = None,
        end: date | None = None,
    ) -> list[tuple[tuple[Any, ...], Sums, int, date | None]]:
        """Daily aggregates summed per `group_by` columns: (group values, sums, active days, last day)."""
        conditions: list[ColumnElement[bool]] = [DAILY.c.user_id.in_(list(user_ids))]
        if start is not None:
            conditions.append(DAILY.c.day >= start)
        if end is not None:
            conditions.append(DAILY.c.day <= end)
        groups = [DAILY.c[name] for name in group_by]
        result = await self.session.execute(
            select(
                *groups,
                *_daily_sums(),
                func.count(func.distinct(DAILY.c.day)).label("active_days"),
                func.max(DAILY.c.day).label("last_day"),
            )
            .where(and_(*conditions))
            .group_by(*groups)
        )
        return [(tuple(row[: len(groups)]), Sums.of(row), int(row.active_days), row.last_day) for row in result.all()]

    # --- settings --------------------------------------------------------------------------

    async def settings(self, user_id: uuid.UUID) -> UsageSettings | None:
        return await self.session.get(UsageSettings, user_id)

    async def save_settings(self, user_id: uuid.UUID, share_usage_with_orgs: bool, now: datetime) -> None:
        statement = upsert(
            self.session,
            SETTINGS,
            conflict=["user_id"],
            update=lambda excluded: {
                "share_usage_with_orgs": excluded.share_usage_with_orgs,
                "updated_at": excluded.updated_at,
            },
        )
        await self.session.execute(
            statement, {"user_id": user_id, "share_usage_with_orgs": share_usage_with_orgs, "updated_at": now}
        )

    async def not_sharing(self, user_ids: Collection[uuid.UUID]) -> set[uuid.UUID]:
        """Those of `user_ids` who opted out of sharing usage with their organizations."""
        if not user_ids:
            return set()
        rows = await self.session.scalars(
            select(UsageSettings.user_id).where(
                UsageSettings.user_id.in_(list(user_ids)), UsageSettings.share_usage_with_orgs.is_(False)
            )
        )
        return set(rows)

    # --- prices ----------------------------------------------------------------------------

    async def price_overrides(self) -> list[tuple[str, dict[str, Any], datetime]]:
        # Core columns: read on every sync that writes, and the ORM compile path costs more than the query.
        result = await self.session.execute(
            select(OVERRIDES.c.model, OVERRIDES.c.price, OVERRIDES.c.updated_at).order_by(OVERRIDES.c.model)
        )
        return [(row.model, row.price, row.updated_at) for row in result]

    async def save_price_override(
        self, model: str, price: dict[str, Any], user_id: uuid.UUID | None, now: datetime
    ) -> None:
        statement = upsert(
            self.session,
            OVERRIDES,
            conflict=["model"],
            update=lambda excluded: {
                "price": excluded.price,
                "updated_by": excluded.updated_by,
                "updated_at": excluded.updated_at,
            },
        )
        await self.session.execute(
            statement, {"model": model, "price": price, "updated_by": user_id, "updated_at": now}
        )

    async def delete_price_override(self, model: str) -> bool:
        result = await self.session.execute(delete(PriceOverride).where(PriceOverride.model == model))
        return rowcount(result) > 0

    # --- repricing -------------------------------------------------------------------------

    async def users_with_records(self, since: date | None) -> list[uuid.UUID]:
        query = select(DAILY.c.user_id).distinct()
        if since is not None:
            query = query.where(DAILY.c.day >= since)
        return list(await self.session.scalars(query))

    async def records_of(self, user_id: uuid.UUID, since: date | None) -> list[Row[Any]]:
        query = select(
            RECORDS.c.message_id,
            RECORDS.c.source,
            RECORDS.c.request_id,
            RECORDS.c.model,
            RECORDS.c.model_key,
            RECORDS.c.day,
            RECORDS.c.speed,
            *(RECORDS.c[name] for name in TOKEN_COLUMNS),
            RECORDS.c.cost_nanousd,
            RECORDS.c.priced,
            RECORDS.c.pricing_version,
        ).where(RECORDS.c.user_id == user_id)
        if since is not None:
            query = query.where(RECORDS.c.day >= since)
        return list((await self.session.execute(query)).all())  # type: ignore[arg-type]

    async def reprice_records(self, user_id: uuid.UUID, rows: Iterable[Mapping[str, Any]]) -> None:
        params = [{"u_user_id": user_id, **{f"u_{key}": value for key, value in row.items()}} for row in rows]
        if not params:
            return
        statement = (
            update(RECORDS)
            .where(
                RECORDS.c.user_id == bindparam("u_user_id"),
                RECORDS.c.message_id == bindparam("u_message_id"),
                RECORDS.c.source == bindparam("u_source"),
                RECORDS.c.request_id == bindparam("u_request_id"),
            )
            .values(
                model_key=bindparam("u_model_key"),
                cost_nanousd=bindparam("u_cost_nanousd"),
                priced=bindparam("u_priced"),
                pricing_version=bindparam("u_pricing_version"),
                updated_at=bindparam("u_updated_at"),
            )
        )
        await self.session.execute(statement, params)

    async def prune_empty_daily(self, user_id: uuid.UUID) -> None:
        """Drop aggregates left without records (after repricing moved them to another model)."""
        await self.session.execute(delete(DAILY).where(DAILY.c.user_id == user_id, DAILY.c.records == 0))

    # --- metering --------------------------------------------------------------------------

    async def insert_event(self, values: Mapping[str, Any]) -> bool:
        statement = upsert(self.session, EVENTS, conflict=["org_id", "idempotency_key"]).returning(EVENTS.c.id)
        return (await self.session.execute(statement, dict(values))).first() is not None

    async def sum_events(self, org_id: uuid.UUID, kind: str, since: datetime) -> int:
        total = await self.session.scalar(
            select(_sum(EVENTS.c.quantity, "total")).where(
                UsageEvent.org_id == org_id, UsageEvent.kind == kind, UsageEvent.occurred_at >= since
            )
        )
        return int(total or 0)
