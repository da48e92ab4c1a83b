"""Platform figures about accounts for the superusers' statistics (`codepulse.admin.stats`):
a few aggregate statements, no row read one by one."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Select, func, select, union
from sqlalchemy.ext.asyncio import AsyncSession

from codepulse.auth.models import AuthSession, User
from codepulse.db import epoch_day, utc_day_number

ACTIVE_WINDOWS = (7, 30)


@dataclass(frozen=True)
class UserStats:
    total: int
    disabled: int
    active: dict[int, int]  # days -> accounts active within that many days of `now`
    new_per_day: dict[date, int]  # UTC day of creation -> accounts, within [start, end)


def _active_ids(since: datetime, also_active: Callable[[datetime], Select[Any]] | None) -> Select[Any]:
    """Accounts whose session (web or CLI token) made a request since `since`, and those the
    caller knows active another way (`also_active(since)`: a select of user ids)."""
    used = select(AuthSession.user_id.label("user_id")).where(AuthSession.last_used_at >= since)
    return select(union(used, also_active(since)).subquery().c.user_id) if also_active else used


async def user_stats(
    session: AsyncSession,
    *,
    start: datetime,
    end: datetime,
    now: datetime,
    also_active: Callable[[datetime], Select[Any]] | None = None,
) -> UserStats:
    """Accounts in total and disabled, active in the last 7 and 30 days before `now` (signed in:
    a session used; or what `also_active` adds, e.g. usage's syncs), and created per UTC day in
    `[start, end)`."""
    active = {
        days: select(func.count()).select_from(_active_ids(now - timedelta(days=days), also_active).subquery())
        for days in ACTIVE_WINDOWS
    }
    totals = (
        await session.execute(
            select(
                func.count(),
                func.count(User.disabled_at),
                *(statement.scalar_subquery() for statement in active.values()),
            ).select_from(User)
        )
    ).one()
    day = utc_day_number(User.created_at)
    rows = await session.execute(
        select(day, func.count()).where(User.created_at >= start, User.created_at < end).group_by(day)
    )
    return UserStats(
        total=int(totals[0]),
        disabled=int(totals[1]),
        active={days: int(totals[2 + i]) for i, days in enumerate(active)},
        new_per_day={epoch_day(number): int(count) for number, count in rows.all()},
    )
