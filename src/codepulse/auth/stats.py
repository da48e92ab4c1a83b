"""Platform figures about accounts for the superusers' statistics (`codepulse.admin.stats`):
a few aggregate statements, no row read one by one."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, case, exists, func, or_, select
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


AlsoActive = Callable[[ColumnElement[Any], datetime], ColumnElement[bool]]


def _active(since: datetime, also_active: AlsoActive | None) -> ColumnElement[bool]:
    """Whether an account's session (web or CLI token) made a request since `since`, or the
    caller knows it active another way (`also_active(user_id, since)`: a condition on the id).
    Probed per account through indexes that lead with the user (a few per account), instead of
    collecting every session and sync of the window."""
    used = exists().where(AuthSession.user_id == User.id, AuthSession.last_used_at >= since)
    return or_(used, also_active(User.__table__.c.id, since)) if also_active else used


async def user_stats(
    session: AsyncSession,
    *,
    start: datetime,
    end: datetime,
    now: datetime,
    also_active: AlsoActive | None = None,
) -> UserStats:
    """Accounts in total and disabled, active in the last 7 and 30 days before `now` (signed in:
    a session used; or what `also_active` adds, e.g. usage's syncs), and created per UTC day in
    `[start, end)`."""
    active = {days: _active(now - timedelta(days=days), also_active) for days in ACTIVE_WINDOWS}
    totals = (
        await session.execute(
            select(
                func.count(),
                func.count(User.disabled_at),
                *(func.coalesce(func.sum(case((condition, 1), else_=0)), 0) for condition in active.values()),
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
