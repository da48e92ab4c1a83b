"""Stripe's webhooks end to end, against the local Stripe stub: deliveries signed with Stripe's
scheme (valid, tampered, too old, a rotated secret, replayed), events out of order, unknown types,
a handler failure the queue retries, the past-due grace period, and the plan following the
subscription. On a database of its own with real commits; the task queue runs in the test."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from codepulse.app import create_app
from codepulse.billing import jobs as billing_jobs
from codepulse.billing.models import BillingAccount
from codepulse.config import Settings
from codepulse.db import Database
from codepulse.notifications.models import Notification
from codepulse.orgs.models import AuditEvent, Organization
from codepulse.tasks import Task, TaskRegistry, TaskStatus, Worker
from tests.auth.helpers import SignedIn, register
from tests.databases import DatabaseServer
from tests.helpers import FakeClock
from tests.orgs.helpers import create_org
from tests.stubs.stripe import StripeStub, dumps, event, sign_payload

API = "/api/v1"
HOOK = f"{API}/webhooks/stripe"
SECRET = "whsec_test_codepulse"


@dataclass
class Env:
    client: httpx.AsyncClient
    database: Database
    settings: Settings
    clock: FakeClock
    owner: SignedIn
    stripe: StripeStub
    registry: TaskRegistry

    async def run_tasks(self) -> int:
        worker = Worker(self.database, self.settings, self.registry, clock=self.clock, concurrency=1)
        return await worker.run_until_idle()

    async def deliver(
        self, payload: dict[str, Any], *, secret: str | list[str] = SECRET, timestamp: int | None = None
    ) -> httpx.Response:
        body = dumps(payload)
        headers = {"Stripe-Signature": sign_payload(body, secret, timestamp), "Content-Type": "application/json"}
        return await self.client.post(HOOK, content=body, headers=headers)

    async def billing(self) -> dict[str, Any]:
        response = await self.client.get(f"{API}/orgs/engines/billing", headers=self.owner.headers)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def account(self) -> BillingAccount | None:
        async with self.database.transaction(write=False) as session:
            org_id = await session.scalar(select(Organization.id).where(Organization.slug == "engines"))
            return await session.get(BillingAccount, org_id)

    async def paid_subscription(self, price: str = "price_pro") -> dict[str, Any]:
        """Checkout through the app, then the customer pays (in the stub); the subscription."""
        checkout = await self.client.post(
            f"{API}/orgs/engines/billing/checkout",
            headers=self.owner.headers,
            json={"plan": "pro" if price == "price_pro" else "team"},
        )
        assert checkout.status_code == 200, checkout.text
        session_id = checkout.json()["url"].rsplit("/", 1)[-1]
        subscription = self.stripe.state.complete_checkout(session_id)
        completed = event("checkout.session.completed", self.stripe.state.checkout_sessions[session_id])
        assert (await self.deliver(completed)).status_code == 200
        return subscription


@pytest.fixture
async def env(
    database_server: DatabaseServer, make_settings: Callable[..., Settings], clock: FakeClock
) -> AsyncIterator[Env]:
    async with StripeStub(prices=["price_pro", {"price_id": "price_team", "product_name": "Team"}]) as stub:
        settings = make_settings(
            DATABASE_URL=await database_server.clone("billing_webhooks"),
            STRIPE_SECRET_KEY=stub.secret_key,
            STRIPE_API_BASE=stub.url,
            STRIPE_PRICE_PRO="price_pro",
            STRIPE_PRICE_TEAM="price_team",
            STRIPE_WEBHOOK_SECRET=SECRET,
            TASK_RETRY_BACKOFF_SECONDS=0,
        )
        database = Database.from_settings(settings)
        app = create_app(settings, database=database, clock=clock)
        registry = TaskRegistry()
        billing_jobs.register_tasks(registry)
        try:
            async with (
                app.router.lifespan_context(app),
                httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as client,
            ):
                owner = await register(client, "ada")
                await create_org(client, owner, "engines")
                yield Env(client, database, settings, clock, owner, stub, registry)
        finally:
            await database.dispose()


async def _tasks(env: Env) -> list[tuple[str, str]]:
    async with env.database.transaction(write=False) as session:
        # The owner's verification mail, queued at registration, is not billing's.
        rows = await session.execute(select(Task.kind, Task.status).where(Task.kind != "mail.deliver"))
        return [(row.kind, row.status) for row in rows.all()]


async def _notifications(env: Env) -> list[tuple[str, dict[str, Any]]]:
    """The owner's notifications, by kind, without the ids in their data."""
    async with env.database.transaction(write=False) as session:
        rows = (await session.execute(select(Notification.kind, Notification.data))).all()
    return sorted((row.kind, {k: v for k, v in row.data.items() if not k.endswith("_id")}) for row in rows)


