"""Sync: a batch of CLI records applied to the user's stored records and daily aggregates
(dedup, pricing, aggregation). Nothing here commits.

Exactly-once sync. A sync first records the digest of its batch (`usage_sync_batches`, in its
transaction): a batch applied before by a committed sync is answered at once, every record
unchanged, since stored counts only grow; a concurrent sync of the same batch waits on that row.
Before its first write a sync takes a transaction-scoped lock on the user
(`pg_advisory_xact_lock`; SQLite serialises write transactions anyway), so the stored records it
then reads cannot change until it commits. A batch whose sampled keys are not stored is inserted
as a whole (COPY on PostgreSQL, in a savepoint: a key that is stored after all fails the statement
instead of counting twice, and the batch takes the general path). The general path reads the
stored counts of every key, first without the lock: records no larger than what is stored stay
unchanged whatever commits meanwhile (counts only grow), and only the keys that may be written are
read again under the lock. It inserts the new records and raises the known ones with `INSERT ...
ON CONFLICT DO UPDATE ... WHERE <some count grows> RETURNING`, which writes, and returns, only the
rows whose counts grow. The aggregate differences are what the database wrote minus what was read
under the lock, applied in the same transaction: concurrent or replayed syncs of a batch add up to
exactly one sync.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from codepulse.auth.service import User
from codepulse.clock import ClockFunc
from codepulse.usage.ingest import Batch, CleanRecord
from codepulse.usage.price_overrides import compiled_book, load_price_book
from codepulse.usage.pricing import Price, PriceBook
from codepulse.usage.repository import UsageRepository
from codepulse.usage.streaks import Streaks, streaks, zone

log = structlog.get_logger("codepulse.usage")

# Records per statement: bounds bind parameters (23 columns x 1,000 < 32,767) and memory.
SYNC_CHUNK = 1000
# Keys of a batch looked up before it is taken for new records and inserted without reading the rest.
FRESH_PROBE_KEYS = 8


@dataclass
class SyncResult:
    batch: Batch
    inserted: int
    updated: int
    unchanged: int
    total_tokens: int
    total_cost_nanousd: int
    streaks: Streaks


class _Run:
    """What every chunk of one sync shares; the price book is read once, and only when a record
    is written (a replay writes nothing)."""

    def __init__(
        self, session: AsyncSession, user_id: uuid.UUID, tz: ZoneInfo, now: datetime, machine_id: str | None
    ) -> None:
        self.session = session
        self.user_id = user_id
        # The same dates, but datetime's own UTC converts several times faster than ZoneInfo's
        # (once per record of a sync).
        self.tz: tzinfo = UTC if tz.key == "UTC" else tz
        self.now = now
        self.machine_id = machine_id
        self._book: PriceBook | None = None
        self._locked = False
        # The differences of every chunk per (day, source, model), for the platform's sums.
        self.platform: dict[tuple[date, str, str], list[int]] = {}

    def applied(self, deltas: dict[tuple[date, str, str], list[int]]) -> None:
        """Note differences added to the user's daily aggregates."""
        platform = self.platform
        for group, values in deltas.items():
            total = platform.get(group)
            if total is None:
                platform[group] = list(values)
            else:
                for i, value in enumerate(values):
                    total[i] += value

    @property
    def locked(self) -> bool:
        return self._locked

    async def lock(self) -> None:
        """Take the user's sync lock (held until the transaction ends) before the first write."""
        if not self._locked:
            await UsageRepository(self.session).lock_user(self.user_id)
            self._locked = True

    async def lock_unless_stored(self, keys: Sequence[tuple[str, str, str]]) -> bool:
        """Take the user's sync lock unless one of `keys` is stored (one statement on PostgreSQL,
        which reads the price overrides too)."""
        locked, overrides = await UsageRepository(self.session).lock_unless_stored(self.user_id, keys)
        if locked:
            self._locked = True
            if overrides is not None:
                self._book = compiled_book(overrides)
        return locked

    async def price_book(self) -> PriceBook:
        if self._book is None:
            self._book = await load_price_book(self.session)
        return self._book


@dataclass(slots=True)
class _Pending:
    """One record key of a batch: what is stored (read under the lock), and the merged counts."""

    record: CleanRecord  # the batch's first record with this key
    day: date
    model_key: str
    fast: bool
    tokens: list[int]
    client_cost: int | None
    stored: tuple[int, ...] | None = None  # 6 token counts + cost once read; None when new
    stored_priced: bool = True
    changed: bool = False
    cost: int = 0
    priced: bool = False

    def grow(self, record: CleanRecord) -> bool:
        """Keep the larger value of every count (the last streamed line is the largest)."""
        grew = False
        tokens = self.tokens
        for i, value in enumerate(record.tokens):
            if value > tokens[i]:
                tokens[i] = value
                grew = True
        cost = record.client_cost_nanousd
        if cost is not None and (self.client_cost is None or cost > self.client_cost):
            self.client_cost = cost
        self.changed = self.changed or grew
        return grew


