"""Nudges: `streak_at_risk` (hourly, users with a streak of three days or more and no usage yet
today are told when their own local day has under three hours left, once per local day) and
`weekly_summary` (Monday 09:00 in each user's time zone)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import cast

from sqlalchemy import Table, select
from sqlalchemy.ext.asyncio import AsyncSession

from codepulse.db import attach_partition, create_partition_table, list_partitioned
from codepulse.leaderboard.hooks import register_hooks as register_leaderboard_hooks
from codepulse.leaderboard.models import LeaderboardSnapshot, LeaderboardStanding, SnapshotState
from codepulse.leaderboard.ranking import partition_name
from codepulse.notifications.models import Notification
from codepulse.notifications.nudges import (
    local_day_ending,
    notify_streaks_at_risk,
    notify_weekly_summaries,
    summary_monday,
)
from codepulse.usage.models import UsageDaily
from tests.factories import Account, MakeUser

DAY = date(2026, 12, 4)


def _usage(user: Account, day: date) -> UsageDaily:
    return UsageDaily(
        user_id=user.model.id,
        day=day,
        source="claude-code",
        model="m",
        input_tokens=10,
        output_tokens=10,
        cache_creation_5m_tokens=0,
        cache_creation_1h_tokens=0,
        cache_read_tokens=0,
        reasoning_tokens=0,
        cost_nanousd=1,
        records=1,
        unpriced_records=0,
    )


async def _told(session: AsyncSession) -> list[tuple[str, int, str]]:
    rows = (await session.execute(select(Notification.user_id, Notification.data, Notification.dedup_key))).all()
    return sorted((str(row.user_id), row.data["streak"], row.dedup_key) for row in rows)


def test_a_local_day_ends_within_three_hours() -> None:
    assert local_day_ending(datetime(2026, 12, 4, 21, 0, 1, tzinfo=UTC), "UTC") == DAY
    assert local_day_ending(datetime(2026, 12, 4, 20, 59, tzinfo=UTC), "UTC") is None
    # 22:30 in Tokyo is 13:30 UTC.
    assert local_day_ending(datetime(2026, 12, 4, 13, 30, tzinfo=UTC), "Asia/Tokyo") == DAY
    assert local_day_ending(datetime(2026, 12, 4, 13, 30, tzinfo=UTC), "UTC") is None


async def test_streaks_at_risk_are_told_once_per_local_day(session: AsyncSession, make_user: MakeUser) -> None:
    runner = await make_user("runner", timezone="UTC")  # 5 days up to yesterday, nothing today
    done = await make_user("done", timezone="UTC")  # already active today
    short = await make_user("short", timezone="UTC")  # only 2 days
    tokyo = await make_user("tokyo", timezone="Asia/Tokyo")  # 3 days, but its evening came earlier
    for back in range(1, 6):
        session.add(_usage(runner, DAY - timedelta(days=back)))
    for back in range(4):
        session.add(_usage(done, DAY - timedelta(days=back)))
    for back in (1, 2):
        session.add(_usage(short, DAY - timedelta(days=back)))
    for back in (1, 2, 3):
        session.add(_usage(tokyo, DAY - timedelta(days=back)))
    await session.flush()

    assert await notify_streaks_at_risk(session, datetime(2026, 12, 4, 18, tzinfo=UTC)) == 0  # 6 hours left in UTC
    assert await notify_streaks_at_risk(session, datetime(2026, 12, 4, 13, 30, tzinfo=UTC)) == 1  # Tokyo's evening
    assert await notify_streaks_at_risk(session, datetime(2026, 12, 4, 21, 30, tzinfo=UTC)) == 1  # UTC's evening
    assert await notify_streaks_at_risk(session, datetime(2026, 12, 4, 22, 30, tzinfo=UTC)) == 0  # told already
    assert await _told(session) == sorted(
        [
            (str(runner.model.id), 5, "streak_at_risk:2026-12-04"),
            (str(tokyo.model.id), 3, "streak_at_risk:2026-12-04"),
        ]
    )
    title = await session.scalar(select(Notification.title).where(Notification.user_id == runner.model.id))
    assert title == "Your 5-day streak ends at midnight"


MONDAY = date(2026, 12, 7)


def test_the_summary_hour_is_monday_nine_local() -> None:
    assert summary_monday(datetime(2026, 12, 7, 9, 30, tzinfo=UTC), "UTC") == MONDAY
    assert summary_monday(datetime(2026, 12, 7, 10, 0, tzinfo=UTC), "UTC") is None
    assert summary_monday(datetime(2026, 12, 8, 9, 0, tzinfo=UTC), "UTC") is None  # a Tuesday
    assert summary_monday(datetime(2026, 12, 7, 0, 30, tzinfo=UTC), "Asia/Tokyo") == MONDAY  # 09:30 there


async def test_weekly_summaries_on_monday_morning_local(session: AsyncSession, make_user: MakeUser) -> None:
    ada = await make_user("ada", timezone="UTC")
    gone = await make_user("gone", timezone="UTC")  # nothing in the last two weeks: skipped
    tokyo = await make_user("tokyo", timezone="Asia/Tokyo")
    for day in (date(2026, 12, 1), date(2026, 12, 6), date(2026, 11, 25)):  # two days last week, one before
        session.add(_usage(ada, day))
    session.add(_usage(gone, date(2026, 11, 16)))
    session.add(_usage(tokyo, date(2026, 12, 3)))
    await session.flush()

    assert await notify_weekly_summaries(session, datetime(2026, 12, 7, 0, 30, tzinfo=UTC)) == 1  # Tokyo's 09:30
    assert await notify_weekly_summaries(session, datetime(2026, 12, 7, 9, 5, tzinfo=UTC)) == 1  # UTC's
    assert await notify_weekly_summaries(session, datetime(2026, 12, 7, 9, 55, tzinfo=UTC)) == 0  # once
    rows = (await session.execute(select(Notification.user_id, Notification.data, Notification.title))).all()
    by_user = {row.user_id: row for row in rows}
    assert set(by_user) == {ada.model.id, tokyo.model.id}
    summary = by_user[ada.model.id]
    assert summary.data == {
        "week_start": "2026-11-30",
        "tokens": 40,
        "tokens_week_before": 20,
        "cost_nanousd": 2,
        "active_days": 2,
    }
    assert summary.title == "Your week: 40 tokens on 2 active days"


async def test_the_weekly_summary_names_the_best_leaderboard_rank(session: AsyncSession, make_user: MakeUser) -> None:
    register_leaderboard_hooks()
    ada = await make_user("ada", timezone="UTC")
    unranked = await make_user("private", timezone="UTC")
    for user in (ada, unranked):
        session.add(_usage(user, date(2026, 12, 1)))
    snapshot = LeaderboardSnapshot(
        state=SnapshotState.CURRENT.value,
        computed_at=datetime(2026, 12, 7, 8, tzinfo=UTC),
        today=date(2026, 12, 7),
        duration_ms=1,
        totals={"7d": {"tokens": 40, "cost": 40, "active_days": 40, "streak": 40, "cache_efficiency": 12}},
    )
    session.add(snapshot)
    await session.flush()
    if list_partitioned(session):  # PostgreSQL: the snapshot's standings go in a partition of their own
        parent = cast(Table, LeaderboardStanding.__table__)
        await create_partition_table(session, parent, partition_name(snapshot.id))
        await attach_partition(session, parent, partition_name(snapshot.id), snapshot.id)
    ranks = {"tokens_rank": 9, "cost_rank": 12, "active_days_rank": 3, "streak_rank": 5}
    standing = {"snapshot_id": snapshot.id, "tokens": 1, "cost": 1, "active_days": 1, "streak": 1}
    session.add(LeaderboardStanding(**standing, period="7d", user_id=ada.model.id, public=True, **ranks))
    # A better rank on another period's board does not count: the summary is about the last 7 days.
    session.add(LeaderboardStanding(**standing, period="all", user_id=ada.model.id, public=True, tokens_rank=1))
    session.add(LeaderboardStanding(**standing, period="7d", user_id=unranked.model.id, public=False))
    await session.flush()

    assert await notify_weekly_summaries(session, datetime(2026, 12, 7, 9, 5, tzinfo=UTC)) == 2
    rows = (await session.execute(select(Notification.user_id, Notification.data, Notification.body))).all()
    by_user = {row.user_id: row for row in rows}
    told = by_user[ada.model.id]
    assert told.data["best_rank"] == {"period": "7d", "metric": "active_days", "rank": 3, "ranked": 40}
    assert "#3 of 40 by active days over the last 7 days" in told.body
    assert "best_rank" not in by_user[unranked.model.id].data
