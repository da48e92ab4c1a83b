"""Reads of a user's usage: the dashboards, the organization view and public stats, all from the
daily aggregates."""

from __future__ import annotations

import uuid
from datetime import date, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from codepulse.auth import service as auth_service
from codepulse.auth.service import User
from codepulse.clock import ClockFunc
from codepulse.errors import NotFound
from codepulse.orgs.service import OrgAccess, OrgService
from codepulse.pagination import PageRequest
from codepulse.usage.price_overrides import load_price_book
from codepulse.usage.pricing import nanousd_to_usd
from codepulse.usage.repository import Sums, UsageRepository
from codepulse.usage.schemas import (
    Granularity,
    MemberRef,
    MemberUsage,
    ModelBreakdown,
    ModelUsage,
    OrgTotals,
    OrgUsage,
    Overview,
    PeriodStats,
    PublicStats,
    Range,
    Share,
    SourceBreakdown,
    SourceUsage,
    TokenCounts,
    TrendPoint,
    Trends,
)
from codepulse.usage.streaks import streaks, zone


class DashboardService:
    def __init__(self, session: AsyncSession, clock: ClockFunc) -> None:
        self.session = session
        self.repo = UsageRepository(session)
        self.clock = clock

    def _today(self, user: User) -> date:
        return self.clock().astimezone(zone(user.timezone)).date()

    async def overview(self, user: User) -> Overview:
        today = self._today(user)
        per_day = {group[0]: (sums, days) for group, sums, days, _ in await self.repo.sums_by([user.id], ["day"])}
        periods: dict[str, PeriodStats] = {}
        for name, start in (
            ("today", today),
            ("7d", today - timedelta(days=6)),
            ("30d", today - timedelta(days=29)),
            ("all", None),
        ):
            total = Sums()
            active = 0
            for day, (sums, _) in per_day.items():
                if start is None or start <= day <= today:
                    total = total + sums
                    active += 1
            periods[name] = _period(total, active)
        by_model = await self.repo.sums_by([user.id], ["model"])
        by_source = await self.repo.sums_by([user.id], ["source"])
        run = streaks(per_day, today)
        return Overview(
            timezone=user.timezone,
            today=today,
            periods=periods,
            current_streak=run.current,
            longest_streak=run.longest,
            top_model=_top(by_model),
            top_source=_top(by_source),
            unpriced_records=sum(sums.unpriced_records for _, sums, _, _ in by_model),
        )

    async def trends(self, user: User, range_: Range, granularity: Granularity) -> Trends:
        end = self._today(user)
        if range_.days is None:  # all: from the first day with usage (today when there is none)
            per_day = {group[0]: sums for group, sums, _, _ in await self.repo.sums_by([user.id], ["day"], end=end)}
            start = min(per_day, default=end)
        else:
            start = end - timedelta(days=range_.days - 1)
            per_day = {
                group[0]: sums
                for group, sums, _, _ in await self.repo.sums_by([user.id], ["day"], start=start, end=end)
            }
        buckets: dict[date, Sums] = {}
        day = start
        while day <= end:
            bucket = day if granularity is Granularity.DAY else day - timedelta(days=day.weekday())
            buckets[bucket] = buckets.get(bucket, Sums()) + per_day.get(day, Sums())
            day += timedelta(days=1)
        points = [
            TrendPoint(
                date=bucket,
                tokens=TokenCounts.model_validate(sums),
                cost_usd=nanousd_to_usd(sums.cost_nanousd),
                records=sums.records,
            )
            for bucket, sums in buckets.items()
        ]
        return Trends(range=range_, granularity=granularity, start=start, end=end, points=points)

    def _window(self, user: User, range_: Range) -> tuple[date | None, date]:
        end = self._today(user)
        return (None if range_.days is None else end - timedelta(days=range_.days - 1)), end

    async def sources(self, user: User, range_: Range) -> SourceBreakdown:
        start, end = self._window(user, range_)
        groups = await self.repo.sums_by([user.id], ["source"], start=start, end=end)
        total_tokens = sum(sums.total_tokens for _, sums, _, _ in groups)
        total_cost = sum(sums.cost_nanousd for _, sums, _, _ in groups)
        items = [
            SourceUsage(
                source=str(group[0]),
                tokens=TokenCounts.model_validate(sums),
                cost_usd=nanousd_to_usd(sums.cost_nanousd),
                records=sums.records,
                active_days=days,
                token_share=_share(sums.total_tokens, total_tokens),
                cost_share=_share(sums.cost_nanousd, total_cost),
            )
            for group, sums, days, _ in sorted(groups, key=lambda g: (-g[1].total_tokens, str(g[0][0])))
        ]
        return SourceBreakdown(range=range_, start=start, end=end, items=items)

    async def models(self, user: User, range_: Range) -> ModelBreakdown:
        start, end = self._window(user, range_)
        groups = await self.repo.sums_by([user.id], ["model"], start=start, end=end)
        book = await load_price_book(self.session)
        total_tokens = sum(sums.total_tokens for _, sums, _, _ in groups)
        total_cost = sum(sums.cost_nanousd for _, sums, _, _ in groups)
        items = []
        for group, sums, _, _ in sorted(groups, key=lambda g: (-g[1].total_tokens, str(g[0][0]))):
            model = str(group[0])
            items.append(
                ModelUsage(
                    model=model,
                    display_name=book.display_name(model),
                    priced=book.price(model) is not None,
                    tokens=TokenCounts.model_validate(sums),
                    cost_usd=nanousd_to_usd(sums.cost_nanousd),
                    records=sums.records,
                    unpriced_records=sums.unpriced_records,
                    token_share=_share(sums.total_tokens, total_tokens),
                    cost_share=_share(sums.cost_nanousd, total_cost),
                )
            )
        return ModelBreakdown(
            range=range_,
            start=start,
            end=end,
            unpriced_records=sum(sums.unpriced_records for _, sums, _, _ in groups),
            items=items,
        )

    # --- organizations ---------------------------------------------------------------------

    async def org_usage(self, access: OrgAccess, orgs: OrgService, range_: Range) -> OrgUsage:
        """Usage of the organization's members who share it, per member and in total.

        Days are each member's own local dates; the window ends today in UTC."""
        end = self.clock().date()
        start = None if range_.days is None else end - timedelta(days=range_.days - 1)
        users: dict[uuid.UUID, User] = {}
        page: PageRequest | None = PageRequest(limit=100)
        while page is not None:
            members, cursor = await orgs.members(access, page)
            users.update((member.user.id, member.user) for member in members)
            page = PageRequest(limit=100, cursor=cursor) if cursor else None
        hidden = await self.repo.not_sharing(users)
        sharing = [user_id for user_id in users if user_id not in hidden]
        groups = {
            group[0]: (sums, days, last)
            for group, sums, days, last in (
                await self.repo.sums_by(sharing, ["user_id"], start=start, end=end) if sharing else []
            )
        }
        members_out = []
        total = Sums()
        for user_id in sharing:
            sums, days, last = groups.get(user_id, (Sums(), 0, None))
            total = total + sums
            members_out.append(
                MemberUsage(
                    user=MemberRef.model_validate(users[user_id]),
                    tokens=TokenCounts.model_validate(sums),
                    cost_usd=nanousd_to_usd(sums.cost_nanousd),
                    records=sums.records,
                    active_days=days,
                    last_active=last,
                )
            )
        members_out.sort(key=lambda m: (-m.tokens.total, m.user.username))
        return OrgUsage(
            org_id=access.org.id,
            range=range_,
            start=start,
            end=end,
            totals=OrgTotals(
                tokens=TokenCounts.model_validate(total),
                cost_usd=nanousd_to_usd(total.cost_nanousd),
                records=total.records,
                active_members=sum(1 for m in members_out if m.records),
            ),
            members=members_out,
            members_sharing=len(sharing),
            members_not_sharing=len(hidden),
        )

    # --- public stats ----------------------------------------------------------------------

    async def public_stats(self, username: str, viewer: User | None) -> PublicStats:
        user = await auth_service.user_by_username(self.session, username)
        if user is None or (not user.profile_public and (viewer is None or viewer.id != user.id)):
            raise NotFound("user")
        days = await self.repo.day_totals(user.id)
        run = streaks((day for day, _, _ in days), self._today(user))
        total_tokens = sum(tokens for _, tokens, _ in days)
        return PublicStats(
            username=user.username,
            total_tokens=total_tokens,
            total_cost_usd=nanousd_to_usd(sum(cost for _, _, cost in days)),
            active_days=len(days),
            current_streak=run.current,
            longest_streak=run.longest,
            first_active=days[0][0] if days else None,
            last_active=days[-1][0] if days else None,
            top_models=_shares(await self.repo.sums_by([user.id], ["model"]), total_tokens),
            top_sources=_shares(await self.repo.sums_by([user.id], ["source"]), total_tokens),
        )


def _period(sums: Sums, active_days: int) -> PeriodStats:
    read_base = sums.input + sums.cache_read
    return PeriodStats(
        tokens=TokenCounts.model_validate(sums),
        cost_usd=nanousd_to_usd(sums.cost_nanousd),
        records=sums.records,
        active_days=active_days,
        cache_efficiency=round(sums.cache_read / read_base, 4) if read_base else None,
    )


def _share(part: int, whole: int) -> float:
    return round(part / whole, 4) if whole else 0.0


def _top(groups: list[tuple[tuple[Any, ...], Sums, int, date | None]]) -> str | None:
    best = max(groups, key=lambda g: (g[1].total_tokens, str(g[0][0])), default=None)
    return str(best[0][0]) if best is not None and best[1].total_tokens else None


def _shares(groups: list[tuple[tuple[Any, ...], Sums, int, date | None]], total: int, limit: int = 5) -> list[Share]:
    ranked = sorted(groups, key=lambda g: (-g[1].total_tokens, str(g[0][0])))[:limit]
    return [Share(name=str(group[0]), token_share=_share(sums.total_tokens, total)) for group, sums, _, _ in ranked]
