"""Local days (the user's time zone at ingest) and streaks, including backfilled history."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from codepulse.usage.streaks import streaks
from tests.auth.helpers import SignedIn, register
from tests.helpers import FakeClock
from tests.usage.helpers import record, sync

NOON = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
TODAY = date(2026, 11, 23)


@pytest.fixture
def noon(clock: FakeClock) -> datetime:
    clock.now = NOON
    return NOON


async def _set_timezone(client: httpx.AsyncClient, who: SignedIn, zone: str) -> None:
    response = await client.patch("/api/v1/users/me", headers=who.headers, json={"timezone": zone})
    assert response.status_code == 200, response.text


async def _daily(client: httpx.AsyncClient, who: SignedIn) -> dict[str, dict[str, Any]]:
    response = await client.get("/api/v1/dashboard/trends?range=7d", headers=who.headers)
    assert response.status_code == 200, response.text
    return {point["date"]: point for point in response.json()["points"] if point["records"]}


def test_streak_rules() -> None:
    assert (streaks([], TODAY).current, streaks([], TODAY).longest) == (0, 0)
    run = [TODAY - timedelta(days=i) for i in range(5)]
    assert streaks(run, TODAY).current == 5
    # Nothing yet today: the streak ending yesterday is still current.
    assert streaks(run[1:], TODAY).current == 4
    # Two days without usage: no current streak, the longest remains.
    result = streaks([*run[2:], TODAY - timedelta(days=30)], TODAY)
    assert (result.current, result.longest) == (0, 3)
    assert streaks(run + run, TODAY).longest == 5  # duplicates count once


async def test_records_land_on_the_local_date_of_the_time_zone_at_ingest(
    client: httpx.AsyncClient, noon: datetime
) -> None:
    ada = await register(client, "ada")
    await _set_timezone(client, ada, "America/Los_Angeles")
    early_utc = datetime(2026, 11, 23, 5, 30, tzinfo=UTC)  # 21:30 on the 22nd in Los Angeles
    await sync(client, ada, [record("m1", at=early_utc, output=10)])
    assert set(await _daily(client, ada)) == {"2026-11-22"}

    # Moving to Tokyo does not rewrite history: the known record keeps its day, even when it grows...
    await _set_timezone(client, ada, "Asia/Tokyo")
    grown = await sync(client, ada, [record("m1", at=early_utc, output=99)])
    assert grown["updated"] == 1
    # ...while a new record at the same instant is 14:30 on the 23rd in Tokyo.
    await sync(client, ada, [record("m2", at=early_utc, output=1)])
    days = await _daily(client, ada)
    assert set(days) == {"2026-11-22", "2026-11-23"}
    assert days["2026-11-22"]["tokens"]["output"] == 99


async def test_a_local_midnight_splits_two_records_a_minute_apart(client: httpx.AsyncClient, noon: datetime) -> None:
    ada = await register(client, "ada")
    await _set_timezone(client, ada, "Europe/Paris")  # UTC+1 in November
    before = datetime(2026, 11, 22, 22, 59, 30, tzinfo=UTC)  # 23:59:30 in Paris
    after = datetime(2026, 11, 22, 23, 0, 30, tzinfo=UTC)  # 00:00:30 in Paris
    await sync(client, ada, [record("late", at=before), record("early", at=after)])
    assert set(await _daily(client, ada)) == {"2026-11-22", "2026-11-23"}
    # The same instant written with another offset is the same day.
    paris = ZoneInfo("Europe/Paris")
    assert record("x", at=before.astimezone(paris))["timestamp"].endswith("+01:00")
    await sync(client, ada, [record("late2", at=before.astimezone(paris), output=1)])
    assert (await _daily(client, ada))["2026-11-22"]["records"] == 2


async def test_backfilling_thirty_days_gives_a_thirty_day_streak(client: httpx.AsyncClient, noon: datetime) -> None:
    ada = await register(client, "ada")
    # A first sync reads old logs: 30 days of history, sent newest first, in two batches.
    history = [record(f"h{i}", at=noon - timedelta(days=i, hours=3)) for i in range(30)]
    await sync(client, ada, history[15:])
    result = await sync(client, ada, history[:15])
    assert (result["totals"]["current_streak"], result["totals"]["longest_streak"]) == (30, 30)
    # Older, separate history does not extend the current run but is remembered.
    older = [record(f"o{i}", at=noon - timedelta(days=40 + i)) for i in range(3)]
    result = await sync(client, ada, older)
    assert (result["totals"]["current_streak"], result["totals"]["longest_streak"]) == (30, 30)
    overview = (await client.get("/api/v1/dashboard/overview", headers=ada.headers)).json()
    assert overview["current_streak"] == 30
    assert overview["periods"]["all"]["active_days"] == 33
    assert overview["periods"]["30d"]["active_days"] == 30
    assert overview["periods"]["7d"]["active_days"] == 7
    assert overview["periods"]["today"]["active_days"] == 1