async def test_a_paid_checkout_puts_the_organization_on_its_plan(env: Env) -> None:
    subscription = await env.paid_subscription()
    assert await env.run_tasks() == 1
    billing = await env.billing()
    assert (billing["plan"], billing["assigned"], billing["status"], billing["cancel_at_period_end"]) == (
        "pro",
        True,
        "active",
        False,
    )
    account = await env.account()
    assert account is not None
    assert (account.subscription_id, account.customer_id) == (subscription["id"], subscription["customer"])
    assert account.current_period_end is not None
    assert int(account.current_period_end.timestamp()) == subscription["items"]["data"][0]["current_period_end"]
    assert billing["usage"]["seats"]["limit"] == 10
    async with env.database.transaction(write=False) as session:
        details = (
            await session.scalars(select(AuditEvent.details).where(AuditEvent.action == "billing.plan_changed"))
        ).all()
    assert [(d["from"], d["to"], d["source"]) for d in details] == [("free", "pro", "stripe")]
    assert await _notifications(env) == [("subscription_changed", {"from": "free", "to": "pro", "status": "active"})]


async def test_signatures_are_checked_against_the_raw_body(env: Env) -> None:
    payload = event("customer.created", {"id": "cus_x", "object": "customer"})
    body = dumps(payload)
    signature = sign_payload(body, SECRET)
    tampered = await env.client.post(
        HOOK, content=body.replace(b"cus_x", b"cus_y"), headers={"Stripe-Signature": signature}
    )
    assert (tampered.status_code, tampered.json()["code"]) == (400, "invalid_signature")
    old = await env.deliver(payload, timestamp=int(time.time()) - 301)
    assert (old.status_code, old.json()["code"]) == (400, "invalid_signature")
    wrong = await env.deliver(payload, secret="whsec_someone_else")
    assert (wrong.status_code, wrong.json()["code"]) == (400, "invalid_signature")
    unsigned = await env.client.post(HOOK, content=body)
    assert (unsigned.status_code, unsigned.json()["code"]) == (400, "invalid_signature")
    garbage = await env.client.post(
        HOOK, content=b"{not json", headers={"Stripe-Signature": sign_payload(b"{not json", SECRET)}
    )
    assert (garbage.status_code, garbage.json()["code"]) == (400, "invalid_payload")
    # During a secret rotation Stripe signs with both secrets: one matching v1 is enough.
    rotated = await env.deliver(payload, secret=["whsec_retired", SECRET])
    assert rotated.status_code == 200, rotated.text
    assert rotated.json() == {"received": True, "duplicate": False}


async def test_a_redelivered_event_is_acknowledged_and_ignored(env: Env) -> None:
    await env.paid_subscription()
    state = env.stripe.state
    (subscription,) = state.subscriptions.values()
    updated = event("customer.subscription.updated", subscription)
    first, again = await env.deliver(updated), await env.deliver(updated)
    assert (first.json(), again.json()) == (
        {"received": True, "duplicate": False},
        {"received": True, "duplicate": True},
    )
    assert sorted(await _tasks(env)) == [("billing.stripe_event", "queued")] * 2  # the checkout's, and this one
    unknown = await env.deliver(event("customer.created", {"id": "cus_z", "object": "customer"}))
    assert unknown.status_code == 200
    assert len(await _tasks(env)) == 2  # acknowledged, nothing queued


