"""Quotas: the one question a slice asks before it adds something a plan limits.

orgs (seats), repositories (connected repositories) and scans (scans a month) call
`check_quota(session, settings, org_id, resource, amount=1, now=...)` in the transaction that adds
it. The billing slice, above them all, answers: at start-up it registers its check with
`on_quota_check` (`codepulse.billing.hooks`), which raises `QuotaExceeded` (402) when the
organization's plan does not allow `amount` more. No check registered is a programming error, not
an unlimited plan.

Race-free: the check takes a transaction-scoped lock per organization and resource before the
count, so the count and the caller's insert are serialised with every other addition of the same
resource to the same organization (SQLite's write transactions are serialised anyway).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy.ext.asyncio import AsyncSession

from codepulse.config import Settings
from codepulse.db import advisory_xact_lock
from codepulse.hooks import HookRegistry
from codepulse.orgs.models import Organization
from codepulse.orgs.repository import OrgRepository


class QuotaResource(StrEnum):
    REPOSITORIES = "repositories"  # connected, not archived
    SEATS = "seats"  # members and pending invitations
    SCANS_PER_MONTH = "scans_per_month"  # per calendar month (UTC) or subscription period


@dataclass(frozen=True)
class QuotaCheck:
    """Whether `amount` more of `resource` fit the organization's plan, at `now`."""

    org_id: uuid.UUID
    resource: QuotaResource
    amount: int
    now: datetime
    settings: Settings


quota_hooks: HookRegistry[QuotaCheck] = HookRegistry("org.quota")
on_quota_check = quota_hooks.register
"""Register `async (session, check) -> None`, raising `QuotaExceeded` when the check fails."""


class NoQuotaCheck(RuntimeError):
    """No slice registered a quota check: the process did not call the app's `register_hooks()`."""


async def check_quota(
    session: AsyncSession,
    settings: Settings,
    org_id: uuid.UUID,
    resource: QuotaResource,
    *,
    now: datetime,
    amount: int = 1,
) -> None:
    """Raise `QuotaExceeded` unless `amount` more of `resource` fit the organization's plan; hold
    the organization's lock on `resource` until the transaction ends."""
    if not quota_hooks.hooks:
        raise NoQuotaCheck("no quota check is registered (codepulse.app.register_hooks)")
    await advisory_xact_lock(session, f"quota:{resource.value}:{org_id}")
    await quota_hooks.run(session, QuotaCheck(org_id, resource, amount, now, settings))


def plan_id(org: Organization, settings: Settings) -> str:
    """The organization's plan: the one billing assigned, or the deployment's default."""
    return org.plan or settings.DEFAULT_PLAN


async def live_organization(session: AsyncSession, org_id: uuid.UUID) -> Organization | None:
    """The organization, unless it does not exist or is deleted."""
    org = await session.get(Organization, org_id)
    return org if org is not None and org.deleted_at is None else None


async def set_plan(session: AsyncSession, org: Organization, plan: str | None) -> None:
    """Put the organization on `plan` (None: back to the deployment's default)."""
    org.plan = plan
    await session.flush()


async def count_seats(session: AsyncSession, org_id: uuid.UUID, now: datetime) -> int:
    """Members and pending invitations."""
    repo = OrgRepository(session)
    return await repo.count_members(org_id) + await repo.count_pending_invitations(org_id, now)
