"""An organization's billing in the browser: its plan, its use of every limit, the plans sold
here, and — for owners — Stripe Checkout (upgrade) and the Customer Portal (manage), through the
billing slice's services as `/api/v1/orgs/{org}/billing` does, with the same role rules.

Any member sees the plan and usage; admins and owners the invoices too (`GET .../invoices` is
admin+); only owners see, and may post, the upgrade and manage forms (`POST .../checkout` and
`.../portal` are owner-only): the forms check the CSRF token first, then the organization (an
outsider gets the 404 page, a lower role the 403 page), then send the browser to Stripe's page.
Stripe sends it back to this page (`FRONTEND_URL/orgs/{slug}/billing?checkout=success|canceled`).
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import Query, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from codepulse.billing.payments import Payments
from codepulse.billing.plans import PlanId, plans, price_id
from codepulse.billing.service import BillingService
from codepulse.config import Settings
from codepulse.errors import DomainError, FieldError, ValidationFailed
from codepulse.integrations.stripe import configured as stripe_configured
from codepulse.orgs.dependencies import OrgServiceDep
from codepulse.orgs.service import OrgAccess, Role
from codepulse.routing import DomainRouter
from codepulse.web.forms import MAX_FORM_BYTES, read_form
from codepulse.web.orgs import ORGS_PATH, OrgForm, OrgPage, org_context
from codepulse.web.rendering import render

router = DomainRouter(tags=["web"])

BILLING_PATH = ORGS_PATH + "/{slug}/billing"
INVOICES_SHOWN = 20

RESOURCE_NAMES = {
    "repositories": "Repositories",
    "seats": "Seats (members and pending invitations)",
    "scans_per_month": "Scans this period",
}
CHECKOUT_NOTICES = {
    "success": "Thank you: the new plan applies as soon as Stripe confirms the payment.",
    "canceled": "Checkout canceled: nothing was charged.",
}


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


@router.get(BILLING_PATH, include_in_schema=False, response_class=HTMLResponse)
async def billing_page(
    request: Request,
    access: OrgPage,
    orgs: OrgServiceDep,
    checkout: Literal["success", "canceled"] | None = Query(None),
) -> HTMLResponse:
    settings = _settings(request)
    billing = await BillingService(orgs.session, settings, request.app.state.clock).overview(access.org)
    selling = stripe_configured(settings)
    current = billing.standing.plan
    ordered = plans(settings)
    above = ordered[[plan.id for plan in ordered].index(current.id) + 1 :]
    for_sale = [plan for plan in above if price_id(settings, plan)]
    context: dict[str, Any] = {
        "billing": billing,
        "resource_names": RESOURCE_NAMES,
        "selling": selling,
        "for_sale": for_sale if selling else [],
        "has_account": billing.standing.account is not None,
        "checkout_notice": CHECKOUT_NOTICES.get(checkout or ""),
        "invoices": None,
        "invoices_error": None,
    }
    if selling and access.role.at_least(Role.ADMIN):
        context.update(await _invoices(Payments(orgs.session, settings), access))
    layout = await org_context(orgs, access, "billing")
    return render(request, "org_billing.html", **layout, **context)


async def _invoices(payments: Payments, access: OrgAccess) -> dict[str, Any]:
    """The newest invoices, or why they cannot be shown now (Stripe unreachable or refusing)."""
    try:
        page = await payments.invoices(access.org, limit=INVOICES_SHOWN, cursor=None)
    except DomainError as error:
        return {"invoices": None, "invoices_error": error.detail or error.title}
    return {"invoices": page.items, "invoices_error": None}


@router.post(
    BILLING_PATH + "/checkout", include_in_schema=False, response_class=HTMLResponse, max_body_size=MAX_FORM_BYTES
)
async def checkout(request: Request, access: OrgForm, orgs: OrgServiceDep) -> Response:
    access.require(Role.OWNER)  # as POST /orgs/{org}/billing/checkout
    form = await read_form(request)
    try:
        plan = PlanId(form.get("plan", ""))
    except ValueError:
        refused = FieldError(field="plan", message="Choose a plan sold here.", code="invalid_plan")
        raise ValidationFailed([refused]) from None
    url = await Payments(orgs.session, _settings(request)).checkout(access, plan)
    return RedirectResponse(url, status_code=status.HTTP_303_SEE_OTHER)


@router.post(
    BILLING_PATH + "/portal", include_in_schema=False, response_class=HTMLResponse, max_body_size=MAX_FORM_BYTES
)
async def portal(request: Request, access: OrgForm, orgs: OrgServiceDep) -> Response:
    access.require(Role.OWNER)  # as POST /orgs/{org}/billing/portal
    url = await Payments(orgs.session, _settings(request)).portal(access.org)
    return RedirectResponse(url, status_code=status.HTTP_303_SEE_OTHER)