async def test_events_out_of_order_leave_stripes_current_state(env: Env) -> None:
    subscription = await env.paid_subscription(price="price_team")
    await env.run_tasks()
    state = env.stripe.state
    stale_update = event("customer.subscription.updated", dict(subscription))
    # The customer cancels at once: Stripe deletes the subscription; its `deleted` event arrives,
    # then a late `updated` from before (still active in its own copy).
    state.set_subscription(subscription["id"], status="canceled")
    deleted = event("customer.subscription.deleted", state.subscriptions[subscription["id"]])
    assert (await env.deliver(deleted)).status_code == 200
    assert (await env.deliver(stale_update)).status_code == 200
    assert await env.run_tasks() == 2
    billing = await env.billing()
    assert (billing["plan"], billing["assigned"], billing["status"]) == ("free", False, "canceled")

    # An `updated` delivered before its `created`: both re-read the subscription, same result.
    renewed = state.add_subscription(subscription["customer"], "price_pro", metadata={"org_id": billing_org(env)})
    assert (await env.deliver(event("customer.subscription.updated", renewed))).status_code == 200
    assert (await env.deliver(event("customer.subscription.created", renewed))).status_code == 200
    assert await env.run_tasks() == 2
    assert (await env.billing())["plan"] == "pro"


def billing_org(env: Env) -> str:
    (customer,) = env.stripe.state.customers.values()
    return str(customer["metadata"]["org_id"])


async def test_a_handler_failure_is_retried_by_the_queue(env: Env) -> None:
    await env.paid_subscription()
    env.stripe.state.fail_next(500, "api_error", should_retry=False)
    # Stripe fails the first attempt; the queue runs the task again (no backoff here).
    assert await env.run_tasks() == 2
    assert (await env.billing())["plan"] == "pro"
    async with env.database.transaction(write=False) as session:
        rows = (await session.execute(select(Task.status, Task.attempts).where(Task.kind != "mail.deliver"))).all()
    assert [(row.status, row.attempts) for row in rows] == [(TaskStatus.SUCCEEDED.value, 2)]


async def test_past_due_keeps_the_plan_for_the_grace_period(env: Env) -> None:
    subscription = await env.paid_subscription()
    await env.run_tasks()
    env.stripe.state.set_subscription(subscription["id"], status="past_due")
    invoice = {
        "id": "in_failed",
        "object": "invoice",
        "customer": subscription["customer"],
        "subscription": subscription["id"],
    }
    assert (await env.deliver(event("invoice.payment_failed", invoice))).status_code == 200
    await env.run_tasks()
    billing = await env.billing()
    assert (billing["plan"], billing["status"], billing["usage"]["seats"]["limit"]) == ("pro", "past_due", 10)
    assert [kind for kind, _ in await _notifications(env)] == ["payment_failed", "subscription_changed"]
    env.clock.advance(days=7, minutes=1)
    billing = await env.billing()
    assert (billing["plan"], billing["status"], billing["usage"]["seats"]["limit"]) == ("free", "past_due", 3)
    for n in range(2):
        invited = await env.client.post(
            f"{API}/orgs/engines/invitations", headers=env.owner.headers, json={"email": f"p{n}@example.com"}
        )
        assert invited.status_code == 201
    refused = await env.client.post(
        f"{API}/orgs/engines/invitations", headers=env.owner.headers, json={"email": "late@example.com"}
    )
    assert (refused.status_code, refused.json()["plan"]) == (402, "free")


async def test_an_organization_paying_for_a_subscription_cannot_be_deleted(env: Env) -> None:
    subscription = await env.paid_subscription()
    await env.run_tasks()
    refused = await env.client.request(
        "DELETE", f"{API}/orgs/engines", headers=env.owner.headers, json={"confirm_slug": "engines"}
    )
    assert (refused.status_code, refused.json()["code"]) == (409, "subscription_active")
    env.stripe.state.set_subscription(subscription["id"], status="canceled")
    assert (
        await env.deliver(event("customer.subscription.deleted", env.stripe.state.subscriptions[subscription["id"]]))
    ).status_code == 200
    await env.run_tasks()
    deleted = await env.client.request(
        "DELETE", f"{API}/orgs/engines", headers=env.owner.headers, json={"confirm_slug": "engines"}
    )
    assert deleted.status_code == 204
    async with env.database.transaction(write=False) as session:
        assert await session.scalar(select(func.count()).select_from(BillingAccount)) == 1  # kept with the org row


async def test_without_a_webhook_secret_deliveries_are_refused(
    make_settings: Callable[..., Settings], app_factory: Callable[[Settings], Any]
) -> None:
    app = app_factory(make_settings())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as client:
        body = dumps(event("customer.created", {"id": "cus_x", "object": "customer"}))
        refused = await client.post(HOOK, content=body, headers={"Stripe-Signature": sign_payload(body, SECRET)})
    assert (refused.status_code, refused.json()["code"]) == (503, "billing_not_configured")
