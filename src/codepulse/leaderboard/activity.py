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
from typing import Any

from sqlalchemy import BigInteger, ColumnElement, Integer, and_, case, cast, func, literal, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.selectable import CTE

from codepulse.db import bit_count, bit_or_aggregate, day_number
from codepulse.leaderboard.models import LeaderboardExclusion, Period
from codepulse.usage import service as usage_service

BLOCK_DAYS = 62
FULL_BLOCK = (1 << BLOCK_DAYS) - 1
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


def trailing_ones(value: ColumnElement[int]) -> ColumnElement[int]:
    """How many low bits of `value` are set before the first clear one (0 to BLOCK_DAYS)."""
    whens = [(_and(value, 1 << bit) == 0, bit) for bit in range(BLOCK_DAYS)]
    return case(*whens, else_=BLOCK_DAYS)


def window_mask(bounds: Bounds, anchor: int) -> int:
    """The bits of block 0 that are days of the window."""
    mask = 0
    for day in range(max(bounds.start, anchor - BLOCK_DAYS + 1), min(bounds.end, anchor) + 1):
        mask |= 1 << (anchor - day)
    return mask


def activity(session: AsyncSession, periods: dict[Period, Bounds], anchor: int) -> tuple[CTE, CTE, CTE]:
    """`people`: one row per user with usage, with per period `<sum>_<period>`, the days of block
    0 (`recent`) and the count of all active days (`all_days`); `blocks` and `chains` for the
    streaks of more than a block (see `streak_run`)."""
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
            dn.label("dn"),
            (back // BLOCK_DAYS).label("block"),
            (back % BLOCK_DAYS).label("bit"),
            *(daily.c[name] for name in SUMS),
        )
        .where(dn <= anchor)
        .subquery("marked")
    )
    block_sums: list[ColumnElement[Any]] = []
    for period, bounds in periods.items():
        inside = None if period is Period.ALL else marked.c.dn.between(bounds.start, bounds.end)
        for name in SUMS:
            total = func.sum(marked.c[name]) if inside is None else func.sum(marked.c[name]).filter(inside)
            block_sums.append(cast(total, BigInteger).label(f"{name}_{period.name}"))
    blocks = (
        select(
            marked.c.user_id,
            marked.c.block,
            bit_or_aggregate(session, literal(1, BigInteger).op("<<")(marked.c.bit)).label("mask"),
            *block_sums,
        )
        .group_by(marked.c.user_id, marked.c.block)
        .cte("blocks")
    )

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

    sums = [
        cast(func.sum(blocks.c[f"{name}_{period.name}"]), BigInteger).label(f"{name}_{period.name}")
        for period in periods
        for name in SUMS
    ]
    people = (
        select(
            blocks.c.user_id,
            *sums,
            func.coalesce(func.max(blocks.c.mask).filter(blocks.c.block == 0), 0).label("recent"),
            cast(func.sum(bit_count(session, blocks.c.mask)), Integer).label("all_days"),
        )
        .group_by(blocks.c.user_id)
        .cte("people")
    )
    return people, blocks, chains


def streak_run(
    people: Any, blocks: CTE, chains: CTE, anchor: int, local_today: ColumnElement[int]
) -> tuple[ColumnElement[int], ColumnElement[int], list[Any]]:
    """The current streak's first and last day numbers from a `people` row joined with the
    user's profile (for `local_today`), and the outer joins this needs."""
    today_back = literal(anchor, Integer) - local_today
    has_today = _and(_shift(people.c.recent, today_back), 1) == 1
    has_yesterday = _and(_shift(people.c.recent, today_back + 1), 1) == 1
    start = case((has_today, today_back), (has_yesterday, today_back + 1), else_=None)
    run = trailing_ones(_shift(people.c.recent, start))
    # The block after the chain of full blocks (or block 1 when there is none).
    after_chain = blocks.alias("after_chain")
    chain_length = func.coalesce(chains.c.full_blocks, 0)
    continued = trailing_ones(func.coalesce(after_chain.c.mask, 0))
    fills_block = start + run >= BLOCK_DAYS
    length = case(
        (fills_block, BLOCK_DAYS - start + BLOCK_DAYS * chain_length + continued),
        else_=run,
    )
    run_end = literal(anchor, Integer) - start
    joins = [
        (chains, chains.c.user_id == people.c.user_id),
        (
            after_chain,
            and_(after_chain.c.user_id == people.c.user_id, after_chain.c.block == chain_length + 1),
        ),
    ]
    return run_end - length + 1, run_end, joins


def active_days(people: Any, session: AsyncSession, period: Period, bounds: Bounds, anchor: int) -> ColumnElement[int]:
    if period is Period.ALL:
        result: ColumnElement[int] = people.c.all_days
        return result
    return bit_count(session, _and(people.c.recent, window_mask(bounds, anchor)))
