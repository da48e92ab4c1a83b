"""Each user's activity in every period, from one pass over the daily aggregates.

Counting active days and streaks needs the set of distinct days per user; grouping the daily
aggregates by (user, day) to get it costs more than everything else together. Instead, days are
numbered back from an anchor (the day after tomorrow, UTC: no local date is later) and grouped in
blocks of 62: one row per (user, block) holds the block's days as the bits of an integer (bit k =
k days before the block's first day) with the period sums, and a second grouping gives one row
per user. Active days in a recent window are the set bits of block 0 under the window's mask (every
window but `all` lies in block 0); over all time, the sum of every block's set bits. The current
streak is the run of set bits from the user's own today (or yesterday) back; a run that fills
block 0 goes on through the following full blocks and into the first one that is not.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from sqlalchemy import BigInteger, ColumnElement, Integer, and_, case, cast, func, literal, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.selectable import CTE, FromClause, Select

from codepulse.db import bit_count, bit_or_aggregate, day_number
from codepulse.leaderboard.models import LeaderboardExclusion, Period
from codepulse.usage import service as usage_service

BLOCK_DAYS = 62
FULL_BLOCK = (1 << BLOCK_DAYS) - 1
EPOCH = date(1970, 1, 1)
SUMS = ("tokens", "cost", "cache_read", "cache_base")


@dataclass(frozen=True)
class Bounds:
    """A period's window as day numbers (days since 1970-01-01), inclusive."""

    start: int
    end: int


def _shift(value: ColumnElement[int], bits: ColumnElement[int] | int) -> ColumnElement[int]:
    return value.op(">>")(bits)


def _and(value: ColumnElement[int], mask: ColumnElement[int] | int) -> ColumnElement[int]:
    # Integers as BIGINT parameters: masks do not fit PostgreSQL's default INTEGER.
    return value.op("&")(literal(mask, BigInteger) if isinstance(mask, int) else mask)


def trailing_ones(session: AsyncSession, value: ColumnElement[int]) -> ColumnElement[int]:
    """How many low bits of `value` (0 <= value < 2**62) are set before the first clear one.

    `value & ~(value + 1)` keeps exactly those bits; `~x` is written `-x - 1` (two's complement on
    both databases), so `~(value + 1)` is `-value - 2`."""
    return bit_count(session, _and(value, -value - 2), BLOCK_DAYS)


def window_mask(bounds: Bounds, anchor: int) -> int:
    """The bits of block 0 that are days of the window."""
    mask = 0
    for day in range(max(bounds.start, anchor - BLOCK_DAYS + 1), min(bounds.end, anchor) + 1):
        mask |= 1 << (anchor - day)
    return mask


@dataclass(frozen=True)
class Groupings:
    """The two groupings of the daily aggregates a recompute reads, each staged in a table of its
    own before the boards are ranked (`codepulse.db.create_temporary_table`):

    * `blocks`: every row into (user, block) groups with plain sums (the all-time figures and the
      days): (user_id, block, mask, <sums>);
    * `recent`: only the rows of the recent windows, into per-user sums per window:
      (user_id, <sum>_<period> for every period but `all`).

    Filtering every row into every window's sums in one grouping cost three times as much: the
    recent windows hold a small share of the rows."""

    blocks: Select[Any]
    recent: Select[Any]


