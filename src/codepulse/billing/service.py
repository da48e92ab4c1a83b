"""Billing: which plan an organization is on, what it may use, and what it uses.

Every quota in the product is answered here: orgs, repositories and scans call
`orgs.quotas.check_quota(...)`, and billing's `enforce_plan` (registered at start-up,
`codepulse.billing.hooks`) compares the organization's use with its plan. The plan is the one an
operator or a superuser assigned (`assign_plan`), or the deployment's `DEFAULT_PLAN`. Scans are
counted per calendar month (UTC).
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from codepulse import events
from codepulse.auth.service import User
from codepulse.billing.models import BillingAccount
from codepulse.billing.plans import Plan, PlanId, Resource, plan_of, upgrade_to
from codepulse.clock import ClockFunc, utcnow
from codepulse.config import Settings
from codepulse.db import Database
from codepulse.errors import QuotaExceeded
from codepulse.events import OrgEvent
from codepulse.orgs import quotas
from codepulse.orgs.quotas import QuotaCheck
from codepulse.orgs.service import Organization, OrgService
from codepulse.repositories import service as repositories_service
from codepulse.scans import service as scans_service

log = structlog.get_logger("codepulse.billing")


def month_start(now: datetime) -> datetime:
    """The start of `now`'s calendar month in UTC: the scan quota's period."""
    return now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def next_month_start(now: datetime) -> datetime:
    start = month_start(now)
    return start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)


async def used(
    session: AsyncSession, org_id: uuid.UUID, resource: Resource, now: datetime, period_start: datetime
) -> int:
    """How much of `resource` the organization uses now (scans: since `period_start`)."""
    if resource is Resource.REPOSITORIES:
        return await repositories_service.count_active_repositories(session, org_id)
    if resource is Resource.SEATS:
        return await quotas.count_seats(session, org_id, now)
    return await scans_service.scans_since(session, org_id, period_start)


def current_plan(org: Organization, settings: Settings) -> Plan:
    return plan_of(settings, quotas.plan_id(org, settings))


# The subscription states that have a current period the scans are counted in.
SUBSCRIBED = frozenset({"trialing", "active", "past_due"})


@dataclass(frozen=True)
class Standing:
    """Where an organization stands now: the plan whose limits apply, the subscription's status
    ("active" without one) and the period scans are counted in."""

    plan: Plan
    status: str
    period_start: datetime
    period_end: datetime
    cancel_at_period_end: bool
    account: BillingAccount | None = None


async def standing(session: AsyncSession, settings: Settings, org: Organization, now: datetime) -> Standing:
    """The organization's plan (past due beyond `BILLING_PAST_DUE_GRACE_DAYS`: the free plan's
    limits) and its period: the subscription's current one, or the calendar month (UTC)."""
    plan = current_plan(org, settings)
    account = await session.get(BillingAccount, org.id)
    if account is None or account.subscription_id is None or account.status is None:
        return Standing(plan, "active", month_start(now), next_month_start(now), False, account)
    grace = timedelta(days=settings.BILLING_PAST_DUE_GRACE_DAYS)
    if account.status == "past_due" and account.past_due_since is not None and now - account.past_due_since >= grace:
        plan = plan_of(settings, PlanId.FREE.value)
    start, end = account.current_period_start, account.current_period_end
    if account.status not in SUBSCRIBED or start is None or end is None or not start <= now < end:
        start, end = month_start(now), next_month_start(now)
    return Standing(plan, account.status, start, end, account.cancel_at_period_end, account)


def _count(number: int, noun: str) -> str:
    return f"{number:,} {noun}" if number == 1 else f"{number:,} {noun}s"


def _usage_sentence(resource: Resource, limit: int, count: int) -> str:
    if resource is Resource.REPOSITORIES:
        noun = "connected repository" if limit == 1 else "connected repositories"
        return f"allows {limit:,} {noun} and {count:,} are connected"
    if resource is Resource.SEATS:
        return f"has {_count(limit, 'seat')} and {count:,} are taken (members and pending invitations)"
    return f"allows {_count(limit, 'scan')} a month and {count:,} ran this month"


def _exceeded(plan: Plan, check: QuotaCheck, limit: int, count: int) -> QuotaExceeded:
    upgrade = upgrade_to(check.settings, plan, check.resource, count + check.amount)
    detail = f"This organization's {plan.name} plan {_usage_sentence(check.resource, limit, count)}"
    detail += f"; {check.amount:,} more do not fit." if check.amount > 1 else "."
    if upgrade is not None:
        detail += f" The {upgrade.name} plan allows more."
    return QuotaExceeded(
        detail,
        resource=check.resource.value,
        limit=limit,
        used=count,
        plan=plan.id.value,
        upgrade_to=upgrade.id.value if upgrade is not None else None,
    )


