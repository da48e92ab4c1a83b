"""Reads of the rankings, from the current snapshot only.

A page is one indexed query (by the board's position column) and `me` one more; the snapshot's
ids and counts are read once per LEADERBOARD_CACHE_SECONDS, as are the pages themselves. Public
boards leave out, as they are read, profiles made private or excluded since the snapshot was
computed (their ranks stay as computed until the next one).

Organization boards rank the members who share usage with their organizations, public or not,
from the same snapshot rows, when they are read (organizations are small).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, exists, func, literal, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from codepulse.auth import service as auth_service
from codepulse.auth.service import User
from codepulse.config import Settings
from codepulse.db import bytewise
from codepulse.errors import NotFound
from codepulse.leaderboard.cache import board_cache
from codepulse.leaderboard.models import (
    LeaderboardExclusion,
    LeaderboardSnapshot,
    LeaderboardStanding,
    Metric,
    Period,
    SnapshotState,
)
from codepulse.leaderboard.ranking import windows
from codepulse.leaderboard.schemas import (
    Board,
    Entry,
    MetricStanding,
    MyStanding,
    NotRankedReason,
    PeriodStandings,
    RankedUser,
    UserStandings,
    WindowOut,
)
from codepulse.orgs import service as orgs_service
from codepulse.orgs.service import OrgAccess
from codepulse.pagination import PageRequest, SortKey, paginate_rows
from codepulse.usage import service as usage_service

NANO = Decimal("0.000000001")
Standing = LeaderboardStanding
Previous = aliased(LeaderboardStanding, name="previous")


@dataclass(frozen=True)
class SnapshotInfo:
    current: uuid.UUID
    previous: uuid.UUID | None
    computed_at: datetime
    today: date
    totals: dict[str, dict[str, int]]


def value_column(metric: Metric, table: Any = Standing) -> ColumnElement[Any]:
    column: ColumnElement[Any] = getattr(table, metric.value)
    return column


def rank_column(metric: Metric, table: Any = Standing) -> ColumnElement[int | None]:
    column: ColumnElement[int | None] = getattr(table, f"{metric.value}_rank")
    return column


def position_column(metric: Metric) -> ColumnElement[int | None]:
    column: ColumnElement[int | None] = getattr(Standing, f"{metric.value}_position")
    return column


def present(metric: Metric, raw: Any) -> int | float | str | None:
    """A stored value as the API shows it."""
    if raw is None:
        return None
    if metric is Metric.COST:
        return format(Decimal(int(raw)).scaleb(-9).quantize(NANO), "f")
    if metric is Metric.CACHE_EFFICIENCY:
        return round(float(raw), 4)
    return int(raw)


def percentile(rank: int | None, ranked: int) -> float | None:
    if rank is None or ranked <= 0:
        return None
    if ranked == 1:
        return 100.0
    return round(100 * (ranked - rank) / (ranked - 1), 2)


def _change(previous: int | None, rank: int | None) -> int | None:
    return None if previous is None or rank is None else previous - rank


def window_out(info: SnapshotInfo | None, period: Period, today: date) -> WindowOut:
    window = windows(info.today if info is not None else today)[period]
    return WindowOut(start=window.start, end=window.end)


def _not_on_boards() -> ColumnElement[bool]:
    return Standing.user_id.not_in(select(LeaderboardExclusion.user_id))


class LeaderboardService:
    def __init__(self, session: AsyncSession | Callable[[], AsyncSession], settings: Settings, today: date) -> None:
        """`session`: a session, or a function making one on first use (a request's)."""
        self._session = session
        self.settings = settings
        self.today = today

    @property
    def session(self) -> AsyncSession:
        if not isinstance(self._session, AsyncSession):
            self._session = self._session()
        return self._session

    async def snapshot(self) -> SnapshotInfo | None:
        info: SnapshotInfo | None = await board_cache.get_or_load(
            "snapshot", self.settings.LEADERBOARD_CACHE_SECONDS, self._read_snapshot
        )
        return info

    async def _read_snapshot(self) -> SnapshotInfo | None:
        rows = (
            await self.session.scalars(
                select(LeaderboardSnapshot).where(
                    LeaderboardSnapshot.state.in_([SnapshotState.CURRENT.value, SnapshotState.PREVIOUS.value])
                )
            )
        ).all()
        by_state = {row.state: row for row in rows}
        current = by_state.get(SnapshotState.CURRENT.value)
        if current is None:
            return None
        previous = by_state.get(SnapshotState.PREVIOUS.value)
        return SnapshotInfo(
            current.id, previous.id if previous else None, current.computed_at, current.today, current.totals
        )

    def _previous_join(self, info: SnapshotInfo) -> ColumnElement[bool]:
        return and_(
            Previous.snapshot_id == (info.previous or info.current),
            literal(info.previous is not None),
            Previous.period == Standing.period,
            Previous.user_id == Standing.user_id,
        )

    # --- the global board ------------------------------------------------------------------

    async def board(self, period: Period, metric: Metric, page: PageRequest, viewer: User | None) -> Board:
        return Board.model_validate_json(await self.board_json(period, metric, page, viewer))

    async def board_json(self, period: Period, metric: Metric, page: PageRequest, viewer: User | None) -> bytes:
        """The board as JSON. The page (everything but `me`) is rendered once per snapshot and
        kept for LEADERBOARD_CACHE_SECONDS: a read answered from it renders only `me`."""
        info = await self.snapshot()
        key = ("board", info.current if info else None, period, metric, page.limit, page.cursor)

        async def render() -> bytes:
            items, next_cursor = await self._page(info, period, metric, page) if info is not None else ([], None)
            return (
                Board(
                    period=period,
                    metric=metric,
                    window=window_out(info, period, self.today),
                    computed_at=info.computed_at if info else None,
                    total_ranked=info.totals.get(period.value, {}).get(metric.value, 0) if info else 0,
                    items=items,
                    next_cursor=next_cursor,
                    me=None,
                )
                .model_dump_json(exclude={"me"})
                .encode()
            )

        rendered: bytes = await board_cache.get_or_load(key, self.settings.LEADERBOARD_CACHE_SECONDS, render)
        me = b"null" if viewer is None else await self._me_json(info, period, metric, viewer)
        # `rendered` is a JSON object: `me` goes in as its last member.
        return b"".join((rendered[:-1], b',"me":', me, b"}"))

    async def _page(
        self, info: SnapshotInfo, period: Period, metric: Metric, page: PageRequest
    ) -> tuple[list[Entry], str | None]:
        profiles = auth_service.user_profiles().subquery("profiles")
        position = position_column(metric)
        statement = (
            select(
                rank_column(metric),
                value_column(metric),
                rank_column(metric, Previous),
                profiles.c.username,
                profiles.c.name,
                profiles.c.avatar_url,
            )
            .join(profiles, profiles.c.id == Standing.user_id)
            .outerjoin(Previous, self._previous_join(info))
            .where(
                Standing.snapshot_id == info.current,
                Standing.period == period.value,
                position.is_not(None),
                profiles.c.profile_public.is_(True),
                _not_on_boards(),
            )
        )
        rows, next_cursor = await paginate_rows(
            self.session, statement, order=[SortKey(position, type=int, nullable=False)], params=page, tiebreaker=()
        )
        return [self._entry(metric, *row) for row in rows], next_cursor

    @staticmethod
    def _entry(
        metric: Metric, rank: int, value: Any, previous: int | None, username: str, name: str, avatar: str | None
    ) -> Entry:
        return Entry(
            rank=rank,
            user=RankedUser(username=username, name=name, avatar_url=avatar),
            value=present(metric, value) or 0,
            previous_rank=previous,
            rank_change=_change(previous, rank),
        )

    async def _me_json(self, info: SnapshotInfo | None, period: Period, metric: Metric, viewer: User) -> bytes:
        """`me` as JSON, kept like the pages: it changes only with the snapshot, the viewer's
        profile (part of the key) or an exclusion (which clears the cache)."""

        async def render() -> bytes:
            return (await self._me(info, period, metric, viewer)).model_dump_json().encode()

        key = ("me", info.current if info else None, period, metric, viewer.id, viewer.profile_public)
        rendered: bytes = await board_cache.get_or_load(key, self.settings.LEADERBOARD_CACHE_SECONDS, render)
        return rendered

    async def _me(self, info: SnapshotInfo | None, period: Period, metric: Metric, viewer: User) -> MyStanding:
        """One query when the caller has usage in the period; a second only when not."""
        if info is None:
            return _unranked(NotRankedReason.NOT_COMPUTED)
        excluded = exists(select(LeaderboardExclusion.user_id).where(LeaderboardExclusion.user_id == viewer.id))
        row = (
            await self.session.execute(
                select(rank_column(metric), value_column(metric), rank_column(metric, Previous), excluded)
                .outerjoin(Previous, self._previous_join(info))
                .where(
                    Standing.snapshot_id == info.current,
                    Standing.period == period.value,
                    Standing.user_id == viewer.id,
                )
            )
        ).first()
        if row is None:
            reason = NotRankedReason.EXCLUDED if await self._excluded(viewer.id) else NotRankedReason.NO_USAGE
            return _unranked(reason)
        rank, value, previous, is_excluded = row
        if is_excluded:
            return _unranked(NotRankedReason.EXCLUDED)
        if not viewer.profile_public:
            return _unranked(NotRankedReason.PRIVATE, present(metric, value))
        if rank is None:
            reason = NotRankedReason.NO_STREAK if metric is Metric.STREAK else NotRankedReason.BELOW_MINIMUM
            return _unranked(reason, present(metric, value))
        ranked = info.totals.get(period.value, {}).get(metric.value, 0)
        return MyStanding(
            rank=rank,
            value=present(metric, value),
            percentile=percentile(rank, ranked),
            previous_rank=previous,
            rank_change=_change(previous, rank),
            reason=None,
        )

    async def _excluded(self, user_id: uuid.UUID) -> bool:
        return await self.session.get(LeaderboardExclusion, user_id) is not None

    # --- one user on every board -----------------------------------------------------------

    async def user_standings(self, username: str, viewer: User | None) -> UserStandings:
        user = await auth_service.user_by_username(self.session, username)
        is_self = viewer is not None and user is not None and viewer.id == user.id
        if user is None or not (user.profile_public or is_self):
            raise NotFound("user")
        info = await self.snapshot()
        rows = {}
        excluded = await self._excluded(user.id)
        if info is not None and not excluded:
            result = await self.session.execute(
                select(Standing, *(rank_column(metric, Previous) for metric in Metric))
                .outerjoin(Previous, self._previous_join(info))
                .where(Standing.snapshot_id == info.current, Standing.user_id == user.id)
            )
            rows = {row[0].period: row for row in result.all()}
        periods: dict[Period, PeriodStandings] = {}
        for period in Period:
            row = rows.get(period.value)
            totals = info.totals.get(period.value, {}) if info else {}
            metrics = {}
            for index, metric in enumerate(Metric):
                standing = row[0] if row is not None else None
                rank = getattr(standing, f"{metric.value}_rank") if standing is not None else None
                value = getattr(standing, metric.value) if standing is not None else None
                metrics[metric] = MetricStanding(
                    rank=rank,
                    value=present(metric, value),
                    percentile=percentile(rank, totals.get(metric.value, 0)),
                    previous_rank=row[1 + index] if row is not None else None,
                    total_ranked=totals.get(metric.value, 0),
                )
            periods[period] = PeriodStandings(window=window_out(info, period, self.today), metrics=metrics)
        return UserStandings(username=user.username, computed_at=info.computed_at if info else None, periods=periods)

    # --- organization boards ---------------------------------------------------------------

    def _org_ranking(self, snapshot_id: uuid.UUID, access: OrgAccess, period: Period, metric: Metric) -> Select[Any]:
        """Members who share usage, ranked on `metric` within `snapshot_id`."""
        profiles = auth_service.user_profiles().subquery()
        value = value_column(metric)
        eligible = value.is_not(None) if metric is not Metric.STREAK else value > 0
        return (
            select(
                Standing.user_id,
                value.label("value"),
                func.rank().over(order_by=value.desc()).label("rank"),
                func.row_number()
                .over(order_by=[value.desc(), bytewise(self.session, profiles.c.username)])
                .label("position"),
                func.count().over().label("ranked"),
                profiles.c.username,
                profiles.c.name,
                profiles.c.avatar_url,
            )
            .join(profiles, profiles.c.id == Standing.user_id)
            .where(
                Standing.snapshot_id == snapshot_id,
                Standing.period == period.value,
                eligible,
                Standing.user_id.in_(orgs_service.member_user_ids(access.org.id)),
                Standing.user_id.not_in(usage_service.not_sharing_user_ids()),
                _not_on_boards(),
            )
        )

    async def org_board(
        self, access: OrgAccess, period: Period, metric: Metric, page: PageRequest, viewer: User
    ) -> Board:
        info = await self.snapshot()
        if info is None:
            return Board(
                period=period,
                metric=metric,
                window=window_out(None, period, self.today),
                computed_at=None,
                total_ranked=0,
                items=[],
                next_cursor=None,
                me=_unranked(NotRankedReason.NOT_COMPUTED),
            )
        current = self._org_ranking(info.current, access, period, metric).subquery("current_ranks")
        previous_ranks = (
            self._org_ranking(info.previous or info.current, access, period, metric)
            .where(literal(info.previous is not None))
            .subquery("previous_ranks")
        )
        statement = select(
            current.c.rank,
            current.c.value,
            previous_ranks.c.rank.label("previous_rank"),
            current.c.username,
            current.c.name,
            current.c.avatar_url,
            current.c.ranked,
        ).outerjoin(previous_ranks, previous_ranks.c.user_id == current.c.user_id)
        rows, next_cursor = await paginate_rows(
            self.session,
            statement,
            order=[SortKey(current.c.position, type=int, nullable=False)],
            params=page,
            tiebreaker=(),
        )
        mine = (await self.session.execute(statement.where(current.c.user_id == viewer.id))).first()
        total = int(rows[0].ranked) if rows else (int(mine.ranked) if mine else 0)
        if mine is None:
            total = total or await self._count(current)
        return Board(
            period=period,
            metric=metric,
            window=window_out(info, period, self.today),
            computed_at=info.computed_at,
            total_ranked=total,
            items=[self._entry(metric, *row[:6]) for row in rows],
            next_cursor=next_cursor,
            me=await self._my_org_standing(metric, mine, viewer, total),
        )

    async def _count(self, ranking: Any) -> int:
        return int(await self.session.scalar(select(func.count()).select_from(ranking)) or 0)

    async def _my_org_standing(self, metric: Metric, mine: Any, viewer: User, total: int) -> MyStanding:
        if mine is not None:
            return MyStanding(
                rank=mine.rank,
                value=present(metric, mine.value),
                percentile=percentile(mine.rank, total),
                previous_rank=mine.previous_rank,
                rank_change=_change(mine.previous_rank, mine.rank),
                reason=None,
            )
        if await self._excluded(viewer.id):
            return _unranked(NotRankedReason.EXCLUDED)
        if not await usage_service.shares_usage_with_orgs(self.session, viewer.id):
            return _unranked(NotRankedReason.NOT_SHARING)
        return _unranked(NotRankedReason.NO_STREAK if metric is Metric.STREAK else NotRankedReason.NO_USAGE)


def _unranked(reason: NotRankedReason, value: int | float | str | None = None) -> MyStanding:
    return MyStanding(rank=None, value=value, percentile=None, previous_rank=None, rank_change=None, reason=reason)
