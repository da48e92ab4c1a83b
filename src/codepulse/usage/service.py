"""Usage rules: sync (dedup, pricing, aggregation), dashboards, the organization view, public
stats, settings, prices, repricing, and metering for billing.

Other domains call the module functions at the bottom (`record_event`, `count_events`,
`shares_usage_with_orgs`) inside their own unit of work. Nothing here commits.

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

import asyncio
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from codepulse.auth import service as auth_service
from codepulse.auth.models import User
from codepulse.clock import ClockFunc, utcnow
from codepulse.config import Settings
from codepulse.db import Database
from codepulse.errors import FieldError, NotFound, ValidationFailed
from codepulse.orgs.service import OrgAccess, OrgService
from codepulse.pagination import PageRequest
from codepulse.usage.ingest import Batch, CleanRecord
from codepulse.usage.pricing import Price, PriceBook, PriceSpec, PriceTable, nanousd_to_usd, price_table
from codepulse.usage.repository import TOKEN_COLUMNS, Sums, UsageRepository, parse_overrides
from codepulse.usage.schemas import (
    Granularity,
    MemberRef,
    MemberUsage,
    ModelBreakdown,
    ModelUsage,
    OrgTotals,
    OrgUsage,
    Overview,
    PeriodStats,
    PriceList,
    PriceOut,
    PublicStats,
    Range,
    Share,
    SourceBreakdown,
    SourceUsage,
    TokenCounts,
    TrendPoint,
    Trends,
)
from codepulse.usage.streaks import Streaks, streaks

log = structlog.get_logger("codepulse.usage")

# Records per statement: bounds bind parameters (23 columns x 1,000 < 32,767) and memory.
SYNC_CHUNK = 1000
# Keys of a batch looked up before it is taken for new records and inserted without reading the rest.
FRESH_PROBE_KEYS = 8
UTC_ZONE = ZoneInfo("UTC")


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return UTC_ZONE


async def load_price_book(session: AsyncSession) -> PriceBook:
    """The shipped price table with the superusers' overrides on top."""
    return PriceBook.with_overrides(price_table(), await UsageRepository(session).price_overrides())


class _CompiledBooks:
    """The price book compiled from the overrides last read, by their exact JSON text: a sync
    reads the overrides with its lock on every batch it writes, and compiling them costs more than
    comparing the text. Keyed on the text (and the shipped table), never stale."""

    def __init__(self) -> None:
        self._last: tuple[PriceTable, str, PriceBook] | None = None

    def get(self, overrides: str) -> PriceBook:
        table = price_table()
        last = self._last
        if last is not None and last[0] is table and last[1] == overrides:
            return last[2]
        book = PriceBook.with_overrides(table, parse_overrides(overrides))
        self._last = (table, overrides, book)
        return book


_compiled_books = _CompiledBooks()


# --- sync ----------------------------------------------------------------------------------------


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
                self._book = _compiled_books.get(overrides)
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


def _cost(price: Price | None, tokens: Sequence[int], fast: bool) -> int:
    if price is None:
        return 0
    return price.cost_nanousd(tokens[0], tokens[1], tokens[2], tokens[3], tokens[4], fast=fast)


