"""HTTP endpoints of billing: the plans (public), an organization's plan and usage (members), and
the superusers' plan assignment."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request

from codepulse.auth.dependencies import Superuser, device_of
from codepulse.billing.plans import Plan, plans, price_id
from codepulse.billing.schemas import BillingOut, PlanAssignment, PlanOut, PlansOut, UsageOut
from codepulse.billing.service import BillingService, OrgBilling
from codepulse.config import Settings
from codepulse.db import DbSession
from codepulse.errors import NotFound
from codepulse.orgs.dependencies import OrgViewer
from codepulse.orgs.service import OrgService
from codepulse.routing import DomainRouter

router = DomainRouter(tags=["billing"])


async def billing_service(request: Request, session: DbSession) -> BillingService:
    return BillingService(session, request.app.state.settings, request.app.state.clock)


BillingServiceDep = Annotated[BillingService, Depends(billing_service)]


def _plan_out(plan: Plan, settings: Settings) -> PlanOut:
    return PlanOut(
        id=plan.id,
        name=plan.name,
        description=plan.description,
        limits=dict(plan.limits),
        stripe_price_id=price_id(settings, plan),
    )


def _billing_out(billing: OrgBilling) -> BillingOut:
    return BillingOut(
        plan=billing.plan.id,
        plan_name=billing.plan.name,
        assigned=billing.assigned,
        status="active",
        current_period_start=billing.period_start,
        current_period_end=billing.period_end,
        cancel_at_period_end=False,
        usage={
            line.resource: UsageOut(
                used=line.used,
                limit=line.limit,
                remaining=None if line.limit is None else max(line.limit - line.used, 0),
            )
            for line in billing.usage
        },
    )


@router.get("/billing/plans", summary="The plans, their limits and prices (public)")
async def list_plans(request: Request) -> PlansOut:
    settings: Settings = request.app.state.settings
    return PlansOut(items=[_plan_out(plan, settings) for plan in plans(settings)], default_plan=settings.DEFAULT_PLAN)


@router.get("/orgs/{org}/billing", summary="The organization's plan and its usage against every limit")
async def get_billing(access: OrgViewer, service: BillingServiceDep) -> BillingOut:
    """Any member. Scans are counted per calendar month (UTC)."""
    return _billing_out(await service.overview(access.org))


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
    await service.assign_plan(target, body.plan.value if body.plan else None, admin, device_of(request).ip)
    return _billing_out(await service.overview(target))
