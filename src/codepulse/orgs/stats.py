"""Platform figures about organizations for the superusers' statistics (`codepulse.admin.stats`)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from codepulse.orgs.models import Organization


@dataclass(frozen=True)
class OrganizationStats:
    total: int
    by_plan: dict[str, int]  # every plan with at least one organization


async def organization_stats(session: AsyncSession, default_plan: str) -> OrganizationStats:
    """Live organizations (deleted ones left out), in total and per plan: one nobody put on a
    plan counts under `default_plan` (the deployment's DEFAULT_PLAN)."""
    plan = func.coalesce(Organization.plan, default_plan)
    rows = await session.execute(
        select(plan, func.count()).where(Organization.deleted_at.is_(None)).group_by(plan).order_by(plan)
    )
    by_plan = {str(name): int(count) for name, count in rows.all()}
    return OrganizationStats(total=sum(by_plan.values()), by_plan=by_plan)
