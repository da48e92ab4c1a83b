"""Each user's best rank on the rolling 7-day boards, for other slices through
`codepulse.events.best_ranks` (the weekly summary names it)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from codepulse.events import BoardRank
from codepulse.leaderboard.models import (
    LeaderboardExclusion,
    LeaderboardSnapshot,
    LeaderboardStanding,
    Metric,
    Period,
    SnapshotState,
)
from codepulse.leaderboard.service import rank_column

PERIOD = Period.ROLLING_7D


async def best_ranks(session: AsyncSession, user_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, BoardRank]:
    """The best of each user's ranks over every metric of the current snapshot's 7-day boards (the
    first metric in board order on a tie); users not ranked there (private, excluded, no usage)
    are absent."""
    if not user_ids:
        return {}
    snapshot = await session.scalar(
        select(LeaderboardSnapshot).where(LeaderboardSnapshot.state == SnapshotState.CURRENT.value)
    )
    if snapshot is None:
        return {}
    metrics = list(Metric)
    rows = await session.execute(
        select(LeaderboardStanding.user_id, *(rank_column(metric) for metric in metrics)).where(
            LeaderboardStanding.snapshot_id == snapshot.id,
            LeaderboardStanding.period == PERIOD.value,
            LeaderboardStanding.user_id.in_(list(user_ids)),
            LeaderboardStanding.user_id.not_in(select(LeaderboardExclusion.user_id)),
        )
    )
    totals = snapshot.totals.get(PERIOD.value, {})
    best: dict[uuid.UUID, BoardRank] = {}
    for row in rows:
        ranked = [(rank, metric) for metric, rank in zip(metrics, row[1:], strict=True) if rank is not None]
        if ranked:
            rank, metric = min(ranked, key=lambda pair: pair[0])
            best[row.user_id] = BoardRank(PERIOD.value, metric.value, rank, int(totals.get(metric.value, 0)))
    return best
