"""Reads of the current community benchmarks (computed by `benchmarks.compute_benchmarks`)."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, select
from sqlalchemy.ext.asyncio import AsyncSession

from codepulse.leaderboard.benchmark_schemas import (
    BenchmarkWindow,
    CommunityBenchmarks,
    CommunityFigures,
    CostDistribution,
    CostStanding,
    Distribution,
    MyBenchmarks,
    MyFigures,
    NoStandingReason,
    Share,
    Standing,
)
from codepulse.leaderboard.benchmarks import FRACTIONS, SHARE_KINDS, window
from codepulse.leaderboard.models import (
    BenchmarkMember,
    BenchmarkMetric,
    BenchmarkRange,
    BenchmarkShare,
    BenchmarkSnapshot,
    BenchmarkStanding,
    BenchmarkStat,
)
from codepulse.usage import service as usage_service

COST = BenchmarkMetric.COST_PER_ACTIVE_DAY
STATISTICS = ("mean", *FRACTIONS)


def _usd(nanousd: float | None) -> Decimal | None:
    """A cost statistic (a float of nano-dollars) in USD, to the nano-dollar."""
    return None if nanousd is None else usage_service.nanousd_to_usd(round(nanousd))


def _window(snapshot: BenchmarkSnapshot, range_: BenchmarkRange) -> BenchmarkWindow:
    start, end = window(range_, snapshot.today)
    return BenchmarkWindow(start=start, end=end)


async def _current_snapshot(session: AsyncSession) -> BenchmarkSnapshot | None:
    # The newest; the previous one is kept for readers that found it before a computation committed.
    return await session.scalar(select(BenchmarkSnapshot).order_by(BenchmarkSnapshot.computed_at.desc()).limit(1))


def _distribution(metric: BenchmarkMetric, stat: BenchmarkStat | None) -> Distribution | CostDistribution:
    if stat is None:
        return CostDistribution(count=0) if metric is COST else Distribution(count=0)
    figures: dict[str, Any] = {name: getattr(stat, name) for name in STATISTICS}
    if metric is COST:
        return CostDistribution(count=stat.count, **{name: _usd(value) for name, value in figures.items()})
    return Distribution(count=stat.count, **figures)


def _shares(rows: list[BenchmarkShare]) -> list[Share]:
    total_tokens = sum(row.tokens for row in rows)
    total_cost = sum(row.cost for row in rows)
    return [
        Share(
            name=row.name,
            tokens=row.tokens,
            cost_usd=usage_service.nanousd_to_usd(row.cost),
            token_share=round(row.tokens / total_tokens, 4) if total_tokens else 0.0,
            cost_share=round(row.cost / total_cost, 4) if total_cost else 0.0,
        )
        for row in sorted(rows, key=lambda row: (-row.tokens, row.name))
    ]


async def community_benchmarks(session: AsyncSession, range_: BenchmarkRange) -> CommunityBenchmarks:
    snapshot = await _current_snapshot(session)
    stats: dict[str, BenchmarkStat] = {}
    shares: dict[str, list[BenchmarkShare]] = {kind: [] for kind in SHARE_KINDS}
    if snapshot is not None:
        stats = {
            stat.metric: stat
            for stat in await session.scalars(
                select(BenchmarkStat).where(BenchmarkStat.snapshot_id == snapshot.id, BenchmarkStat.range == range_)
            )
        }
        for share in await session.scalars(
            select(BenchmarkShare).where(BenchmarkShare.snapshot_id == snapshot.id, BenchmarkShare.range == range_)
        ):
            shares[share.kind].append(share)
    figures = {metric.value: _distribution(metric, stats.get(metric)) for metric in BenchmarkMetric}
    return CommunityBenchmarks(
        computed_at=snapshot.computed_at if snapshot else None,
        range=range_,
        window=_window(snapshot, range_) if snapshot else None,
        active_users=snapshot.community.get(range_, 0) if snapshot else 0,
        metrics=CommunityFigures.model_validate(figures),
        models=_shares(shares["model"]),
        sources=_shares(shares["source"]),
    )


async def my_benchmarks(session: AsyncSession, user_id: uuid.UUID, range_: BenchmarkRange) -> MyBenchmarks:
    """One query: the current snapshot and, by its primary key, my row of it."""
    row = (
        await session.execute(
            select(BenchmarkSnapshot, BenchmarkMember)
            .outerjoin(
                BenchmarkMember,
                and_(
                    BenchmarkMember.snapshot_id == BenchmarkSnapshot.id,
                    BenchmarkMember.range == range_,
                    BenchmarkMember.user_id == user_id,
                ),
            )
            .order_by(BenchmarkSnapshot.computed_at.desc())
            .limit(1)
        )
    ).first()
    snapshot, member = row if row is not None else (None, None)
    figures: dict[str, Standing | CostStanding] = {}
    for metric in BenchmarkMetric:
        value = getattr(member, metric) if member else None
        percentile = getattr(member, f"{metric}_percentile") if member else None
        percentile = None if percentile is None else round(percentile, 2)
        figures[metric] = (
            CostStanding(value=_usd(value), percentile=percentile)
            if metric is COST
            else Standing(value=value, percentile=percentile)
        )
    if snapshot is None:
        reason: NoStandingReason | None = NoStandingReason.NOT_COMPUTED
    elif member is None:
        reason = NoStandingReason.NO_USAGE
    else:
        reason = NoStandingReason.EXCLUDED if member.standing == BenchmarkStanding.EXCLUDED else None
    return MyBenchmarks(
        computed_at=snapshot.computed_at if snapshot else None,
        range=range_,
        window=_window(snapshot, range_) if snapshot else None,
        active_users=snapshot.community.get(range_, 0) if snapshot else 0,
        standing=BenchmarkStanding(member.standing) if member else None,
        reason=reason,
        metrics=MyFigures.model_validate(figures),
    )
