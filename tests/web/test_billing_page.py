"""An organization's billing page in the browser against the local Stripe stub: the plan and the
usage of every limit for each role, upgrade (Checkout) and manage (Portal) for owners only, the
invoices for admins and owners, CSRF and role refusals on the forms."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession

from codepulse.billing.models import BillingAccount
from codepulse.config import Settings
from tests.factories import MakeOrg, MakeUser
from tests.stubs.stripe import StripeStub
from tests.web.conftest import Clients, Team
from tests.web.helpers import csrf_of, error_page, html_of, use_session

PAGE = "/orgs/engines/billing"
FRONTEND = "http://testserver"


@pytest.fixture
async def stripe_stub() -> AsyncIterator[StripeStub]:
    async with StripeStub(prices=["price_pro", "price_team"]) as stub:
        yield stub


@pytest.fixture
async def web_app(
    stripe_stub: StripeStub, app_factory: Callable[[Settings], FastAPI], make_settings: Callable[..., Settings]
) -> AsyncIterator[FastAPI]:
    """The app, selling through the Stripe stub (the `browser` fixture's clients talk to it)."""
    settings = make_settings(
        STRIPE_SECRET_KEY=stripe_stub.secret_key,
        STRIPE_API_BASE=stripe_stub.url,
        STRIPE_PRICE_PRO="price_pro",
        STRIPE_PRICE_TEAM="price_team",
        FRONTEND_URL=FRONTEND,
    )
    app = app_factory(settings)
    async with app.router.lifespan_context(app):
        yield app


async def test_the_page_for_each_role(team: Team, browser: Clients) -> None:
    owner, admin, member, viewer, outsider = (
        await browser(team.owner), await browser(team.admin), await browser(team.member),
        await browser(team.viewer), await browser(team.outsider),
    )  # fmt: skip
    for client in (owner, admin, member, viewer):
        page = html_of(await client.get(PAGE), 200)
        assert 'data-plan="free"' in page
        for resource in ("repositories", "seats", "scans_per_month"):
            assert f'data-resource="{resource}"' in page
        assert '<a href="/orgs/engines/billing" aria-current="page">Billing</a>' in page
        # The plans above this one that Stripe sells here.
        assert 'data-plan="pro"' in page
        assert 'data-plan="team"' in page
        assert 'data-plan="enterprise"' not in page
        has_buttons = client is owner
        assert ('data-testid="upgrade-pro"' in page) is has_buttons
        assert ('action="/orgs/engines/billing/checkout"' in page) is has_buttons
        # No billing account yet: nothing to manage.
        assert 'data-testid="manage"' not in page
        # Invoices are for admins and owners (as GET .../billing/invoices).
        assert ("No invoices yet." in page) is (client in (owner, admin))
    seats = html_of(await owner.get(PAGE), 200).split('data-resource="seats"')[1].split("</tr>")[0]
    assert ">4<" in seats  # four members
    assert ">3<" in seats  # the free plan's limit

    for path in (PAGE, "/orgs/no-such-org/billing", f"/orgs/{uuid.uuid4()}/billing"):
        response = await outsider.get(path)
        error_page(response, 404)
        assert "Analytical Engines" not in response.text

    signed_out = await (await browser(None)).get(PAGE)
    assert (signed_out.status_code, signed_out.headers["location"]) == (303, "/sign-in?next=/orgs/engines/billing")


async def test_an_owner_upgrades_through_checkout_then_manages_in_the_portal(
    team: Team, browser: Clients, stripe_stub: StripeStub, session: AsyncSession
) -> None:
    owner = await browser(team.owner)
    csrf = csrf_of(html_of(await owner.get(PAGE), 200))
    response = await owner.post(f"{PAGE}/checkout", data={"csrf_token": csrf, "plan": "pro"})
    assert response.status_code == 303, response.text
    (checkout,) = stripe_stub.state.checkout_sessions.values()
    assert response.headers["location"] == checkout["url"]
    assert checkout["url"].startswith(stripe_stub.url)
    assert checkout["success_url"] == f"{FRONTEND}/orgs/engines/billing?checkout=success"
    assert checkout["cancel_url"] == f"{FRONTEND}/orgs/engines/billing?checkout=canceled"
    assert stripe_stub.state.line_items[checkout["id"]][0]["price"]["id"] == "price_pro"

    # Back from Stripe: the note, and now a billing account to manage, with its invoices.
    account = await session.get(BillingAccount, team.org.id)
    assert account is not None
    stripe_stub.state.add_invoice(
        account.customer_id, amount_due=1_000, created=int(datetime(2026, 5, 1, tzinfo=UTC).timestamp())
    )
    page = html_of(await owner.get(f"{PAGE}?checkout=success"), 200)
    assert 'data-testid="checkout-notice"' in page
    assert 'data-testid="manage"' in page
    assert "10.00 USD" in page
    assert "2026-05-01" in page
    admin_page = html_of(await (await browser(team.admin)).get(PAGE), 200)
    assert "10.00 USD" in admin_page
    assert 'data-testid="manage"' not in admin_page

    portal = await owner.post(f"{PAGE}/portal", data={"csrf_token": csrf})
    assert portal.status_code == 303, portal.text
    (session_,) = stripe_stub.state.portal_sessions.values()
    assert portal.headers["location"] == session_["url"]
    assert session_["url"].startswith(stripe_stub.url)
    assert session_["return_url"] == f"{FRONTEND}/orgs/engines/billing"


async def test_a_plan_not_sold_here_and_no_account_to_manage_are_error_pages(team: Team, browser: Clients) -> None:
    owner = await browser(team.owner)
    csrf = csrf_of(html_of(await owner.get(PAGE), 200))
    for plan in ("enterprise", "gold", ""):
        error_page(await owner.post(f"{PAGE}/checkout", data={"csrf_token": csrf, "plan": plan}), 422)
    refused = error_page(await owner.post(f"{PAGE}/portal", data={"csrf_token": csrf}), 409)
    assert "subscribe to a plan first" in refused


async def test_forms_check_csrf_then_the_organization_then_the_role(
    team: Team, browser: Clients, stripe_stub: StripeStub
) -> None:
    clients = {name: await browser(getattr(team, name)) for name in ("owner", "admin", "member", "viewer", "outsider")}
    tokens = {name: csrf_of((await client.get("/orgs")).text) for name, client in clients.items()}
    form = {"plan": "pro"}
    for path in (f"{PAGE}/checkout", f"{PAGE}/portal"):
        # No token, another session's token, a forged one: the 403 page, nothing done.
        for data in (form, {**form, "csrf_token": tokens["viewer"]}, {**form, "csrf_token": "0" * 64}):
            assert "This form has expired" in html_of(await clients["owner"].post(path, data=data), 403)
        error_page(await clients["outsider"].post(path, data={**form, "csrf_token": tokens["outsider"]}), 404)
        for name in ("admin", "member", "viewer"):
            error_page(await clients[name].post(path, data={**form, "csrf_token": tokens[name]}), 403)
    assert stripe_stub.state.requests == []  # Stripe was never called


async def test_without_stripe_the_page_says_plans_are_assigned_by_the_operator(
    make_user: MakeUser, make_org: MakeOrg, app: FastAPI
) -> None:
    owner = await make_user("olive")
    await make_org(owner, slug="engines", name="Analytical Engines")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as client:
        use_session(client, owner.token)
        page = html_of(await client.get(PAGE), 200)
        assert 'data-testid="not-selling"' in page
        assert "upgrade-" not in page
        assert "Invoices" not in page
        csrf = csrf_of(page)
        # No Stripe: the 503 page (POST .../checkout answers 503 billing_not_configured).
        error_page(await client.post(f"{PAGE}/checkout", data={"csrf_token": csrf, "plan": "pro"}), 503)
