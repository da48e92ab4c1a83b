"""Platform figures about usage for the superusers' statistics (`codepulse.admin.stats`): the
platform's daily sums (`usage_platform_daily`: a few dozen rows a day, kept equal to the sums of
every user's `usage_daily`) and counts of sync batches."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import ColumnElement, exists, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from codepulse.usage.models import UsagePlatformDaily, UsagePlatformSyncs, UsageSyncBatch
from codepulse.usage.repository import UsageRepository

_PLATFORM = UsagePlatformDaily.__table__.c
_SYNCS = UsagePlatformSyncs.__table__.c
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


def synced_since(user_id: ColumnElement[Any], since: datetime) -> ColumnElement[bool]:
    """Whether the user `user_id` (a column of an outer query) applied a sync batch since `since`:
    one probe of ix_usage_sync_batches_user_id_created_at."""
    return exists().where(_BATCHES.user_id == user_id, _BATCHES.created_at >= since)


async def last_synced_at(session: AsyncSession, user_id: uuid.UUID) -> datetime | None:
    """When the user's latest sync batch was applied (a sync sent again changes nothing and is not
    recorded again); None if never. The newest entry of ix_usage_sync_batches_user_id_created_at."""
    latest: datetime | None = await session.scalar(
        select(func.max(_BATCHES.created_at)).where(_BATCHES.user_id == user_id)
    )
    return latest


async def usage_stats(
    session: AsyncSession, *, first_day: date, last_day: date, start: datetime, end: datetime
) -> UsageStats:
    """Per day from `first_day` to `last_day`: records, tokens (as the dashboards count them),
    cost and unpriced records; the models behind the unpriced records; and sync batches applied
    per UTC day in `[start, end)`, two UTC midnights (a batch sent again is not counted twice; an
    empty one is not a batch)."""
    # One pass over the range's platform sums, per day and model (a few hundred rows per month).
    tokens = (
        _PLATFORM.input_tokens
        + _PLATFORM.output_tokens
        + _PLATFORM.cache_creation_5m_tokens
        + _PLATFORM.cache_creation_1h_tokens
        + _PLATFORM.cache_read_tokens
    )  # every count but reasoning, part of output (as the dashboards count)
    rows = await session.execute(
        select(
            _PLATFORM.day,
            _PLATFORM.model,
            func.sum(_PLATFORM.records),
            func.sum(tokens),
            func.sum(_PLATFORM.cost_nanousd),
            func.sum(_PLATFORM.unpriced_records),
        )
        .where(_PLATFORM.day >= first_day, _PLATFORM.day <= last_day)
        .group_by(_PLATFORM.day, _PLATFORM.model)
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
    # `start` and `end` are UTC midnights: the batches of whole UTC days, as the platform counts them.
    syncs = await session.execute(
        select(_SYNCS.day, _SYNCS.syncs).where(_SYNCS.day >= start.date(), _SYNCS.day < end.date(), _SYNCS.syncs != 0)
    )
    return UsageStats(
        per_day=per_day,
        syncs_per_day={day_: int(count) for day_, count in syncs.all()},
        unpriced_models=unpriced_models,
    )


async def rebuild_platform_sums(session: AsyncSession) -> None:
    """Recompute the platform's sums from every user's daily aggregates and sync batches
    (`UsageRepository.rebuild_platform`): after rows were written around the repository (a bulk
    load)."""
    await UsageRepository(session).rebuild_platform()
