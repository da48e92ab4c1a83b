"""What billing's routes answer."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from codepulse.billing.plans import PlanId, Resource


class PlanOut(BaseModel):
    id: PlanId
    name: str
    description: str
    limits: dict[Resource, int | None] = Field(description="Per organization; null is unlimited.")
    stripe_price_id: str | None = Field(
        description="The Stripe price the plan is sold at here; null: not sold here (assigned by the operator)."
    )


class PlansOut(BaseModel):
    items: list[PlanOut] = Field(description="Cheapest first.")
    default_plan: PlanId = Field(description="The plan of an organization nobody put on another.")


class UsageOut(BaseModel):
    used: int
    limit: int | None = Field(description="Null: unlimited.")
    remaining: int | None = Field(description="Null: unlimited; 0 when full (or over, after a downgrade).")


class PaymentStateOut(BaseModel):
    """The organization's Stripe customer and subscription (admins and owners only)."""

    customer_id: str
    subscription_id: str | None
    status: str | None
    past_due_since: datetime | None = Field(description="Set while the subscription is past due.")


class BillingOut(BaseModel):
    plan: PlanId
    plan_name: str
    assigned: bool = Field(description="False: the deployment's default plan.")
    status: str = Field(description="active (subscriptions bring trialing, past_due, canceled, ...).")
    current_period_start: datetime = Field(description="Scans are counted from here (a calendar month, UTC).")
    current_period_end: datetime
    cancel_at_period_end: bool
    usage: dict[Resource, UsageOut]
    payment: PaymentStateOut | None = Field(
        default=None, description="Admins and owners, once the organization has a Stripe customer; null otherwise."
    )


class PlanAssignment(BaseModel):
    plan: PlanId | None = Field(description="Null: back to the deployment's default plan.")


class WebhookReceived(BaseModel):
    received: bool
    duplicate: bool = Field(description="The event was received before: acknowledged, not applied again.")


class CheckoutIn(BaseModel):
    plan: PlanId = Field(description="A plan sold here (one with a Stripe price: GET /billing/plans).")


class RedirectOut(BaseModel):
    url: str = Field(description="Send the browser here (Stripe's page).")


class InvoiceOut(BaseModel):
    id: str
    number: str | None
    status: str | None = Field(description="Stripe's: draft, open, paid, uncollectible or void.")
    amount_due: int = Field(description="In the currency's smallest unit (cents).")
    amount_paid: int
    currency: str
    period_start: datetime | None
    period_end: datetime | None
    hosted_invoice_url: str | None
    created: datetime