async def enforce_plan(session: AsyncSession, check: QuotaCheck) -> None:
    """The quota check (`orgs.quotas.on_quota_check`): raise `QuotaExceeded` when `check.amount`
    more of the resource do not fit the organization's plan. A plan that was downgraded keeps
    what exists and refuses additions beyond its limits."""
    org = await quotas.live_organization(session, check.org_id)
    if org is None:  # the caller found it a moment ago in this transaction; nothing to add to
        return
    now_standing = await standing(session, check.settings, org, check.now)
    plan = now_standing.plan
    limit = plan.limit(check.resource)
    if limit is None:
        return
    count = await used(session, check.org_id, check.resource, check.now, now_standing.period_start)
    if count + check.amount > limit:
        raise _exceeded(plan, check, limit, count)
    await _announce_quota(session, check, plan, limit, count + check.amount, now_standing.period_start)


QUOTA_WARNING_SHARE = 0.8
_NOUNS = {Resource.REPOSITORIES: "repositories", Resource.SEATS: "seats", Resource.SCANS_PER_MONTH: "scans"}


async def _announce_quota(
    session: AsyncSession, check: QuotaCheck, plan: Plan, limit: int, after: int, period_start: datetime
) -> None:
    """`quota_reached` when this addition takes the last unit, `quota_warning` when it passes 80 %:
    once per limit and period (the dedup key), to the organization's admins; in the adding
    transaction, so a refused or failed addition announces nothing."""
    if limit <= 0 or after < limit * QUOTA_WARNING_SHARE:
        return
    reached = after >= limit
    kind = "quota_reached" if reached else "quota_warning"
    noun = _NOUNS[check.resource]
    title = (
        f"All {limit:,} {noun} of the {plan.name} plan are used" if reached else f"{after:,} of {limit:,} {noun} used"
    )
    await events.announce(
        session,
        OrgEvent(
            kind=kind,
            org_id=check.org_id,
            title=title,
            body=f"This organization uses {after:,} of the {limit:,} {noun} its {plan.name} plan allows.",
            dedup_key=f"{kind}:{check.resource.value}:{period_start.date().isoformat()}",
            now=check.now,
            data={"resource": check.resource.value, "limit": limit, "used": after, "plan": plan.id.value},
        ),
    )


@dataclass(frozen=True)
class UsageLine:
    resource: Resource
    used: int
    limit: int | None


@dataclass(frozen=True)
class OrgBilling:
    standing: Standing
    assigned: bool  # False: the deployment's default plan
    usage: list[UsageLine]


class UnknownPlan(ValueError):
    pass


class BillingService:
    def __init__(self, session: AsyncSession, settings: Settings, clock: ClockFunc) -> None:
        self.session = session
        self.settings = settings
        self.clock = clock

    async def overview(self, org: Organization) -> OrgBilling:
        """The organization's plan and its use of every limit, now."""
        now = self.clock()
        now_standing = await standing(self.session, self.settings, org, now)
        usage = [
            UsageLine(
                resource,
                await used(self.session, org.id, resource, now, now_standing.period_start),
                now_standing.plan.limit(resource),
            )
            for resource in Resource
        ]
        return OrgBilling(now_standing, org.plan is not None, usage)

    async def assign_plan(
        self, org: Organization, plan_id: str | None, actor: User | None, ip: str | None, *, source: str
    ) -> Plan:
        """Put the organization on `plan_id` (None: back to the deployment's default), audited as
        `billing.plan_changed` in the organization's log. What it has beyond the new limits stays;
        additions beyond them are refused."""
        if plan_id is not None and plan_id not in {plan.value for plan in PlanId}:
            raise UnknownPlan(plan_id)
        before = quotas.plan_id(org, self.settings)
        await quotas.set_plan(self.session, org, plan_id)
        after = quotas.plan_id(org, self.settings)
        await OrgService(self.session, self.settings, self.clock).audit(
            org.id,
            actor,
            "billing.plan_changed",
            "organization",
            org.id,
            {"from": before, "to": after, "assigned": plan_id is not None, "source": source},
            ip,
        )
        log.info("billing.plan_changed", org_id=str(org.id), plan_from=before, plan_to=after, source=source)
        return current_plan(org, self.settings)


class OrganizationNotFound(LookupError):
    pass


@dataclass(frozen=True)
class Assignment:
    slug: str
    before: str
    after: Plan


async def assign_plan_by_ref(
    database: Database, settings: Settings, ref: str, plan_id: str | None, clock: ClockFunc = utcnow
) -> Assignment:
    """`assign_plan` for an organization given by id or slug, by the operator (no actor), in a
    transaction of its own. Raises OrganizationNotFound, UnknownPlan."""
    async with database.transaction() as session:
        org = await OrgService(session, settings, clock).resolve(ref)
        if org is None:
            raise OrganizationNotFound(ref)
        before = quotas.plan_id(org, settings)
        after = await BillingService(session, settings, clock).assign_plan(org, plan_id, None, None, source="operator")
        return Assignment(org.slug, before, after)


def assign_plan_in_database(settings: Settings, ref: str, plan_id: str | None) -> Assignment:
    """`assign_plan_by_ref` on the configured database (blocking; for the CLI)."""

    async def run() -> Assignment:
        database = Database.from_settings(settings)
        try:
            return await assign_plan_by_ref(database, settings, ref, plan_id)
        finally:
            await database.dispose()

    return asyncio.run(run())
