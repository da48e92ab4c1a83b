"""Scheduled nudges: `streak_at_risk`, for people about to lose a usage streak, and
`weekly_summary`, their week of usage on Monday morning.

Hourly, in every time zone whose local day has under three hours left: users of that zone with a
current streak of at least three days (usage on each of the three days before today, local) and
no usage yet today are told, at most once per local day (the dedup key is the local date). The
candidates are found in SQL; only their recent days are read to say how long the streak is.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import asdict
from datetime import date, datetime, time, timedelta
from typing import Any

from sqlalchemy import case, distinct, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from codepulse import events
from codepulse.auth import service as auth_service
from codepulse.notifications.service import notify
from codepulse.usage import service as usage_service
from codepulse.usage.streaks import streaks, zone

STREAK_MIN_DAYS = 3
LAST_HOURS = timedelta(hours=3)
LOOKBACK = timedelta(days=120)


def local_day_ending(now: datetime, zone_name: str) -> date | None:
    """The local date in `zone_name` when that day has under `LAST_HOURS` left at `now`; else None."""
    local = now.astimezone(zone(zone_name))
    midnight = datetime.combine(local.date() + timedelta(days=1), time(0), tzinfo=local.tzinfo)
    return local.date() if midnight - local <= LAST_HOURS else None


async def _at_risk(session: AsyncSession, zone_name: str, today: date) -> dict[uuid.UUID, int]:
    """{user: current streak} of the zone's users active on each of the three days before `today`
    and not yet today."""
    profiles = auth_service.user_profiles().subquery("profiles")
    daily = usage_service.daily_rows().subquery("daily")
    first = today - timedelta(days=STREAK_MIN_DAYS)
    before_today = func.count(distinct(case((daily.c.day < today, daily.c.day))))
    today_rows = func.sum(case((daily.c.day == today, 1), else_=0))
    candidates = (
        select(daily.c.user_id)
        .join(profiles, profiles.c.id == daily.c.user_id)
        .where(profiles.c.timezone == zone_name, daily.c.day.between(first, today))
        .group_by(daily.c.user_id)
        .having(before_today == STREAK_MIN_DAYS, today_rows == 0)
    )
    user_ids = list(await session.scalars(candidates))
    if not user_ids:
        return {}
    days: dict[uuid.UUID, set[date]] = defaultdict(set)
    recent = select(daily.c.user_id, daily.c.day).where(
        daily.c.user_id.in_(user_ids), daily.c.day.between(today - LOOKBACK, today)
    )
    for row in await session.execute(recent):
        days[row.user_id].add(row.day)
    return {user_id: streaks(days[user_id], today).current for user_id in user_ids}


async def notify_streaks_at_risk(session: AsyncSession, now: datetime) -> int:
    """Tell everyone whose streak ends with their local day (see the module); how many were told."""
    zone_names = await auth_service.user_timezones(session)
    told = 0
    for zone_name in zone_names:
        today = local_day_ending(now, zone_name)
        if today is None:
            continue
        for user_id, streak in (await _at_risk(session, zone_name, today)).items():
            told += await notify(
                session,
                [user_id],
                "streak_at_risk",
                f"Your {streak}-day streak ends at midnight",
                "Use an AI coding assistant today to keep it going.",
                {"streak": streak, "day": today.isoformat()},
                f"streak_at_risk:{today.isoformat()}",
                now=now,
            )
    return told


SUMMARY_WEEKDAY = 0  # Monday
SUMMARY_HOUR = 9


def summary_monday(now: datetime, zone_name: str) -> date | None:
    """The local Monday when it is between 09:00 and 10:00 on a Monday in `zone_name` at `now` (the
    hourly job's run just passed 09:00 there); else None."""
    local = now.astimezone(zone(zone_name))
    if local.weekday() == SUMMARY_WEEKDAY and local.hour == SUMMARY_HOUR:
        return local.date()
    return None


def _change(now_value: int, before: int) -> str:
    if before == 0:
        return "new this week" if now_value else "none"
    percent = round((now_value - before) * 100 / before)
    return f"{percent:+d} % on the week before"


def _sum_when(condition: Any, column: Any) -> Any:
    return func.coalesce(func.sum(case((condition, column), else_=0)), 0)


def _two_weeks(zone_name: str, monday: date) -> Any:
    """Per user of the zone with usage in the two weeks before `monday`: last week's tokens, cost
    and active days, and the week before's tokens."""
    profiles = auth_service.user_profiles().subquery("profiles")
    daily = usage_service.daily_rows().subquery("daily")
    in_last = daily.c.day >= monday - timedelta(days=7)
    return (
        select(
            daily.c.user_id,
            _sum_when(in_last, daily.c.tokens).label("tokens"),
            _sum_when(~in_last, daily.c.tokens).label("tokens_before"),
            _sum_when(in_last, daily.c.cost).label("cost"),
            func.count(distinct(case((in_last, daily.c.day)))).label("days"),
        )
        .join(profiles, profiles.c.id == daily.c.user_id)
        .where(profiles.c.timezone == zone_name, daily.c.day >= monday - timedelta(days=14), daily.c.day < monday)
        .group_by(daily.c.user_id)
    )


async def notify_weekly_summaries(session: AsyncSession, now: datetime) -> int:
    """Monday 09:00 local: last week's tokens, cost and active days against the week before, to
    every user of the zones where it is that time; nobody without usage in those two weeks."""
    zone_names = await auth_service.user_timezones(session)
    told = 0
    for zone_name in zone_names:
        monday = summary_monday(now, zone_name)
        if monday is None:
            continue
        last_week = monday - timedelta(days=7)
        rows = (await session.execute(_two_weeks(zone_name, monday))).all()
        ranks = await events.best_ranks(session, [row.user_id for row in rows])
        for row in rows:
            tokens, before = int(row.tokens), int(row.tokens_before)
            dollars = int(row.cost) / 1e9
            data: dict[str, Any] = {
                "week_start": last_week.isoformat(),
                "tokens": tokens,
                "tokens_week_before": before,
                "cost_nanousd": int(row.cost),
                "active_days": int(row.days),
            }
            body = f"Last week you used {tokens:,} tokens ({_change(tokens, before)}) for ${dollars:,.2f}."
            best = ranks.get(row.user_id)
            if best is not None:
                data["best_rank"] = asdict(best)
                metric = best.metric.replace("_", " ")
                body += f" Your best leaderboard rank: #{best.rank} of {best.ranked} by {metric} over the last 7 days."
            told += await notify(
                session,
                [row.user_id],
                "weekly_summary",
                f"Your week: {tokens:,} tokens on {int(row.days)} active days",
                body,
                data,
                f"weekly_summary:{monday.isoformat()}",
                now=now,
            )
    return told
