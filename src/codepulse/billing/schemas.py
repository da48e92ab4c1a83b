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


class BillingOut(BaseModel):
    plan: PlanId
    plan_name: str
    assigned: bool = Field(description="False: the deployment's default plan.")
    status: str = Field(description="active (subscriptions bring trialing, past_due, canceled, ...).")
    current_period_start: datetime = Field(description="Scans are counted from here (a calendar month, UTC).")
    current_period_end: datetime
    cancel_at_period_end: bool
    usage: dict[Resource, UsageOut]


class PlanAssignment(BaseModel):
    plan: PlanId | None = Field(description="Null: back to the deployment's default plan.")
