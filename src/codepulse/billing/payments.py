"""Taking an organization's money through Stripe: Checkout, the Customer Portal and invoices.

The organization's Stripe customer is made at its first checkout (the organization's id in its
metadata, an idempotency key per organization, and a per-organization lock, so concurrent
checkouts share one customer). Without `STRIPE_SECRET_KEY` every call answers 503
`billing_not_configured`: billing runs self-hosted.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from codepulse.billing.models import BillingAccount
from codepulse.billing.plans import PlanId, plan_of, price_id
from codepulse.config import Settings
from codepulse.db import advisory_xact_lock
from codepulse.errors import BadGateway, Conflict, FieldError, ServiceUnavailable, ValidationFailed
from codepulse.integrations.stripe import (
    InvoicePage,
    StripeGateway,
    StripeNotConfigured,
    StripeRejected,
    StripeUnavailable,
)
from codepulse.orgs.service import OrgAccess, Organization
from codepulse.pagination import invalid_cursor

# A subscription in one of these states is the organization's paid plan: a new checkout would
# charge twice, so plan changes go through the portal.
PAID_STATES = frozenset({"trialing", "active", "past_due", "unpaid", "paused"})

GatewayFactory = Callable[[Settings], StripeGateway]


def not_configured() -> ServiceUnavailable:
    return ServiceUnavailable(
        "Billing is not configured on this server (no Stripe account): plans are assigned by the operator.",
        code="billing_not_configured",
    )


@asynccontextmanager
async def stripe_api(settings: Settings, factory: GatewayFactory = StripeGateway) -> AsyncIterator[StripeGateway]:
    """A Stripe client for one request, its failures as problems: 503 `billing_not_configured`
    without a key, 503 `stripe_unavailable` (retry later), 502 `stripe_rejected`."""
    try:
        gateway = factory(settings)
    except StripeNotConfigured:
        raise not_configured() from None
    try:
        async with gateway:
            yield gateway
    except StripeUnavailable:
        raise ServiceUnavailable(
            "Stripe cannot be reached right now; try again in a moment.",
            code="stripe_unavailable",
            headers={"Retry-After": "30"},
        ) from None
    except StripeRejected as error:
        raise BadGateway(f"Stripe refused the request: {error}", code="stripe_rejected") from None


@dataclass(frozen=True)
class Urls:
    """Where Stripe sends the customer back: the dashboard's billing page of the organization."""

    base: str

    def billing(self, org: Organization, outcome: str | None = None) -> str:
        page = f"{self.base.rstrip('/')}/orgs/{org.slug}/billing"
        return f"{page}?checkout={outcome}" if outcome else page


class Payments:
    def __init__(self, session: AsyncSession, settings: Settings, factory: GatewayFactory = StripeGateway) -> None:
        self.session = session
        self.settings = settings
        self.factory = factory
        self.urls = Urls(settings.FRONTEND_URL)

    async def account(self, org: Organization) -> BillingAccount | None:
        return await self.session.get(BillingAccount, org.id)

    async def checkout(self, access: OrgAccess, plan: PlanId) -> str:
        """A Checkout Session for `plan` (a plan sold here); its URL. 409 `subscription_active`
        while the organization pays for a subscription (changes go through the portal)."""
        org = access.org
        async with stripe_api(self.settings, self.factory) as api:
            price = price_id(self.settings, plan_of(self.settings, plan.value))
            if price is None:
                raise ValidationFailed(
                    [FieldError(field="body.plan", message="This plan is not sold here.", code="plan_not_for_sale")]
                )
            # One customer per organization, also under concurrent checkouts.
            await advisory_xact_lock(self.session, f"billing.customer:{org.id}")
            account = await self.account(org)
            if account is not None and account.subscription_id is not None and account.status in PAID_STATES:
                raise Conflict(
                    "This organization already has a subscription: change or cancel it in the billing portal.",
                    code="subscription_active",
                )
            if account is None:
                customer = await api.create_customer(name=org.name, org_id=str(org.id), email=access.user.email)
                account = BillingAccount(org_id=org.id, customer_id=customer, cancel_at_period_end=False)
                self.session.add(account)
                await self.session.flush()
            return await api.create_checkout_session(
                customer=account.customer_id,
                price=price,
                org_id=str(org.id),
                success_url=self.urls.billing(org, "success"),
                cancel_url=self.urls.billing(org, "canceled"),
            )

    async def portal(self, org: Organization) -> str:
        """A Customer Portal session's URL. 409 `no_billing_account` before a first checkout."""
        async with stripe_api(self.settings, self.factory) as api:
            account = await self.account(org)
            if account is None:
                raise Conflict(
                    "This organization has no billing account yet: subscribe to a plan first.",
                    code="no_billing_account",
                )
            return await api.create_portal_session(customer=account.customer_id, return_url=self.urls.billing(org))

    async def invoices(self, org: Organization, *, limit: int, cursor: str | None) -> InvoicePage:
        """The organization's invoices, newest first; `cursor` is the last invoice id of the page
        before."""
        async with stripe_api(self.settings, self.factory) as api:
            account = await self.account(org)
            if account is None:
                return InvoicePage([], has_more=False)
            try:
                return await api.invoices(customer=account.customer_id, limit=limit, starting_after=cursor)
            except StripeRejected as error:
                if cursor is not None and error.param == "starting_after":
                    raise invalid_cursor("This cursor names no invoice of the organization.") from None
                raise
