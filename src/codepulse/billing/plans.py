"""The plans, readable at a glance: what each lets an organization use, and what lifts a limit.

Limits are per organization: `repositories` connected and not archived, `seats` (members and
pending invitations), `scans_per_month` (per calendar month, UTC, or per subscription period when
there is one). `None` is unlimited. A deployment may override any limit with `PLAN_LIMITS`
(`{"free": {"repositories": 5}}`); paid plans take their Stripe price from the environment.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum

from codepulse.config import Settings
from codepulse.orgs.quotas import QuotaResource

Resource = QuotaResource  # billing's name for what a plan limits


class PlanId(StrEnum):
    FREE = "free"
    PRO = "pro"
    TEAM = "team"
    ENTERPRISE = "enterprise"


@dataclass(frozen=True)
class Plan:
    id: PlanId
    name: str
    # What an organization on the plan may use; None: unlimited.
    limits: Mapping[Resource, int | None]
    # Sold through Stripe Checkout (the setting naming its price); otherwise assigned by an
    # operator (`codepulse billing set-plan`) or the default plan.
    price_setting: str | None = None
    description: str = field(default="")

    def limit(self, resource: Resource) -> int | None:
        return self.limits[resource]


# Cheapest first: `upgrade_to` is the first plan after the current one that lifts a limit.
PLANS: tuple[Plan, ...] = (
    Plan(
        PlanId.FREE,
        "Free",
        {Resource.REPOSITORIES: 3, Resource.SEATS: 3, Resource.SCANS_PER_MONTH: 50},
        description="For trying codepulse on a few repositories.",
    ),
    Plan(
        PlanId.PRO,
        "Pro",
        {Resource.REPOSITORIES: 20, Resource.SEATS: 10, Resource.SCANS_PER_MONTH: 1_000},
        price_setting="STRIPE_PRICE_PRO",
        description="For a small team scanning its repositories every day.",
    ),
    Plan(
        PlanId.TEAM,
        "Team",
        {Resource.REPOSITORIES: 100, Resource.SEATS: 50, Resource.SCANS_PER_MONTH: 10_000},
        price_setting="STRIPE_PRICE_TEAM",
        description="For an engineering organization.",
    ),
    Plan(
        PlanId.ENTERPRISE,
        "Enterprise",
        {Resource.REPOSITORIES: None, Resource.SEATS: None, Resource.SCANS_PER_MONTH: None},
        description="Unlimited; assigned by the operator.",
    ),
)


def plans(settings: Settings) -> tuple[Plan, ...]:
    """The plans with this deployment's limit overrides (`PLAN_LIMITS`) applied."""
    if not settings.PLAN_LIMITS:
        return PLANS
    return tuple(_overridden(plan, settings) for plan in PLANS)


def _overridden(plan: Plan, settings: Settings) -> Plan:
    overrides = settings.PLAN_LIMITS.get(plan.id.value)
    if overrides is None:
        return plan
    limits = dict(plan.limits)
    for name in overrides.model_fields_set:  # a limit set to null is unlimited; one left out stays
        limits[Resource(name)] = getattr(overrides, name)
    return replace(plan, limits=limits)


def plan_of(settings: Settings, plan_id: str) -> Plan:
    """The plan `plan_id` (an unknown id, e.g. of a plan since retired, is the free plan)."""
    for plan in plans(settings):
        if plan.id.value == plan_id:
            return plan
    return plans(settings)[0]


def price_id(settings: Settings, plan: Plan) -> str | None:
    """The Stripe price a paid plan is sold at here (None: not for sale on this deployment)."""
    if plan.price_setting is None:
        return None
    value = getattr(settings, plan.price_setting)
    return value if isinstance(value, str) and value else None


def upgrade_to(settings: Settings, current: Plan, resource: Resource, needed: int) -> Plan | None:
    """The cheapest plan above `current` whose limit on `resource` allows `needed`; None when no
    plan does (the top plan, or a need beyond every limit)."""
    ordered = plans(settings)
    position = next(index for index, plan in enumerate(ordered) if plan.id is current.id)
    for plan in ordered[position + 1 :]:
        limit = plan.limit(resource)
        if limit is None or limit >= needed:
            return plan
    return None
