"""Billing's own tables: an organization's Stripe customer and subscription, and the Stripe events
already received."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from codepulse.db import Base, Timestamps


class BillingAccount(Timestamps, Base):
    """An organization's Stripe customer (made at its first checkout) and the state of its
    subscription as last read from Stripe."""

    __tablename__ = "billing_accounts"

    org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(255), unique=True)
    subscription_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    # Stripe's subscription status (trialing, active, past_due, canceled, incomplete, ...).
    status: Mapped[str | None] = mapped_column(String(32))
    current_period_start: Mapped[datetime | None]
    current_period_end: Mapped[datetime | None]
    cancel_at_period_end: Mapped[bool] = mapped_column(Boolean, default=False)
    # When the subscription fell past due (the grace period counts from here); None otherwise.
    past_due_since: Mapped[datetime | None]


class WebhookEvent(Base):
    """A Stripe event id seen once: a redelivery of it is acknowledged and ignored."""

    __tablename__ = "billing_webhook_events"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    type: Mapped[str] = mapped_column(String(100))
    received_at: Mapped[datetime]
