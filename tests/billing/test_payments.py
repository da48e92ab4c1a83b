"""Checkout, the Customer Portal and invoices against a local Stripe stub speaking Stripe's REST
protocol (tests/stubs/stripe.py), through the SDK: one customer per organization, the session's
parameters, the pinned API version, refusals, Stripe's failures as problems."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession

from codepulse.billing.models import BillingAccount
from codepulse.config import Settings
from codepulse.integrations.stripe import STRIPE_API_VERSION
from codepulse.orgs.models import Organization
from codepulse.usage.service import record_event
from tests.factories import Account, MakeMember, MakeOrg, MakeUser
from tests.helpers import FakeClock
from tests.stubs.stripe import StripeStub

API = "/api/v1"
FRONTEND = "https://app.codepulse.test"


@pytest.fixture
async def stripe_stub() -> AsyncIterator[StripeStub]:
    async with StripeStub(prices=["price_pro"]) as stub:
        yield stub


@pytest.fixture
async def client(
    stripe_stub: StripeStub, app_factory: Callable[[Settings], FastAPI], make_settings: Callable[..., Settings]
) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(
        STRIPE_SECRET_KEY=stripe_stub.secret_key,
        STRIPE_API_BASE=stripe_stub.url,
        STRIPE_PRICE_PRO="price_pro",
        FRONTEND_URL=FRONTEND,
    )
    app = app_factory(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as client,
    ):
        yield client


@pytest.fixture
async def owner(make_user: MakeUser) -> Account:
    return await make_user("ada")


@pytest.fixture
async def engines(owner: Account, make_org: MakeOrg) -> Organization:
    return await make_org(owner, slug="engines", name="Engines")


def _code(response: httpx.Response) -> tuple[int, str]:
    assert response.headers["content-type"] == "application/problem+json", response.text
    return response.status_code, response.json()["code"]


async def _checkout(client: httpx.AsyncClient, user: Account, plan: str = "pro") -> httpx.Response:
    return await client.post(f"{API}/orgs/engines/billing/checkout", headers=user.headers, json={"plan": plan})


async def test_checkout_makes_one_customer_per_organization_and_a_subscription_session(
    client: httpx.AsyncClient, owner: Account, engines: Organization, stripe_stub: StripeStub, session: AsyncSession
) -> None:
    first = await _checkout(client, owner)
    assert first.status_code == 200, first.text
    second = await _checkout(client, owner)
    assert second.status_code == 200, second.text
    state = stripe_stub.state
    assert first.json()["url"].startswith(stripe_stub.url)
    assert first.json()["url"] != second.json()["url"]

    owner_org_id = engines.id
    account = await session.get(BillingAccount, owner_org_id)
    assert account is not None
    assert len(state.customers) == 1
    customer = state.customers[account.customer_id]
    assert (customer["name"], customer["email"], customer["metadata"]) == (
        "Engines",
        owner.model.email,
        {"org_id": str(owner_org_id)},
    )
    sessions = [request.params for request in state.requests_to("POST", "/v1/checkout/sessions")]
    assert len(sessions) == 2
    assert sessions[0] | {"line_items": None} == {
        "mode": "subscription",
        "customer": account.customer_id,
        "client_reference_id": str(owner_org_id),
        "line_items": None,
        "success_url": f"{FRONTEND}/orgs/engines/billing?checkout=success",
        "cancel_url": f"{FRONTEND}/orgs/engines/billing?checkout=canceled",
        "metadata": {"org_id": str(owner_org_id)},
        "subscription_data": {"metadata": {"org_id": str(owner_org_id)}},
    }
    assert sessions[0]["line_items"] == [{"price": "price_pro", "quantity": "1"}]
    # Every call names the API version the code reads.
    assert {request.stripe_version for request in state.requests} == {STRIPE_API_VERSION}
    assert [request.idempotency_key for request in state.requests_to("POST", "/v1/customers")] == [
        f"customer-{owner_org_id}"
    ]


async def test_a_paying_organization_changes_plans_in_the_portal(
    client: httpx.AsyncClient,
    owner: Account,
    engines: Organization,
    stripe_stub: StripeStub,
    session: AsyncSession,
    make_member: MakeMember,
) -> None:
    none_yet = await client.post(f"{API}/orgs/engines/billing/portal", headers=owner.headers)
    assert _code(none_yet) == (409, "no_billing_account")
    assert (await _checkout(client, owner)).status_code == 200
    account = await session.get(BillingAccount, engines.id)
    assert account is not None
    account.subscription_id, account.status = "sub_paid", "active"
    await session.flush()

    assert _code(await _checkout(client, owner)) == (409, "subscription_active")
    portal = await client.post(f"{API}/orgs/engines/billing/portal", headers=owner.headers)
    assert portal.status_code == 200, portal.text
    assert portal.json()["url"].startswith(stripe_stub.url)
    (request,) = stripe_stub.state.requests_to("POST", "/v1/billing_portal/sessions")
    assert request.params == {"customer": account.customer_id, "return_url": f"{FRONTEND}/orgs/engines/billing"}

    owner_view = (await client.get(f"{API}/orgs/engines/billing", headers=owner.headers)).json()
    assert owner_view["payment"] == {
        "customer_id": account.customer_id,
        "subscription_id": "sub_paid",
        "status": "active",
        "past_due_since": None,
    }
    member = await make_member(engines, "member", "mo")
    assert (await client.get(f"{API}/orgs/engines/billing", headers=member.headers)).json()["payment"] is None

    account.status = "canceled"  # a canceled subscription: a new checkout is allowed again
    await session.flush()
    assert (await _checkout(client, owner)).status_code == 200


async def test_only_plans_with_a_price_here_are_for_sale(
    client: httpx.AsyncClient, owner: Account, engines: Organization
) -> None:
    for plan in ("team", "enterprise", "free"):
        refused = await _checkout(client, owner, plan)
        assert _code(refused) == (422, "validation_failed"), plan
        assert [(e["field"], e["code"]) for e in refused.json()["errors"]] == [("body.plan", "plan_not_for_sale")]


async def test_invoices_newest_first_in_pages_for_admins(
    client: httpx.AsyncClient, owner: Account, engines: Organization, stripe_stub: StripeStub, make_member: MakeMember
) -> None:
    url = f"{API}/orgs/engines/billing/invoices"
    empty = await client.get(url, headers=owner.headers)
    assert empty.json() == {"items": [], "next_cursor": None}
    checkout = await _checkout(client, owner)
    session_id = checkout.json()["url"].rsplit("/", 1)[-1]
    state = stripe_stub.state
    subscription = state.complete_checkout(session_id)
    for created in (1_780_000_000, 1_790_000_000):
        state.add_invoice(subscription["customer"], subscription=subscription["id"], created=created, amount_due=1_000)

    first = await client.get(url, headers=owner.headers, params={"limit": 2})
    assert first.status_code == 200, first.text
    page = first.json()
    assert len(page["items"]) == 2
    assert page["next_cursor"] == page["items"][-1]["id"]
    rest = (await client.get(url, headers=owner.headers, params={"limit": 2, "cursor": page["next_cursor"]})).json()
    assert rest["next_cursor"] is None
    invoices = page["items"] + rest["items"]
    assert len(invoices) == 3
    assert [invoice["created"] for invoice in invoices] == sorted((i["created"] for i in invoices), reverse=True)
    assert {(i["status"], i["amount_due"], i["currency"]) for i in invoices} == {("paid", 1_000, "usd")}
    assert all(invoice["hosted_invoice_url"] for invoice in invoices)

    member = await make_member(engines, "member", "mo")
    assert _code(await client.get(url, headers=member.headers)) == (403, "insufficient_role")
    bad_cursor = await client.get(url, headers=owner.headers, params={"cursor": "../x"})
    assert _code(bad_cursor) == (422, "validation_failed")


async def test_stripe_failures_are_problems_and_nothing_is_kept(
    client: httpx.AsyncClient, owner: Account, engines: Organization, stripe_stub: StripeStub, session: AsyncSession
) -> None:
    stripe_stub.state.fail_next(500, "api_error", should_retry=False)
    down = await _checkout(client, owner)
    assert _code(down) == (503, "stripe_unavailable")
    assert down.headers["retry-after"] == "30"
    assert await session.get(BillingAccount, engines.id) is None  # nothing half-made

    stripe_stub.state.fail_next(400, "invalid_request_error", "No such price: 'price_pro'", code="resource_missing")
    refused = await _checkout(client, owner)
    assert _code(refused) == (502, "stripe_rejected")
    # A later attempt works (and makes the customer then).
    assert (await _checkout(client, owner)).status_code == 200


async def test_with_a_subscription_scans_are_counted_in_its_period(
    client: httpx.AsyncClient, owner: Account, engines: Organization, session: AsyncSession, clock: FakeClock
) -> None:
    clock.now = datetime(2026, 12, 20, 12, tzinfo=UTC)
    period_start, period_end = datetime(2026, 12, 15, tzinfo=UTC), datetime(2027, 1, 15, tzinfo=UTC)
    session.add(
        BillingAccount(
            org_id=engines.id,
            customer_id="cus_period",
            subscription_id="sub_period",
            status="active",
            current_period_start=period_start,
            current_period_end=period_end,
            cancel_at_period_end=True,
        )
    )
    for key, day in (("before", 10), ("inside", 16), ("today", 20)):
        await record_event(
            session, engines.id, "scan.run", idempotency_key=key, occurred_at=datetime(2026, 12, day, tzinfo=UTC)
        )
    await session.flush()
    billing = (await client.get(f"{API}/orgs/engines/billing", headers=owner.headers)).json()
    assert (billing["current_period_start"], billing["current_period_end"]) == (
        "2026-12-15T00:00:00Z",
        "2027-01-15T00:00:00Z",
    )
    assert (billing["status"], billing["cancel_at_period_end"]) == ("active", True)
    assert billing["usage"]["scans_per_month"]["used"] == 2  # the 10th is in the month, not the period
