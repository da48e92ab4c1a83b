"""Stripe's webhooks: verified, stored once, handed to the task queue, applied by re-reading.

`receive` checks the `Stripe-Signature` of the raw body with the SDK (300 s tolerance; any of the
`v1` signatures Stripe sends during a secret rotation), stores the event id first (`ON CONFLICT DO
NOTHING`: a redelivered event is acknowledged and ignored) and, for the events billing follows,
queues a `billing.stripe_event` task in the same transaction; the endpoint answers 2xx at once.

The task never trusts the event's copy of the subscription: it re-reads the subscription from
Stripe and upserts its whole state, so events delivered out of order (an `updated` before its
`created`, a late `updated` after `deleted`) always leave Stripe's current state.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import stripe
import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from codepulse import events, tasks
from codepulse.billing.models import BillingAccount, WebhookEvent
from codepulse.billing.plans import PlanId, plans, price_id
from codepulse.billing.service import BillingService
from codepulse.config import Settings
from codepulse.db import advisory_xact_lock, upsert
from codepulse.errors import BadRequest, ServiceUnavailable
from codepulse.events import OrgEvent
from codepulse.integrations.stripe import StripeGateway, StripeRejected, StripeSubscription
from codepulse.orgs import quotas
from codepulse.tasks import PermanentTaskError, TaskContext

log = structlog.get_logger("codepulse.billing")

TASK_KIND = "billing.stripe_event"
SIGNATURE_TOLERANCE_SECONDS = 300
HANDLED = frozenset(
    {
        "checkout.session.completed",
        "customer.subscription.created",
        "customer.subscription.updated",
        "customer.subscription.deleted",
        "invoice.paid",
        "invoice.payment_failed",
        "invoice.payment_action_required",
    }
)
# The subscription states in which the organization has its paid plan (past_due: for the grace
# period, see service.effective_plan).
ENTITLED = frozenset({"trialing", "active", "past_due"})


@dataclass(frozen=True)
class Received:
    event_id: str
    type: str
    duplicate: bool
    queued: bool


def _subscription_of(event_type: str, obj: dict[str, Any]) -> str | None:
    if event_type.startswith("customer.subscription."):
        return _text(obj.get("id"))
    if event_type == "checkout.session.completed":
        return _text(obj.get("subscription"))
    # Invoices: the subscription's id, or (newer API versions) under parent.subscription_details.
    parent = obj.get("parent") or {}
    details = parent.get("subscription_details") or {} if isinstance(parent, dict) else {}
    return _text(obj.get("subscription")) or _text(details.get("subscription"))


def _text(value: Any) -> str | None:
    if isinstance(value, dict):  # an expanded object
        value = value.get("id")
    return value if isinstance(value, str) and value else None


def _org_hint(obj: dict[str, Any]) -> str | None:
    metadata = obj.get("metadata")
    from_metadata = metadata.get("org_id") if isinstance(metadata, dict) else None
    return _text(obj.get("client_reference_id")) or _text(from_metadata)


async def receive(
    session: AsyncSession, settings: Settings, payload: bytes, signature: str | None, now: datetime
) -> Received:
    """Verify and record one delivery; queue its processing. Raises BadRequest (400
    `invalid_signature`, `invalid_payload`) and ServiceUnavailable (503 `billing_not_configured`
    without a webhook secret)."""
    secret = settings.STRIPE_WEBHOOK_SECRET.get_secret_value() if settings.STRIPE_WEBHOOK_SECRET else ""
    if not secret:
        raise ServiceUnavailable("Stripe webhooks are not configured on this server.", code="billing_not_configured")
    try:
        event = stripe.Webhook.construct_event(payload, signature, secret, tolerance=SIGNATURE_TOLERANCE_SECONDS)
    except stripe.SignatureVerificationError:
        raise BadRequest("The Stripe-Signature header does not match the body.", code="invalid_signature") from None
    except ValueError:
        raise BadRequest("The body is not a Stripe event.", code="invalid_payload") from None
    data = event.to_dict()
    event_id, event_type = str(data.get("id") or ""), str(data.get("type") or "")
    obj = (data.get("data") or {}).get("object") or {}
    if not event_id or not event_type or not isinstance(obj, dict):
        raise BadRequest("The body is not a Stripe event.", code="invalid_payload")
    inserted = await session.execute(
        upsert(session, WebhookEvent.__table__, conflict=["id"]).returning(WebhookEvent.id),  # type: ignore[arg-type]
        [{"id": event_id, "type": event_type[:100], "received_at": now}],
    )
    if inserted.first() is None:
        log.info("billing.webhook_duplicate", event_id=event_id, event_type=event_type)
        return Received(event_id, event_type, duplicate=True, queued=False)
    subscription_id = _subscription_of(event_type, obj)
    if event_type not in HANDLED or subscription_id is None:
        log.info("billing.webhook_ignored", event_id=event_id, event_type=event_type)
        return Received(event_id, event_type, duplicate=False, queued=False)
    await tasks.enqueue(
        session,
        TASK_KIND,
        {
            "event_id": event_id,
            "type": event_type,
            "subscription_id": subscription_id,
            "customer_id": _text(obj.get("customer")),
            "org_id": _org_hint(obj),
        },
        now=now,
    )
    log.info("billing.webhook_queued", event_id=event_id, event_type=event_type)
    return Received(event_id, event_type, duplicate=False, queued=True)


def plan_for_price(settings: Settings, price: str | None) -> PlanId | None:
    """The plan a Stripe price sells here (None: a price this deployment does not sell)."""
    for plan in plans(settings):
        if price is not None and price_id(settings, plan) == price:
            return plan.id
    return None


async def _account_for(
    session: AsyncSession, subscription: StripeSubscription, hint: str | None
) -> BillingAccount | None:
    """The organization's account for the subscription's customer; made when the customer is new to
    us but the subscription names a live organization (its metadata, or the checkout's hint)."""
    account = await session.scalar(select(BillingAccount).where(BillingAccount.customer_id == subscription.customer))
    if account is not None:
        return account
    for candidate in (subscription.metadata.get("org_id"), hint):
        try:
            org_id = uuid.UUID(str(candidate))
        except ValueError:
            continue
        if await quotas.live_organization(session, org_id) is None:
            continue
        existing = await session.get(BillingAccount, org_id)
        if existing is not None:
            existing.customer_id = subscription.customer
            return existing
        created = BillingAccount(org_id=org_id, customer_id=subscription.customer, cancel_at_period_end=False)
        session.add(created)
        return created
    return None


async def apply_subscription(
    session: AsyncSession, settings: Settings, subscription: StripeSubscription, hint: str | None, now: datetime
) -> BillingAccount | None:
    """Upsert the subscription's whole state into its organization's account and put the
    organization on the plan it pays for (or back on the default when it no longer does)."""
    account = await _account_for(session, subscription, hint)
    if account is None:
        log.warning("billing.subscription_without_organization", subscription_id=subscription.id)
        return None
    await advisory_xact_lock(session, f"billing.account:{account.org_id}")
    replaced = account.subscription_id not in (None, subscription.id) and account.status in ENTITLED
    if replaced and subscription.status not in ENTITLED:
        return account  # news of an old subscription: the live one decides
    was_past_due = account.status == "past_due"
    account.subscription_id = subscription.id
    account.status = subscription.status
    account.current_period_start = subscription.current_period_start
    account.current_period_end = subscription.current_period_end
    account.cancel_at_period_end = subscription.cancel_at_period_end
    if subscription.status != "past_due":
        account.past_due_since = None
    elif not was_past_due or account.past_due_since is None:
        account.past_due_since = now
        await events.announce(
            session,
            OrgEvent(
                kind="payment_failed",
                org_id=account.org_id,
                title="A payment for the subscription failed",
                body="Update the payment method in the billing portal to keep the plan.",
                dedup_key=f"payment_failed:{subscription.id}:{now.date().isoformat()}",
                now=now,
                data={"subscription_id": subscription.id},
            ),
        )
    org = await quotas.live_organization(session, account.org_id)
    if org is None:
        return account
    paid = plan_for_price(settings, subscription.price_id) if subscription.status in ENTITLED else None
    target = paid.value if paid is not None else None
    if org.plan != target:
        before = quotas.plan_id(org, settings)
        service = BillingService(session, settings, lambda: now)
        after = (await service.assign_plan(org, target, None, None, source="stripe")).id.value
        await events.announce(
            session,
            OrgEvent(
                kind="subscription_changed",
                org_id=org.id,
                title=f"The organization is now on the {after} plan",
                body=f"Its plan changed from {before} to {after} (subscription {subscription.status}).",
                dedup_key=f"subscription_changed:{subscription.id}:{before}:{after}:{now.isoformat()}",
                now=now,
                data={"from": before, "to": after, "status": subscription.status},
            ),
        )
    await session.flush()
    return account


async def handle_stripe_event(context: TaskContext) -> None:
    """The `billing.stripe_event` task: re-read the subscription from Stripe and apply it. Stripe
    unreachable: the task fails and the queue retries it."""
    subscription_id = context.payload.get("subscription_id")
    if not isinstance(subscription_id, str) or not subscription_id:
        raise PermanentTaskError("billing.stripe_event needs a subscription_id")
    async with StripeGateway(context.settings) as api:
        try:
            subscription = await api.subscription(subscription_id)
        except StripeRejected as error:
            raise PermanentTaskError(f"Stripe refused to read {subscription_id}: {error}") from error
    async with context.database.transaction() as session:
        await apply_subscription(
            session, context.settings, subscription, context.payload.get("org_id"), context.clock()
        )
    log.info(
        "billing.subscription_applied",
        event_id=context.payload.get("event_id"),
        subscription_id=subscription.id,
        status=subscription.status,
    )
