"""HTTP endpoints of billing: the plans (public), an organization's plan and usage (members), and
the superusers' plan assignment."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Query, Request

from codepulse.auth.dependencies import Superuser, device_of
from codepulse.billing import webhooks
from codepulse.billing.payments import Payments
from codepulse.billing.plans import Plan, plans, price_id
from codepulse.billing.schemas import (
    BillingOut,
    CheckoutIn,
    InvoiceOut,
    PaymentStateOut,
    PlanAssignment,
    PlanOut,
    PlansOut,
    RedirectOut,
    UsageOut,
    WebhookReceived,
)
from codepulse.billing.service import BillingService, OrgBilling
from codepulse.config import Settings
from codepulse.db import DbSession
from codepulse.errors import NotFound
from codepulse.orgs.dependencies import OrgAdmin, OrgOwner, OrgViewer
from codepulse.orgs.service import OrgService, Role
from codepulse.pagination import Page
from codepulse.routing import DomainRouter

router = DomainRouter(tags=["billing"])


async def billing_service(request: Request, session: DbSession) -> BillingService:
    return BillingService(session, request.app.state.settings, request.app.state.clock)


BillingServiceDep = Annotated[BillingService, Depends(billing_service)]


async def payments(request: Request, session: DbSession) -> Payments:
    return Payments(session, request.app.state.settings)


PaymentsDep = Annotated[Payments, Depends(payments)]


def _plan_out(plan: Plan, settings: Settings) -> PlanOut:
    return PlanOut(
        id=plan.id,
        name=plan.name,
        description=plan.description,
        limits=dict(plan.limits),
        stripe_price_id=price_id(settings, plan),
    )


def _billing_out(billing: OrgBilling, *, payment: bool) -> BillingOut:
    now = billing.standing
    account = now.account if payment else None
    return BillingOut(
        plan=now.plan.id,
        plan_name=now.plan.name,
        assigned=billing.assigned,
        status=now.status,
        current_period_start=now.period_start,
        current_period_end=now.period_end,
        cancel_at_period_end=now.cancel_at_period_end,
        usage={
            line.resource: UsageOut(
                used=line.used,
                limit=line.limit,
                remaining=None if line.limit is None else max(line.limit - line.used, 0),
            )
            for line in billing.usage
        },
        payment=None
        if account is None
        else PaymentStateOut(
            customer_id=account.customer_id,
            subscription_id=account.subscription_id,
            status=account.status,
            past_due_since=account.past_due_since,
        ),
    )


@router.get("/billing/plans", summary="The plans, their limits and prices (public)")
async def list_plans(request: Request) -> PlansOut:
    settings: Settings = request.app.state.settings
    return PlansOut(items=[_plan_out(plan, settings) for plan in plans(settings)], default_plan=settings.DEFAULT_PLAN)


@router.get("/orgs/{org}/billing", summary="The organization's plan and its usage against every limit")
async def get_billing(access: OrgViewer, service: BillingServiceDep) -> BillingOut:
    """Any member; admins and owners also see the Stripe customer and payment state (`payment`).
    Scans are counted per subscription period, or per calendar month (UTC) without one."""
    return _billing_out(await service.overview(access.org), payment=access.role.at_least(Role.ADMIN))


@router.put("/admin/orgs/{org_ref}/plan", summary="Put an organization on a plan (superuser)")
async def assign_plan(
    org_ref: Annotated[str, Path(description="The organization's id or slug.", min_length=1, max_length=60)],
    body: PlanAssignment,
    admin: Superuser,
    service: BillingServiceDep,
    request: Request,
) -> BillingOut:
    """E.g. `enterprise` (unlimited), which is not sold through Stripe; null puts it back on the
    deployment's default plan. What the organization has beyond the new limits stays, additions
    beyond them are refused. Audited as `billing.plan_changed` in the organization's log.
    404 `organization_not_found`."""
    target = await OrgService(service.session, service.settings, service.clock).resolve(org_ref)
    if target is None:
        raise NotFound("organization")
    await service.assign_plan(
        target, body.plan.value if body.plan else None, admin, device_of(request).ip, source="superuser"
    )
    return _billing_out(await service.overview(target), payment=True)


@router.post("/orgs/{org}/billing/checkout", summary="Subscribe to a plan through Stripe Checkout (owner)")
async def checkout(body: CheckoutIn, access: OrgOwner, payments: PaymentsDep) -> RedirectOut:
    """The URL of a Stripe Checkout page for the plan (subscription mode); Stripe sends the owner
    back to the dashboard's billing page. The plan changes when Stripe confirms the payment.
    409 `subscription_active` while the organization pays for a subscription (change it in the
    portal); 422 `plan_not_for_sale` for a plan without a Stripe price here; 503
    `billing_not_configured` without Stripe."""
    return RedirectOut(url=await payments.checkout(access, body.plan))


@router.post("/orgs/{org}/billing/portal", summary="Open Stripe's billing portal (owner)")
async def portal(access: OrgOwner, payments: PaymentsDep) -> RedirectOut:
    """The URL of a Stripe Customer Portal session: payment methods, plan changes, cancellation,
    invoices. 409 `no_billing_account` before the first checkout; 503 `billing_not_configured`
    without Stripe."""
    return RedirectOut(url=await payments.portal(access.org))


@router.get("/orgs/{org}/billing/invoices", summary="The organization's invoices (admin+)")
async def invoices(
    access: OrgAdmin,
    payments: PaymentsDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(pattern=r"^in_[A-Za-z0-9]{1,250}$", description="next_cursor")] = None,
) -> Page[InvoiceOut]:
    """Newest first, from Stripe. 503 `billing_not_configured` without Stripe."""
    page = await payments.invoices(access.org, limit=limit, cursor=cursor)
    items = [InvoiceOut.model_validate(invoice, from_attributes=True) for invoice in page.items]
    return Page(items=items, next_cursor=items[-1].id if page.has_more and items else None)


@router.post(
    "/webhooks/stripe",
    summary="Stripe's events (signed by Stripe; no bearer token)",
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "A Stripe event, verified against its `Stripe-Signature` header.",
            "content": {"application/json": {"schema": {"type": "object"}}},
        },
        "parameters": [{"name": "Stripe-Signature", "in": "header", "required": True, "schema": {"type": "string"}}],
    },
)
async def stripe_webhook(request: Request, session: DbSession) -> WebhookReceived:
    """The signature is checked against the raw body (400 `invalid_signature`, or
    `invalid_payload`). The event id is stored first: a redelivery is acknowledged (`duplicate`)
    and ignored. The events billing follows are queued and applied by a task that re-reads the
    subscription from Stripe; the others are acknowledged and ignored. 503
    `billing_not_configured` without `STRIPE_WEBHOOK_SECRET`."""
    payload = await request.body()
    signature = request.headers.get("stripe-signature")
    received = await webhooks.receive(
        session, request.app.state.settings, payload, signature, request.app.state.clock()
    )
    return WebhookReceived(received=True, duplicate=received.duplicate)
