"""Billing's hooks on the slices below it (see `codepulse.hooks`)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from codepulse.billing.models import BillingAccount
from codepulse.billing.payments import PAID_STATES
from codepulse.billing.service import enforce_plan
from codepulse.errors import Conflict
from codepulse.orgs import quotas
from codepulse.orgs import service as orgs_service
from codepulse.orgs.service import Organization


async def refuse_paid_subscription(session: AsyncSession, org: Organization) -> None:
    """An organization paying for a subscription cannot be deleted until it is canceled: Stripe
    would go on charging an organization nobody can reach."""
    account = await session.get(BillingAccount, org.id)
    if account is not None and account.subscription_id is not None and account.status in PAID_STATES:
        raise Conflict(
            "This organization pays for a subscription: cancel it in the billing portal first.",
            code="subscription_active",
        )


def register_hooks() -> None:
    # Every quota in the product (seats, repositories, scans a month) is answered by the plan.
    quotas.on_quota_check(enforce_plan)
    orgs_service.on_org_delete(refuse_paid_subscription)
