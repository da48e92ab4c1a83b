"""A user's days: their time zone, and streaks from the set of active local dates."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

ONE_DAY = timedelta(days=1)
UTC_ZONE = ZoneInfo("UTC")


def zone(name: str) -> ZoneInfo:
    """The time zone named `name` (a user's setting), or UTC when it is unknown."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return UTC_ZONE


@dataclass(frozen=True)
class Streaks:
    current: int
    longest: int


def streaks(active_days: Iterable[date], today: date) -> Streaks:
    """`current`: consecutive active days ending today, or yesterday when today has no usage yet
    (the streak is not lost before the day is over); `longest`: the longest run ever. Days are
    the local dates records were stamped with, so backfilled history counts like live usage."""
    days = sorted(set(active_days))
    longest = run = 0
    previous: date | None = None
    for day in days:
        run = run + 1 if previous is not None and day - previous == ONE_DAY else 1
        longest = max(longest, run)
        previous = day
    active = set(days)
    end = today if today in active else today - ONE_DAY
    current = 0
    while end in active:
        current += 1
        end -= ONE_DAY
    return Streaks(current=current, longest=longest)
