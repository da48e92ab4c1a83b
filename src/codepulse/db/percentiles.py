"""Continuous percentiles of a value per group, the same numbers on PostgreSQL and SQLite.

PostgreSQL has `percentile_cont`; SQLite has no percentile aggregate, so there the same linear
interpolation is written with window functions. The definition both follow (PostgreSQL's): for
a fraction p over the n sorted values v[0..n-1], at position x = p * (n - 1),
`v[floor(x)] + (v[ceil(x)] - v[floor(x)]) * (x - floor(x))`. Null values are left out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import ColumnElement, Float, FromClause, Integer, Select, case, cast, func, literal, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from codepulse.db.dialect import is_postgresql


def percentiles(
    session: AsyncSession,
    source: FromClause,
    value: str,
    *,
    fractions: Mapping[str, float],
    group_by: Sequence[str] = (),
) -> Select[Any]:
    """One row per group of `source` (its columns named in `group_by`) that has a non-null
    `value`: the group's columns, `count` and `mean` of its non-null values, and one column per
    entry of `fractions` (label -> fraction in [0, 1]) holding that percentile, e.g.
    `fractions={"median": 0.5, "p90": 0.9}`. Values are taken as double precision. Without
    `group_by`, one row (count 0 and nulls when there is no value).

    A statement to run or to select from (`.subquery()`), for the session's dialect.
    """
    groups = [source.c[name] for name in group_by]
    number = cast(source.c[value], Float)
    if is_postgresql(session):
        return (
            select(
                *groups,
                func.count(number).label("count"),
                func.avg(number).label("mean"),
                *(
                    func.percentile_cont(literal(fraction, Float)).within_group(number).label(label)
                    for label, fraction in fractions.items()
                ),
            )
            .where(number.is_not(None))
            .group_by(*groups)
        )
    ranked = (
        select(
            *groups,
            number.label("v"),
            func.row_number().over(partition_by=groups or None, order_by=number).label("rn"),
            func.count().over(partition_by=groups or None).label("n"),
        )
        .where(number.is_not(None))
        .subquery("ranked")
    )
    ranked_groups = [ranked.c[name] for name in group_by]

    def interpolated(fraction: float) -> Any:
        # CAST(x AS INTEGER) truncates, which is floor for x >= 0.
        row_position = literal(fraction, Float) * (ranked.c.n - 1)
        group_position = literal(fraction, Float) * (func.max(ranked.c.n) - 1)
        lower_rn = cast(row_position, Integer) + 1
        lower = func.max(case((ranked.c.rn == lower_rn, ranked.c.v)))
        upper = func.coalesce(func.max(case((ranked.c.rn == lower_rn + 1, ranked.c.v))), lower)
        return lower + (upper - lower) * (group_position - cast(group_position, Integer))

    return select(
        *ranked_groups,
        func.count().label("count"),
        func.avg(ranked.c.v).label("mean"),
        *(interpolated(fraction).label(label) for label, fraction in fractions.items()),
    ).group_by(*ranked_groups)


async def ordered_percentiles(
    session: AsyncSession,
    value: ColumnElement[Any] | InstrumentedAttribute[Any],
    where: Sequence[ColumnElement[bool]],
    *,
    fractions: Mapping[str, float],
    count: int | None = None,
) -> tuple[int, dict[str, float | None]]:
    """(count, label -> percentile) of the non-null `value`s of the rows matching `where`: the
    same numbers as `percentiles` (PostgreSQL's percentile_cont), without ranking every value.
    It counts them (unless the caller knows `count`, from counts it keeps), then reads the two
    values around each fraction's position with `ORDER BY value LIMIT 2 OFFSET
    floor(position)`; with an index on `(value, <the columns of where>)` that is a walk along the
    index, not a sort (as `percentiles` does, per group, on SQLite). Interpolated here in double
    precision, as percentile_cont does: `first + (position - floor(position)) * (second - first)`.
    A `count` that is not the rows' (counts gone wrong) is replaced by theirs."""
    conditions = (*where, value.is_not(None))

    async def counted() -> int:
        return int(await session.scalar(select(func.count(value)).where(*conditions)) or 0)

    if count is None:
        count = await counted()
    found: dict[str, float | None] = {}
    for label, fraction in fractions.items():
        if count == 0:
            found[label] = None
            continue
        position = fraction * (count - 1)
        first = math.floor(position)
        pair = (await session.scalars(select(value).where(*conditions).order_by(value).limit(2).offset(first))).all()
        if not pair:  # fewer rows than `count` said: count them and start again
            return await ordered_percentiles(session, value, where, fractions=fractions, count=await counted())
        lower = float(pair[0])
        found[label] = lower if position == first else lower + (position - first) * (float(pair[-1]) - lower)
    return count, found
