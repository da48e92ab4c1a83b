"""Platform figures about usage for the superusers' statistics (`codepulse.admin.stats`): sums
of the daily aggregates (`usage_daily`, never the records) and counts of sync batches."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from codepulse.db import epoch_day, utc_day_number
from codepulse.usage.feeds import tokens_sum
from codepulse.usage.models import UsageDaily, UsageSyncBatch

_DAILY = UsageDaily.__table__.c
_BATCHES = UsageSyncBatch.__table__.c


@dataclass(frozen=True)
class UsageDay:
    records: int = 0
    tokens: int = 0
    cost_nanousd: int = 0
    unpriced_records: int = 0


@dataclass(frozen=True)
class UsageStats:
    per_day: dict[date, UsageDay]  # users' local days (as the aggregates keep them)
    syncs_per_day: dict[date, int]  # UTC days
    unpriced_models: dict[str, int]  # normalised model -> unpriced records within the days


def synced_user_ids(since: datetime) -> Select[Any]:
    """Users who applied a sync batch since `since` (a select of `user_id`)."""
    return select(_BATCHES.user_id.label("user_id")).where(_BATCHES.created_at >= since)


async def usage_stats(
    session: AsyncSession, *, first_day: date, last_day: date, start: datetime, end: datetime
) -> UsageStats:
    """Per day from `first_day` to `last_day`: records, tokens (as the dashboards count them),
    cost and unpriced records; the models behind the unpriced records; and sync batches applied
    per UTC day in `[start, end)` (a batch sent again is not counted twice; an empty one is not
    a batch)."""
    # One pass over the range's aggregates, per day and model (a few hundred rows per month).
    rows = await session.execute(
        select(
            _DAILY.day,
            _DAILY.model,
            func.sum(_DAILY.records),
            func.sum(tokens_sum()),
            func.sum(_DAILY.cost_nanousd),
            func.sum(_DAILY.unpriced_records),
        )
        .where(_DAILY.day >= first_day, _DAILY.day <= last_day)
        .group_by(_DAILY.day, _DAILY.model)
    )
    per_day: dict[date, UsageDay] = {}
    unpriced_models: dict[str, int] = {}
    for day_, model, records, tokens, cost, unpriced in rows.all():
        sums = per_day.get(day_, UsageDay())
        per_day[day_] = UsageDay(
            sums.records + int(records),
            sums.tokens + int(tokens),
            sums.cost_nanousd + int(cost),
            sums.unpriced_records + int(unpriced),
        )
        if unpriced:
            unpriced_models[model] = unpriced_models.get(model, 0) + int(unpriced)
    day = utc_day_number(_BATCHES.created_at)
    syncs = await session.execute(
        select(day, func.count()).where(_BATCHES.created_at >= start, _BATCHES.created_at < end).group_by(day)
    )
    return UsageStats(
        per_day=per_day,
        syncs_per_day={epoch_day(number): int(count) for number, count in syncs.all()},
        unpriced_models=unpriced_models,
    )