def _chunks(items: Sequence[CleanRecord], size: int) -> Iterable[Sequence[CleanRecord]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# Positions in a stored row (repository.STORED_COLUMNS).
_S_MODEL_KEY, _S_DAY, _S_SPEED, _S_TOKENS, _S_COST, _S_PRICED, _S_CLIENT_COST = 3, 4, 5, 6, 12, 13, 14


class UsageService:
    def __init__(self, session: AsyncSession, settings: Settings, clock: ClockFunc) -> None:
        self.session = session
        self.repo = UsageRepository(session)
        self.settings = settings
        self.clock = clock

    async def sync(self, user: User, batch: Batch) -> SyncResult:
        now = self.clock()
        counts = {"inserted": 0, "updated": 0, "unchanged": 0}
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
        counts["inserted"] += len(rows)
        return True

    async def _apply(self, run: _Run, records: Sequence[CleanRecord], counts: dict[str, int]) -> None:
        """The general path: read what is stored of the batch's keys, insert the new records and
        raise the known ones whose counts grow."""
        user_id, tz, now, machine_id = run.user_id, run.tz, run.now, run.machine_id
        keys = list(dict.fromkeys(record.key for record in records))
        stored = await self.repo.stored_counts(user_id, keys)
        if not run.locked:
            # Read before taking the lock: stored counts only grow, so a record no larger than
            # what is stored stays unchanged whatever commits meanwhile (a replay stops here).
            # The keys that may be written are read again under the lock.
            moving = list(dict.fromkeys(record.key for record in records if _may_write(record, stored.get(record.key))))
            if not moving:
                counts["unchanged"] += len(records)
                return
            await run.lock()
            for key in moving:
                stored.pop(key, None)
            stored.update(await self.repo.stored_counts(user_id, moving))
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
                incoming = record.tokens
                if (
                    incoming[0] <= stored_tokens[0]
                    and incoming[1] <= stored_tokens[1]
                    and incoming[2] <= stored_tokens[2]
                    and incoming[3] <= stored_tokens[3]
                    and incoming[4] <= stored_tokens[4]
                    and incoming[5] <= stored_tokens[5]
                ):
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
        grown = [key for key, item in pending.items() if item.changed and item.stored is not None]
        if grown:
            details = await self.repo.stored_details(user_id, grown)
            for key in grown:
                item = pending[key]
                model_key, day, speed, cost, priced, client_cost = details[key]
                item.model_key, item.day, item.fast = model_key, day, speed == "fast"
                item.stored = (*(int(value) for value in stored[key]), int(cost))
                item.stored_priced = bool(priced)
                if client_cost is not None and (item.client_cost is None or client_cost > item.client_cost):
                    item.client_cost = client_cost

        new_items = [item for item in pending.values() if item.stored is None]
        # Raised in key order: writers of one user are serialised by the lock anyway, and a stable
        # order keeps row locks deadlock-free even without it.
        grown_items = sorted((pending[key] for key in grown), key=lambda item: item.record.key)
        writes = new_items + grown_items
        if not writes:
            return
        if book is None:
            book = await run.price_book()
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
        # New records are inserted as a whole (a key that appeared meanwhile would fail the
        # statement, not be counted twice); known ones are raised only where a count grows, and the
        # database says which rows it changed.
        new_rows, grown_rows = rows[: len(new_items)], rows[len(new_items) :]
        inserted_count = await self.repo.insert_records(new_rows)
        raised = {tuple(row) for row in await self.repo.raise_records(grown_rows)}
        if inserted_count != len(new_rows) or len(raised) != len(grown_rows):  # pragma: no cover
            log.warning(  # impossible while the user lock is held
                "usage.write_mismatch", inserted=inserted_count, new=len(new_rows), raised=len(raised)
            )

        # Aggregate differences: what the database wrote (the values sent, for the rows it
        # inserted or raised) minus what was stored before (read under the lock).
        deltas: dict[tuple[date, str, str], list[int]] = {}
        for item in writes:
            before = item.stored
            if before is not None and item.record.key not in raised:  # pragma: no cover - see above
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
        await self.repo.add_to_daily(
            [(user_id, day, source, model, *values) for (day, source, model), values in sorted(deltas.items())]
        )

    # --- dashboards ------------------------------------------------------------------------

    def _today(self, user: User) -> date:
        return self.clock().astimezone(zone(user.timezone)).date()

    async def overview(self, user: User) -> Overview:
        today = self._today(user)
        per_day = {group[0]: (sums, days) for group, sums, days, _ in await self.repo.sums_by([user.id], ["day"])}
        periods: dict[str, PeriodStats] = {}
        for name, start in (
            ("today", today),
            ("7d", today - timedelta(days=6)),
            ("30d", today - timedelta(days=29)),
            ("all", None),
        ):
            total = Sums()
            active = 0
            for day, (sums, _) in per_day.items():
                if start is None or start <= day <= today:
                    total = total + sums
                    active += 1
            periods[name] = _period(total, active)
        by_model = await self.repo.sums_by([user.id], ["model"])
        by_source = await self.repo.sums_by([user.id], ["source"])
        run = streaks(per_day, today)
        return Overview(
            timezone=user.timezone,
            today=today,
            periods=periods,
            current_streak=run.current,
            longest_streak=run.longest,
            top_model=_top(by_model),
            top_source=_top(by_source),
            unpriced_records=sum(sums.unpriced_records for _, sums, _, _ in by_model),
        )

    async def trends(self, user: User, range_: Range, granularity: Granularity) -> Trends:
        if range_.days is None:
            raise ValidationFailed(
                [FieldError(field="query.range", code="enum", message="Trends cover 7d, 30d, 90d or 365d.")]
            )
        end = self._today(user)
        start = end - timedelta(days=range_.days - 1)
        per_day = {
            group[0]: sums for group, sums, _, _ in await self.repo.sums_by([user.id], ["day"], start=start, end=end)
        }
        buckets: dict[date, Sums] = {}
        day = start
        while day <= end:
            bucket = day if granularity is Granularity.DAY else day - timedelta(days=day.weekday())
            buckets[bucket] = buckets.get(bucket, Sums()) + per_day.get(day, Sums())
            day += timedelta(days=1)
        points = [
            TrendPoint(date=bucket, tokens=_tokens(sums), cost_usd=_usd(sums.cost_nanousd), records=sums.records)
            for bucket, sums in buckets.items()
        ]
        return Trends(range=range_, granularity=granularity, start=start, end=end, points=points)

    def _window(self, user: User, range_: Range) -> tuple[date | None, date]:
        end = self._today(user)
        return (None if range_.days is None else end - timedelta(days=range_.days - 1)), end

    async def sources(self, user: User, range_: Range) -> SourceBreakdown:
        start, end = self._window(user, range_)
        groups = await self.repo.sums_by([user.id], ["source"], start=start, end=end)
        total_tokens = sum(sums.total_tokens for _, sums, _, _ in groups)
        total_cost = sum(sums.cost_nanousd for _, sums, _, _ in groups)
        items = [
            SourceUsage(
                source=str(group[0]),
                tokens=_tokens(sums),
                cost_usd=_usd(sums.cost_nanousd),
                records=sums.records,
                active_days=days,
                token_share=_share(sums.total_tokens, total_tokens),
                cost_share=_share(sums.cost_nanousd, total_cost),
            )
            for group, sums, days, _ in sorted(groups, key=lambda g: (-g[1].total_tokens, str(g[0][0])))
        ]
        return SourceBreakdown(range=range_, start=start, end=end, items=items)

    async def models(self, user: User, range_: Range) -> ModelBreakdown:
        start, end = self._window(user, range_)
        groups = await self.repo.sums_by([user.id], ["model"], start=start, end=end)
        book = await load_price_book(self.session)
        total_tokens = sum(sums.total_tokens for _, sums, _, _ in groups)
        total_cost = sum(sums.cost_nanousd for _, sums, _, _ in groups)
        items = []
        for group, sums, _, _ in sorted(groups, key=lambda g: (-g[1].total_tokens, str(g[0][0]))):
            model = str(group[0])
            items.append(
                ModelUsage(
                    model=model,
                    display_name=book.display_name(model),
                    priced=book.price(model) is not None,
                    tokens=_tokens(sums),
                    cost_usd=_usd(sums.cost_nanousd),
                    records=sums.records,
                    unpriced_records=sums.unpriced_records,
                    token_share=_share(sums.total_tokens, total_tokens),
                    cost_share=_share(sums.cost_nanousd, total_cost),
                )
            )
        return ModelBreakdown(
            range=range_,
            start=start,
            end=end,
            unpriced_records=sum(sums.unpriced_records for _, sums, _, _ in groups),
            items=items,
        )

    # --- organizations ---------------------------------------------------------------------

    async def org_usage(self, access: OrgAccess, orgs: OrgService, range_: Range) -> OrgUsage:
        """Usage of the organization's members who share it, per member and in total.

        Days are each member's own local dates; the window ends today in UTC."""
        end = self.clock().date()
        start = None if range_.days is None else end - timedelta(days=range_.days - 1)
        users: dict[uuid.UUID, User] = {}
        page: PageRequest | None = PageRequest(limit=100)
        while page is not None:
            members, cursor = await orgs.members(access, page)
            users.update((member.user.id, member.user) for member in members)
            page = PageRequest(limit=100, cursor=cursor) if cursor else None
        hidden = await self.repo.not_sharing(users)
        sharing = [user_id for user_id in users if user_id not in hidden]
        groups = {
            group[0]: (sums, days, last)
            for group, sums, days, last in (
                await self.repo.sums_by(sharing, ["user_id"], start=start, end=end) if sharing else []
            )
        }
        members_out = []
        total = Sums()
        for user_id in sharing:
            sums, days, last = groups.get(user_id, (Sums(), 0, None))
            total = total + sums
            members_out.append(
                MemberUsage(
                    user=MemberRef.model_validate(users[user_id]),
                    tokens=_tokens(sums),
                    cost_usd=_usd(sums.cost_nanousd),
                    records=sums.records,
                    active_days=days,
                    last_active=last,
                )
            )
        members_out.sort(key=lambda m: (-m.tokens.total, m.user.username))
        return OrgUsage(
            org_id=access.org.id,
            range=range_,
            start=start,
            end=end,
            totals=OrgTotals(
                tokens=_tokens(total),
                cost_usd=_usd(total.cost_nanousd),
                records=total.records,
                active_members=sum(1 for m in members_out if m.records),
            ),
            members=members_out,
            members_sharing=len(sharing),
            members_not_sharing=len(hidden),
        )

    # --- public stats ----------------------------------------------------------------------

    async def public_stats(self, username: str, viewer: User | None) -> PublicStats:
        user = await auth_service.user_by_username(self.session, username)
        if user is None or (not user.profile_public and (viewer is None or viewer.id != user.id)):
            raise NotFound("user")
        days = await self.repo.day_totals(user.id)
        run = streaks((day for day, _, _ in days), self._today(user))
        total_tokens = sum(tokens for _, tokens, _ in days)
        return PublicStats(
            username=user.username,
            total_tokens=total_tokens,
            total_cost_usd=_usd(sum(cost for _, _, cost in days)),
            active_days=len(days),
            current_streak=run.current,
            longest_streak=run.longest,
            first_active=days[0][0] if days else None,
            last_active=days[-1][0] if days else None,
            top_models=_shares(await self.repo.sums_by([user.id], ["model"]), total_tokens),
            top_sources=_shares(await self.repo.sums_by([user.id], ["source"]), total_tokens),
        )

    # --- settings --------------------------------------------------------------------------

    async def share_setting(self, user: User) -> bool:
        return await shares_usage_with_orgs(self.session, user.id)

    async def set_share_setting(self, user: User, share: bool) -> bool:
        await self.repo.save_settings(user.id, share, self.clock())
        log.info("usage.settings_changed", share_usage_with_orgs=share)
        return share

    # --- prices ----------------------------------------------------------------------------

    async def price_list(self) -> PriceList:
        book = await load_price_book(self.session)
        models = sorted({*book.table.prices, *book.overrides})
        table = book.table
        return PriceList(
            version=table.version,
            taken=table.taken,
            sources=list(table.sources),
            aliases=dict(table.aliases),
            items=[_price_out(book, model) for model in models],
        )

    async def price(self, model: str) -> PriceOut:
        book = await load_price_book(self.session)
        key = book.model_key(model)
        if book.price(key) is None:
            raise NotFound("model_price", f"No price for {key!r}: it is counted as unpriced (0 USD).")
        return _price_out(book, key)

    async def set_price(self, model: str, spec: PriceSpec, admin: User) -> PriceOut:
        key = price_table().model_key(model)
        await self.repo.save_price_override(key, spec.model_dump(mode="json"), admin.id, self.clock())
        log.info("usage.price_overridden", model=key, admin_id=str(admin.id))
        return _price_out(await load_price_book(self.session), key)

    async def delete_price(self, model: str, admin: User) -> None:
        key = price_table().model_key(model)
        if not await self.repo.delete_price_override(key):
            raise NotFound("price_override", f"{key!r} has no override.")
        log.info("usage.price_override_deleted", model=key, admin_id=str(admin.id))


def _period(sums: Sums, active_days: int) -> PeriodStats:
    read_base = sums.input + sums.cache_read
    return PeriodStats(
        tokens=_tokens(sums),
        cost_usd=_usd(sums.cost_nanousd),
        records=sums.records,
        active_days=active_days,
        cache_efficiency=round(sums.cache_read / read_base, 4) if read_base else None,
    )


def _tokens(sums: Sums) -> TokenCounts:
    return TokenCounts(
        input=sums.input,
        output=sums.output,
        cache_creation_5m=sums.cache_creation_5m,
        cache_creation_1h=sums.cache_creation_1h,
        cache_read=sums.cache_read,
        reasoning=sums.reasoning,
        total=sums.total_tokens,
    )


def _usd(nanousd: int) -> Decimal:
    return nanousd_to_usd(nanousd)


def _share(part: int, whole: int) -> float:
    return round(part / whole, 4) if whole else 0.0


def _top(groups: list[tuple[tuple[Any, ...], Sums, int, date | None]]) -> str | None:
    best = max(groups, key=lambda g: (g[1].total_tokens, str(g[0][0])), default=None)
    return str(best[0][0]) if best is not None and best[1].total_tokens else None


def _shares(groups: list[tuple[tuple[Any, ...], Sums, int, date | None]], total: int, limit: int = 5) -> list[Share]:
    ranked = sorted(groups, key=lambda g: (-g[1].total_tokens, str(g[0][0])))[:limit]
    return [Share(name=str(group[0]), token_share=_share(sums.total_tokens, total)) for group, sums, _, _ in ranked]


def _price_out(book: PriceBook, model: str) -> PriceOut:
    price = book.price(model)
    if price is None:  # pragma: no cover - callers check
        raise NotFound("model_price")
    spec = price.spec
    file_price = book.table.prices.get(model)
    return PriceOut(
        model=model,
        source=price.source,
        version=price.version,
        name=spec.name,
        provider=spec.provider,
        input=spec.input,
        output=spec.output,
        cache_write_5m=spec.cache_write_5m,
        cache_write_1h=spec.cache_write_1h,
        cache_read=spec.cache_read,
        long_context=spec.long_context,
        fast_multiplier=spec.fast_multiplier,
        file_price=file_price.spec if price.source == "override" and file_price is not None else None,
    )


# --- repricing -------------------------------------------------------------------------------


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
    await repo.add_to_daily(
        [
            (user_id, day, source, model, *values)
            for (day, source, model), values in sorted(deltas.items())
            if any(values)
        ]
    )
    await repo.prune_empty_daily(user_id)


# --- for other domains ---------------------------------------------------------------------


async def record_event(
    session: AsyncSession,
    org_id: uuid.UUID,
    kind: str,
    *,
    idempotency_key: str,
    occurred_at: datetime,
    quantity: int = 1,
) -> bool:
    """Meter a billable event of an organization (`kind` such as "scan"), in the caller's
    transaction. Idempotent: the same (org, idempotency_key) is recorded once; True when this call
    recorded it, False when it was already there (a retry)."""
    if not kind or len(kind) > 32:
        raise ValueError("kind must be 1 to 32 characters")
    if not idempotency_key or len(idempotency_key) > 200:
        raise ValueError("idempotency_key must be 1 to 200 characters")
    if quantity < 0:
        raise ValueError("quantity cannot be negative")
    return await UsageRepository(session).insert_event(
        {
            "id": uuid.uuid4(),
            "org_id": org_id,
            "kind": kind,
            "quantity": quantity,
            "occurred_at": occurred_at,
            "idempotency_key": idempotency_key,
            "created_at": utcnow(),
        }
    )


async def count_events(session: AsyncSession, org_id: uuid.UUID, kind: str, since: datetime) -> int:
    """Total quantity of `kind` events of an organization since `since` (an index range scan)."""
    return await UsageRepository(session).sum_events(org_id, kind, since)


async def shares_usage_with_orgs(session: AsyncSession, user_id: uuid.UUID) -> bool:
    """The user's `share_usage_with_orgs` setting (default true)."""
    settings = await UsageRepository(session).settings(user_id)
    return settings is None or settings.share_usage_with_orgs
