"""`GET /api/v1/admin/users/{id}`: one account as a superuser sees it, composed from the slices
that own each part — the profile, sessions count and last session use (auth), organizations and
roles (orgs), the last sync and all-time usage totals (usage).

Last activity is the latest of: any session's or CLI token's last request (a sign-in opens a
session, so it counts too) and the last usage sync applied — the same two signals as "active in
7/30 days" in `GET /admin/stats` (`codepulse.auth.stats.user_stats` with usage's `synced_since`).

It lives in the admin slice, above auth, orgs and usage, because it needs all three; auth holds
the rest of the account administration (`codepulse.auth.admin_router`).
"""

from __future__ import annotations

import uuid
from datetime import datetime

from fastapi import Request
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession

from codepulse.auth.admin import UserAdminService
from codepulse.auth.admin_schemas import AdminUserOut
from codepulse.auth.dependencies import Superuser
from codepulse.auth.service import User
from codepulse.clock import ClockFunc
from codepulse.config import Settings
from codepulse.db import DbSession
from codepulse.orgs.service import OrgService, Role
from codepulse.pagination import MAX_LIMIT, PageRequest
from codepulse.routing import DomainRouter
from codepulse.usage.dashboards import DashboardService
from codepulse.usage.schemas import PeriodStats
from codepulse.usage.service import last_synced_at

admin_users_router = DomainRouter(prefix="/admin/users", tags=["admin"])


class AdminUserOrganization(BaseModel):
    id: uuid.UUID
    slug: str
    name: str
    role: Role


class AdminUserDetail(AdminUserOut):
    organizations: list[AdminUserOrganization] = Field(description="Every organization the account belongs to.")
    sessions_count: int = Field(description="Sessions and CLI tokens that still authenticate.")
    last_activity_at: datetime | None = Field(
        description="The latest of its sessions' and CLI tokens' last request (sign-ins included, at a "
        "minute's precision) and its last usage sync; null if none (sessions are deleted some time "
        "after they expire or are revoked)."
    )
    usage: PeriodStats = Field(description="All-time usage totals.")


async def _organizations(
    session: AsyncSession, settings: Settings, clock: ClockFunc, user: User
) -> list[AdminUserOrganization]:
    orgs = OrgService(session, settings, clock)
    found: list[AdminUserOrganization] = []
    cursor: str | None = None
    while True:
        rows, cursor = await orgs.list_mine(user, PageRequest(limit=MAX_LIMIT, cursor=cursor))
        found += [AdminUserOrganization(id=org.id, slug=org.slug, name=org.name, role=role) for org, role in rows]
        if cursor is None:
            return found


async def user_detail(
    session: AsyncSession, settings: Settings, clock: ClockFunc, user_id: uuid.UUID
) -> AdminUserDetail:
    """404 `user_not_found` for an unknown account."""
    admin = UserAdminService(session, clock)
    user = await admin.user(user_id)
    activity = await admin.activity(user)
    synced = await last_synced_at(session, user.id)
    moments = [moment for moment in (activity.last_activity_at, synced) if moment is not None]
    overview = await DashboardService(session, clock).overview(user)
    return AdminUserDetail(
        **AdminUserOut.model_validate(user).model_dump(),
        organizations=await _organizations(session, settings, clock, user),
        sessions_count=activity.sessions_count,
        last_activity_at=max(moments, default=None),
        usage=overview.periods["all"],
    )


@admin_users_router.get("/{user_id}", summary="One account, its organizations, sessions and usage (superuser)")
async def get_user(user_id: uuid.UUID, _admin: Superuser, session: DbSession, request: Request) -> AdminUserDetail:
    """The account with its organizations and roles, how many sessions still authenticate, its last
    activity and its all-time usage totals. 404 `user_not_found`."""
    state = request.app.state
    return await user_detail(session, state.settings, state.clock, user_id)