def groupings(session: AsyncSession, periods: dict[Period, Bounds], anchor: int) -> Groupings:
    rows = usage_service.daily_rows()
    rows = rows.where(rows.selected_columns.user_id.not_in(select(LeaderboardExclusion.user_id)))
    daily = rows.subquery("daily")
    dn = day_number(session, daily.c.day)
    back = literal(anchor, Integer) - dn
    # Block and bit are computed in a subquery, so the grouping is by its plain columns (the
    # expressions would hold different bound parameters in SELECT and GROUP BY).
    marked = (
        select(
            daily.c.user_id,
            (back // BLOCK_DAYS).label("block"),
            (back % BLOCK_DAYS).label("bit"),
            *(daily.c[name] for name in SUMS),
        )
        .where(daily.c.day <= _date(anchor))
        .subquery("marked")
    )
    blocks = select(
        marked.c.user_id,
        marked.c.block,
        # CAST, not a typed literal: CREATE TABLE AS renders its values inline, and an untyped 1
        # is a 32-bit integer that bits 31 and up overflow.
        bit_or_aggregate(session, cast(literal(1), BigInteger).op("<<")(marked.c.bit)).label("mask"),
        *(cast(func.sum(marked.c[name]), BigInteger).label(name) for name in SUMS),
    ).group_by(marked.c.user_id, marked.c.block)

    windowed = {period: bounds for period, bounds in periods.items() if period is not Period.ALL}
    first = min(bounds.start for bounds in windowed.values())
    last = min(max(bounds.end for bounds in windowed.values()), anchor)
    recent_rows = (
        select(daily.c.user_id, daily.c.day, *(daily.c[name] for name in SUMS))
        .where(daily.c.day.between(_date(first), _date(last)))
        .subquery("recent_rows")
    )
    recent = select(
        recent_rows.c.user_id,
        *(
            cast(
                func.sum(recent_rows.c[name]).filter(recent_rows.c.day.between(_date(bounds.start), _date(bounds.end))),
                BigInteger,
            ).label(f"{name}_{period.name}")
            for period, bounds in windowed.items()
            for name in SUMS
        ),
    ).group_by(recent_rows.c.user_id)
    return Groupings(blocks, recent)


def activity(
    periods: dict[Period, Bounds], blocks: FromClause, recent: FromClause, session: AsyncSession
) -> tuple[CTE, CTE]:
    """From the staged groupings (`Groupings`): `people`, one row per user with usage, with per
    period `<sum>_<period>`, the days of block 0 (`recent`) and the count of all active days
    (`all_days`); and `chains` for the streaks of more than a block (see `current_runs`)."""
    # Blocks 1, 2, ... that are full, in a row from block 1: a streak that fills block 0 runs on
    # through them (rare: a streak of two months or more).
    full = select(
        blocks.c.user_id,
        blocks.c.block,
        func.row_number().over(partition_by=blocks.c.user_id, order_by=blocks.c.block).label("nth"),
    ).where(blocks.c.block >= 1, blocks.c.mask == literal(FULL_BLOCK, BigInteger))
    full_sub = full.subquery("full_blocks")
    chains = (
        select(full_sub.c.user_id, func.count().label("full_blocks"))
        .where(full_sub.c.block == full_sub.c.nth)
        .group_by(full_sub.c.user_id)
        .cte("chains")
    )
    totals = (
        select(
            blocks.c.user_id,
            *(cast(func.sum(blocks.c[name]), BigInteger).label(f"{name}_{Period.ALL.name}") for name in SUMS),
            func.coalesce(func.max(blocks.c.mask).filter(blocks.c.block == 0), 0).label("recent"),
            cast(func.sum(bit_count(session, blocks.c.mask)), Integer).label("all_days"),
        )
        .group_by(blocks.c.user_id)
        .subquery("totals")
    )
    people = (
        select(
            totals.c.user_id,
            *(
                (totals if period is Period.ALL else recent).c[f"{name}_{period.name}"]
                for period in periods
                for name in SUMS
            ),
            totals.c.recent,
            totals.c.all_days,
        )
        .select_from(totals.outerjoin(recent, recent.c.user_id == totals.c.user_id))
        .cte("people")
    )
    return people, chains


def _date(number: int) -> date:
    return EPOCH + timedelta(days=number)


def current_runs(
    session: AsyncSession,
    people: CTE,
    blocks: FromClause,
    chains: CTE,
    anchor: int,
    local_today: ColumnElement[int],
    profiles: Any,
) -> CTE:
    """(user_id, run_start, run_end) of every user of `people` whose current streak is running:
    the run of days from the user's own today (or yesterday, when today has no usage yet) back.
    `local_today` is an expression on `profiles` (the users' profiles)."""
    today_back = literal(anchor, Integer) - local_today
    has_today = _and(_shift(people.c.recent, today_back), 1) == 1
    has_yesterday = _and(_shift(people.c.recent, today_back + 1), 1) == 1
    start = case((has_today, today_back), (has_yesterday, today_back + 1), else_=None)
    # Each step a plain column of the one before: the bit arithmetic would otherwise repeat the
    # expressions it is built on many times over (SQLite counts bits with a sum of 62 terms).
    started = (
        select(people.c.user_id, start.label("start"), people.c.recent)
        .select_from(people.join(profiles, profiles.c.id == people.c.user_id))
        .subquery("started")
    )
    shifted = (
        select(started.c.user_id, started.c.start, _shift(started.c.recent, started.c.start).label("shifted"))
        .where(started.c.start.is_not(None))
        .subquery("shifted")
    )
    after_chain = blocks.alias("after_chain")
    chain_length = func.coalesce(chains.c.full_blocks, 0)
    measured = (
        select(
            shifted.c.user_id,
            shifted.c.start,
            trailing_ones(session, shifted.c.shifted).label("run"),
            chain_length.label("chain_length"),
            func.coalesce(after_chain.c.mask, 0).label("after_mask"),
        )
        .select_from(
            shifted.outerjoin(chains, chains.c.user_id == shifted.c.user_id).outerjoin(
                after_chain,
                and_(after_chain.c.user_id == shifted.c.user_id, after_chain.c.block == chain_length + 1),
            )
        )
        .subquery("measured")
    )
    # A run that fills block 0 goes on through the chain of full blocks after it and into the
    # block after the chain (block 1 when there is none).
    fills_block = measured.c.start + measured.c.run >= BLOCK_DAYS
    length = case(
        (
            fills_block,
            BLOCK_DAYS
            - measured.c.start
            + BLOCK_DAYS * measured.c.chain_length
            + trailing_ones(session, measured.c.after_mask),
        ),
        else_=measured.c.run,
    )
    run_end = literal(anchor, Integer) - measured.c.start
    return select(measured.c.user_id, (run_end - length + 1).label("run_start"), run_end.label("run_end")).cte("runs")


def active_days(people: Any, session: AsyncSession, period: Period, bounds: Bounds, anchor: int) -> ColumnElement[int]:
    if period is Period.ALL:
        result: ColumnElement[int] = people.c.all_days
        return result
    return bit_count(session, _and(people.c.recent, window_mask(bounds, anchor)))
