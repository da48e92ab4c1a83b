"""Scans per UTC day and status (`ScanDayCount`), kept by every write of a scan: what each write
adds to the counts, taking deleted scans out, a rebuild, and the read the statistics use.
`ScanRepository` calls `count` wherever it writes a counted column of a scan."""

from __future__ import annotations

import typing
import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, date
from typing import Any

from sqlalchemy import Table, delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from codepulse.db import epoch_day, utc_day_number
from codepulse.db.direct import AddToRows
from codepulse.scans.models import Scan, ScanDayCount

SCAN_DAYS = typing.cast(Table, ScanDayCount.__table__)
DAY_SUMS = ("scans", "engine_calls", "cache_hits", "timed")
ADD_TO_DAYS = AddToRows(SCAN_DAYS, ("day", "status", *DAY_SUMS), key=("day", "status"), sums=DAY_SUMS)
# The columns of a scan its day's counts depend on, in this order: a write of any of them moves
# the counts (from the scan's values before it to those after it).
COUNTED = ("queued_at", "status", "engine_calls", "cache_hits", "duration_ms")
COUNTED_COLUMNS = tuple(getattr(Scan, name) for name in COUNTED)


def day_deltas(added: Iterable[Sequence[Any]], removed: Iterable[Sequence[Any]]) -> list[tuple[Any, ...]]:
    """Rows of (day, status, *DAY_SUMS) to add for scans (rows of COUNTED values) counted anew
    and scans no longer counted as they were: each (day, status) once, in key order (concurrent
    writers lock the rows they change in the same order), none that nets to zero."""
    deltas: dict[tuple[date, str], list[int]] = {}
    for sign, scans in ((1, added), (-1, removed)):
        for queued_at, status, engine_calls, cache_hits, duration_ms in scans:
            sums = deltas.setdefault((queued_at.astimezone(UTC).date(), str(status)), [0, 0, 0, 0])
            for index, value in enumerate((1, engine_calls or 0, cache_hits or 0, int(duration_ms is not None))):
                sums[index] += sign * int(value)
    return [(*key, *sums) for key, sums in sorted(deltas.items()) if any(sums)]


class ScanDays:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def count(self, *, added: Iterable[Sequence[Any]] = (), removed: Iterable[Sequence[Any]] = ()) -> None:
        """Move the per-day counts (`ScanDayCount`) by scans counted anew and no longer counted as they
        were (rows of COUNTED values): the one place that writes them, but `rebuild`."""
        await ADD_TO_DAYS(self.session, day_deltas(added, removed))

    async def uncount_scans(self, org_id: uuid.UUID, repository_id: uuid.UUID | None = None) -> None:
        """Take the scans of a repository (every repository of the organization without one) out
        of the per-day counts: they are about to be deleted with it. Their rows are locked first,
        in id order, so a concurrent status change is either counted before or finds them gone."""
        conditions = [Scan.org_id == org_id]
        if repository_id is not None:
            conditions.append(Scan.repository_id == repository_id)
        rows = await self.session.execute(
            select(*COUNTED_COLUMNS).where(*conditions).order_by(Scan.id).with_for_update()
        )
        await self.count(removed=[tuple(row) for row in rows.all()])

    async def rebuild(self) -> None:
        """The per-day counts recomputed from every scan (a repair, and what a bulk load that
        bypasses this repository runs afterwards, while nothing else writes scans)."""
        await self.session.execute(delete(SCAN_DAYS))
        day = utc_day_number(Scan.queued_at)
        grouped = await self.session.execute(
            select(
                day,
                Scan.status,
                func.count(),
                func.coalesce(func.sum(Scan.engine_calls), 0),
                func.coalesce(func.sum(Scan.cache_hits), 0),
                func.count(Scan.duration_ms),
            )
            .group_by(day, Scan.status)
            .order_by(day, Scan.status)
        )
        rows = [(epoch_day(number), str(status), *(int(value) for value in sums)) for number, status, *sums in grouped]
        await ADD_TO_DAYS(self.session, rows)

    async def day_counts(self, first_day: date, last_day: date) -> list[tuple[date, str, int, int, int, int]]:
        """(day, status, *DAY_SUMS) of the days from `first_day` to `last_day`, rows at zero left out."""
        table = SCAN_DAYS.c
        result = await self.session.execute(
            select(table.day, table.status, *(table[name] for name in DAY_SUMS)).where(
                table.day >= first_day, table.day <= last_day, table.scans != 0
            )
        )
        return [(day, str(status), *(int(value) for value in sums)) for day, status, *sums in result.all()]