def _may_write(record: CleanRecord, stored: Sequence[int] | None) -> bool:
    """Whether `record` is new or larger than the `stored` counts of its key in some count."""
    if stored is None:
        return True
    tokens = record.tokens
    return (
        tokens[0] > stored[0]
        or tokens[1] > stored[1]
        or tokens[2] > stored[2]
        or tokens[3] > stored[3]
        or tokens[4] > stored[4]
        or tokens[5] > stored[5]
    )


def _chunks(items: Sequence[CleanRecord], size: int) -> Iterable[Sequence[CleanRecord]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# Positions in a stored row (repository.STORED_COLUMNS).
_S_MODEL_KEY, _S_DAY, _S_SPEED, _S_TOKENS, _S_COST, _S_PRICED, _S_CLIENT_COST = 3, 4, 5, 6, 12, 13, 14


class SyncService:
    def __init__(self, session: AsyncSession, clock: ClockFunc) -> None:
        self.session = session
        self.repo = UsageRepository(session)
        self.clock = clock

    async def sync(self, user: User, batch: Batch) -> SyncResult:
        now = self.clock()
        counts = {"inserted": 0, "updated": 0, "unchanged": 0}
        run: _Run | None = None
        if batch.records and batch.digest and not await self.repo.claim_batch(user.id, batch.digest, now):
            # These very records were applied before: counts only grow, so none of them can
            # change anything (the answer a record-by-record replay would give).
            counts["unchanged"] = len(batch.records)
        elif batch.records:
            run = _Run(self.session, user.id, zone(user.timezone), now, batch.machine_id)
            for chunk in _chunks(batch.records, SYNC_CHUNK):
                if not await self._insert_new(run, chunk, counts):
                    await self._apply(run, chunk, counts)
        days = await self.repo.day_totals(user.id)
        if run is not None:
            # Last, once, in key order: the platform's rows are shared by every user's sync (today's
            # above all), so each holds their locks only until it commits, taken in one order.
            await self.repo.add_to_platform(
                [(*group, *values) for group, values in sorted(run.platform.items()) if any(values)],
                [(now.astimezone(UTC).date(), 1)] if batch.digest else [],  # the batch claimed above
            )
        result = SyncResult(
            batch=batch,
            total_tokens=sum(tokens for _, tokens, _ in days),
            total_cost_nanousd=sum(cost for _, _, cost in days),
            streaks=streaks((day for day, _, _ in days), now.astimezone(zone(user.timezone)).date()),
            **counts,
        )
        log.info(
            "usage.synced",
            shape=batch.shape,
            client=batch.client,
            received=batch.received,
            rejected=len(batch.rejected),
            **counts,
        )
        return result

    async def _insert_new(self, run: _Run, records: Sequence[CleanRecord], counts: dict[str, int]) -> bool:
        """The fast path of a first sync: when a sample of the keys is not stored, insert every
        record at once, without reading the others first. False, having written nothing, when the
        batch repeats a key or a key is stored after all (the COPY fails as a whole, in a
        savepoint): the caller then takes the general path."""
        keys = [record.key for record in records]
        if len(set(keys)) != len(keys):
            return False
        # Spread over the batch: a resent batch, or one that overlaps the last sync, is caught here
        # and costs one small query; a miss only costs the failed insert.
        step = max(1, len(keys) // FRESH_PROBE_KEYS)
        sample = keys[::step]
        if run.locked:  # a later chunk of the batch
            if await self.repo.stored_counts(run.user_id, sample):
                return False
        elif not await run.lock_unless_stored(sample):
            return False
        book = await run.price_book()
        tz, user_id, machine_id, now = run.tz, run.user_id, run.machine_id, run.now
        version = book.table.version
        pricing: dict[str, tuple[str, Price | None, str]] = {}
        deltas: dict[tuple[date, str, str], list[int]] = {}
        rows = []
        for record in records:
            model = record.model
            priced = pricing.get(model)
            if priced is None:
                model_key = book.model_key(model)
                price = book.price(model_key)
                priced = pricing[model] = (model_key, price, price.version if price is not None else version)
            model_key, price, pricing_version = priced
            t = record.tokens
            cost = 0 if price is None else price.cost_nanousd(t[0], t[1], t[2], t[3], t[4], fast=record.fast)
            day = record.timestamp.astimezone(tz).date()
            rows.append(
                (
                    user_id,
                    record.message_id,
                    record.source,
                    record.request_id,
                    model,
                    model_key,
                    record.timestamp,
                    day,
                    *t,
                    "fast" if record.fast else "standard",
                    record.session_id,
                    machine_id,
                    cost,
                    record.client_cost_nanousd,
                    price is not None,
                    pricing_version,
                    now,
                    now,
                )
            )
            group = (day, record.source, model_key)
            delta = deltas.get(group)
            if delta is None:
                delta = deltas[group] = [0] * 9
            delta[0] += t[0]
            delta[1] += t[1]
            delta[2] += t[2]
            delta[3] += t[3]
            delta[4] += t[4]
            delta[5] += t[5]
            delta[6] += cost
            delta[7] += 1
            delta[8] += price is None
        if not await self.repo.insert_new_records(rows):
            return False
        await self.repo.add_to_daily(
            [(user_id, day, source, model, *values) for (day, source, model), values in sorted(deltas.items())]
        )
        run.applied(deltas)
        counts["inserted"] += len(rows)
        return True

    async def _apply(self, run: _Run, records: Sequence[CleanRecord], counts: dict[str, int]) -> None:
        """The general path: read what is stored of the batch's keys, insert the new records and
        raise the known ones whose counts grow."""
        stored = await self._read_stored(run, records, counts)
        if stored is None:
            return
        pending, book = await self._merge(run, records, stored, counts)
        grown = [key for key, item in pending.items() if item.changed and item.stored is not None]
        if grown:
            await self._read_details(run.user_id, pending, grown, stored)
        new_items = [item for item in pending.values() if item.stored is None]
        # Raised in key order: writers of one user are serialised by the lock anyway, and a stable
        # order keeps row locks deadlock-free even without it.
        grown_items = sorted((pending[key] for key in grown), key=lambda item: item.record.key)
        if not new_items and not grown_items:
            return
        if book is None:
            book = await run.price_book()
        raised = await self._write(run, book, new_items, grown_items)
        deltas = _deltas(new_items + grown_items, raised)
        await self.repo.add_to_daily(
            [(run.user_id, day, source, model, *values) for (day, source, model), values in sorted(deltas.items())]
        )
        run.applied(deltas)

    async def _read_stored(
        self, run: _Run, records: Sequence[CleanRecord], counts: dict[str, int]
    ) -> dict[tuple[str, str, str], Sequence[int]] | None:
        """The stored counts of the batch's keys, read under the lock where they may change; None
        when no record can change anything (a replay), counted as unchanged."""
        keys = list(dict.fromkeys(record.key for record in records))
        stored = await self.repo.stored_counts(run.user_id, keys)
        if run.locked:
            return stored
        # Read before taking the lock: stored counts only grow, so a record no larger than what is
        # stored stays unchanged whatever commits meanwhile (a replay stops here). The keys that
        # may be written are read again under the lock.
        moving = list(dict.fromkeys(record.key for record in records if _may_write(record, stored.get(record.key))))
        if not moving:
            counts["unchanged"] += len(records)
            return None
        await run.lock()
        for key in moving:
            stored.pop(key, None)
        stored.update(await self.repo.stored_counts(run.user_id, moving))
        return stored

    async def _merge(
        self,
        run: _Run,
        records: Sequence[CleanRecord],
        stored: dict[tuple[str, str, str], Sequence[int]],
        counts: dict[str, int],
    ) -> tuple[dict[tuple[str, str, str], _Pending], PriceBook | None]:
        """The batch's records merged per key against what is stored, and counted; the price book
        when a new record needed it."""
        tz = run.tz
        pending: dict[tuple[str, str, str], _Pending] = {}
        model_keys: dict[str, str] = {}
        inserted = updated = unchanged = 0
        book: PriceBook | None = None
        for record in records:
            key = record.key
            item = pending.get(key)
            if item is None:
                stored_tokens = stored.get(key)
                if stored_tokens is None:
                    if book is None:
                        book = await run.price_book()
                    model_key = model_keys.get(record.model)
                    if model_key is None:
                        model_key = model_keys[record.model] = book.model_key(record.model)
                    pending[key] = _Pending(
                        record,
                        record.timestamp.astimezone(tz).date(),
                        model_key,
                        record.fast,
                        list(record.tokens),
                        record.client_cost_nanousd,
                        changed=True,
                    )
                    inserted += 1
                    continue
                if not _may_write(record, stored_tokens):
                    # Seen before with these counts or larger (a replay): nothing to keep track of.
                    unchanged += 1
                    continue
                # Known record: its day, model and speed stay as first ingested (read below if it grows).
                item = pending[key] = _Pending(
                    record, date.min, "", False, [int(value) for value in stored_tokens], None, stored=()
                )
            if item.grow(record):
                updated += 1
            else:
                unchanged += 1
        counts["inserted"] += inserted
        counts["updated"] += updated
        counts["unchanged"] += unchanged
        return pending, book

    async def _read_details(
        self,
        user_id: uuid.UUID,
        pending: dict[tuple[str, str, str], _Pending],
        grown: list[tuple[str, str, str]],
        stored: dict[tuple[str, str, str], Sequence[int]],
    ) -> None:
        """The rest of what is stored of the known records that grow."""
        details = await self.repo.stored_details(user_id, grown)
        for key in grown:
            item = pending[key]
            model_key, day, speed, cost, priced, client_cost = details[key]
            item.model_key, item.day, item.fast = model_key, day, speed == "fast"
            item.stored = (*(int(value) for value in stored[key]), int(cost))
            item.stored_priced = bool(priced)
            if client_cost is not None and (item.client_cost is None or client_cost > item.client_cost):
                item.client_cost = client_cost

    async def _write(
        self, run: _Run, book: PriceBook, new_items: list[_Pending], grown_items: list[_Pending]
    ) -> set[tuple[Any, ...]]:
        """Price and write the records: the new ones are inserted as a whole (a key that appeared
        meanwhile would fail the statement, not be counted twice); known ones are raised only where
        a count grows, and the database says which rows it changed (their keys are returned)."""
        user_id, now, machine_id = run.user_id, run.now, run.machine_id
        writes = new_items + grown_items
        prices = {key: book.price(key) for key in {item.model_key for item in writes}}
        version = book.table.version
        rows = []
        for item in writes:
            record, tokens, price = item.record, item.tokens, prices[item.model_key]
            if price is None:
                item.cost, item.priced = 0, False
            else:
                item.cost = price.cost_nanousd(tokens[0], tokens[1], tokens[2], tokens[3], tokens[4], fast=item.fast)
                item.priced = True
            rows.append(
                (
                    user_id,
                    record.message_id,
                    record.source,
                    record.request_id,
                    record.model,
                    item.model_key,
                    record.timestamp,
                    item.day,
                    *tokens,
                    "fast" if item.fast else "standard",
                    record.session_id,
                    machine_id,
                    item.cost,
                    item.client_cost,
                    item.priced,
                    price.version if price is not None else version,
                    now,
                    now,
                )
            )
        new_rows, grown_rows = rows[: len(new_items)], rows[len(new_items) :]
        inserted_count = await self.repo.insert_records(new_rows)
        raised = {tuple(row) for row in await self.repo.raise_records(grown_rows)}
        if inserted_count != len(new_rows) or len(raised) != len(grown_rows):  # pragma: no cover
            log.warning(  # impossible while the user lock is held
                "usage.write_mismatch", inserted=inserted_count, new=len(new_rows), raised=len(raised)
            )
        return raised


def _deltas(writes: Sequence[_Pending], raised: set[tuple[Any, ...]]) -> dict[tuple[date, str, str], list[int]]:
    """Aggregate differences per (day, source, model): what the database wrote (the values sent,
    for the rows it inserted or raised) minus what was stored before (read under the lock)."""
    deltas: dict[tuple[date, str, str], list[int]] = {}
    for item in writes:
        before: tuple[int, ...] | None = item.stored
        if before is not None and item.record.key not in raised:  # pragma: no cover - see `_write`
            continue
        group = (item.day, item.record.source, item.model_key)
        delta = deltas.get(group)
        if delta is None:
            delta = deltas[group] = [0] * 9
        t = item.tokens
        if before is None:
            delta[0] += t[0]
            delta[1] += t[1]
            delta[2] += t[2]
            delta[3] += t[3]
            delta[4] += t[4]
            delta[5] += t[5]
            delta[6] += item.cost
            delta[7] += 1
            delta[8] += 0 if item.priced else 1
        else:
            for i in range(6):
                delta[i] += t[i] - before[i]
            delta[6] += item.cost - before[6]
            delta[8] += (0 if item.priced else 1) - (0 if item.stored_priced else 1)
    return deltas
