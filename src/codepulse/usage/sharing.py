"""Per-user usage settings: whether a user's usage shows in their organizations' view."""

from __future__ import annotations

import uuid

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from codepulse.auth.service import User
from codepulse.clock import ClockFunc
from codepulse.usage.repository import UsageRepository

log = structlog.get_logger("codepulse.usage")


class SharingService:
    def __init__(self, session: AsyncSession, clock: ClockFunc) -> None:
        self.session = session
        self.repo = UsageRepository(session)
        self.clock = clock

    async def share_setting(self, user: User) -> bool:
        return await shares_usage_with_orgs(self.session, user.id)

    async def set_share_setting(self, user: User, share: bool) -> bool:
        await self.repo.save_settings(user.id, share, self.clock())
        log.info("usage.settings_changed", share_usage_with_orgs=share)
        return share


async def shares_usage_with_orgs(session: AsyncSession, user_id: uuid.UUID) -> bool:
    """The user's `share_usage_with_orgs` setting (default true)."""
    settings = await UsageRepository(session).settings(user_id)
    return settings is None or settings.share_usage_with_orgs
