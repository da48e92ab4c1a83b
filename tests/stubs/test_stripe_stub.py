"""The Stripe stub speaks Stripe's protocol: checked with plain httpx, no Stripe client."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from tests.stubs.stripe import (
    API_VERSION,
    StripeStub,
    decode_form,
    dumps,
    event,
    sign_payload,
)

KEY = "sk_test_stub_selftest_0123456789"
PRICE = "price_pro_monthly"


@pytest.fixture(scope="module")
def stripe_server() -> Iterator[StripeStub]:
    with StripeStub(KEY, prices=[PRICE, {"price_id": "price_team", "unit_amount": 4_900}]) as stub:
        yield stub


@pytest.fixture
def stripe(stripe_server: StripeStub) -> StripeStub:
    stripe_server.reset()
    return stripe_server


@pytest.fixture
async def api(stripe: StripeStub) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {KEY}", "Stripe-Version": API_VERSION}
    async with httpx.AsyncClient(base_url=stripe.url, headers=headers) as client:
        yield client


async def _checkout(api: httpx.AsyncClient, customer: str, **extra: str) -> dict[str, Any]:
    form = {
        "mode": "subscription",
        "customer": customer,
        "line_items[0][price]": PRICE,
        "line_items[0][quantity]": "1",
        "success_url": "https://app.example/billing?session={CHECKOUT_SESSION_ID}",
        "cancel_url": "https://app.example/billing",
        "subscription_data[metadata][org_id]": "42",
    }
    response = await api.post("/v1/checkout/sessions", data=form | extra)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_decode_form_bracket_notation() -> None:
    pairs = [
        ("metadata[org_id]", "42"),
        ("line_items[0][price]", "price_a"),
        ("line_items[0][quantity]", "1"),
        ("line_items[1][price]", "price_b"),
        ("subscription_data[metadata][org_id]", "42"),
        ("expand[]", "line_items"),
        ("expand[]", "customer"),
        ("mode", "subscription"),
    ]
    assert decode_form(pairs) == {
        "metadata": {"org_id": "42"},
        "line_items": [{"price": "price_a", "quantity": "1"}, {"price": "price_b"}],
        "subscription_data": {"metadata": {"org_id": "42"}},
        "expand": ["line_items", "customer"],
        "mode": "subscription",
    }


async def test_missing_or_wrong_key_is_401(stripe: StripeStub) -> None:
    async with httpx.AsyncClient(base_url=stripe.url) as client:
        missing = await client.get("/v1/customers/cus_x", headers={"Stripe-Version": "2024-06-20"})
        wrong = await client.get("/v1/customers/cus_x", headers={"Authorization": "Bearer sk_test_wrong_key_1234"})
    assert missing.status_code == wrong.status_code == 401
    assert missing.json()["error"]["type"] == "invalid_request_error"
    error = wrong.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["message"].startswith("Invalid API Key provided: sk_test_")
    assert error["message"].endswith("1234")
    assert "wrong" not in error["message"]
    assert [r.stripe_version for r in stripe.state.requests] == ["2024-06-20", None]


async def test_customer_and_checkout_decode_the_form(stripe: StripeStub, api: httpx.AsyncClient) -> None:
    created = await api.post(
        "/v1/customers",
        data={"email": "ada@example.com", "name": "Ada", "metadata[org_id]": "42"},
        headers={"Idempotency-Key": "idem-1"},
    )
    customer = created.json()
    assert customer["id"].startswith("cus_")
    assert customer["object"] == "customer"
    assert customer["metadata"] == {"org_id": "42"}
    assert isinstance(customer["created"], int)
    assert (await api.get(f"/v1/customers/{customer['id']}")).json() == customer

    session = await _checkout(api, customer["id"], **{"expand[]": "line_items", "client_reference_id": "org_42"})
    assert session["id"].startswith("cs_test_")
    assert session["object"] == "checkout.session"
    assert session["url"] == f"{stripe.url}/c/pay/{session['id']}"
    assert (session["status"], session["subscription"], session["client_reference_id"]) == ("open", None, "org_42")
    [line] = session["line_items"]["data"]
    assert (line["price"]["id"], line["quantity"]) == (PRICE, 1)
    assert "line_items" not in (await api.get(f"/v1/checkout/sessions/{session['id']}")).json()

    [recorded] = stripe.state.requests_to("POST", "/v1/checkout/sessions")
    assert recorded.params["subscription_data"] == {"metadata": {"org_id": "42"}}
    assert recorded.stripe_version == API_VERSION
    assert stripe.state.requests_to("POST", "/v1/customers")[0].idempotency_key == "idem-1"


async def test_complete_checkout_gives_a_subscription(stripe: StripeStub, api: httpx.AsyncClient) -> None:
    customer = stripe.state.add_customer(email="ada@example.com")
    session = await _checkout(api, customer["id"])
    subscription = stripe.state.complete_checkout(session["id"])

    got = (await api.get(f"/v1/subscriptions/{subscription['id']}")).json()
    assert got["id"].startswith("sub_")
    assert got["object"] == "subscription"
    assert (got["customer"], got["status"], got["cancel_at_period_end"]) == (customer["id"], "active", False)
    assert got["metadata"] == {"org_id": "42"}
    [item] = got["items"]["data"]
    assert item["id"].startswith("si_")
    assert item["object"] == "subscription_item"
    assert item["price"]["id"] == PRICE
    assert item["price"]["recurring"]["interval"] == "month"
    assert item["current_period_start"] == got["current_period_start"] < got["current_period_end"]
    assert item["current_period_end"] == got["current_period_end"]
    assert got["latest_invoice"].startswith("in_")
    done = (await api.get(f"/v1/checkout/sessions/{session['id']}")).json()
    assert (done["status"], done["subscription"]) == ("complete", subscription["id"])

    stripe.state.set_subscription(subscription["id"], status="past_due", cancel_at_period_end=True, price="price_team")
    listed = (await api.get("/v1/subscriptions", params={"customer": customer["id"]})).json()
    assert listed["object"] == "list"
    assert listed["has_more"] is False
    assert listed["url"] == "/v1/subscriptions"
    [changed] = listed["data"]
    assert (changed["status"], changed["cancel_at_period_end"]) == ("past_due", True)
    assert changed["items"]["data"][0]["price"]["unit_amount"] == 4_900


async def test_invoices_paginate_newest_first(stripe: StripeStub, api: httpx.AsyncClient) -> None:
    customer = stripe.state.add_customer()["id"]
    ids = [stripe.state.add_invoice(customer, created=1_700_000_000 + n)["id"] for n in range(5)]
    stripe.state.add_invoice(stripe.state.add_customer()["id"])  # someone else's
    newest_first = ids[::-1]

    first = (await api.get("/v1/invoices", params={"customer": customer, "limit": 2})).json()
    assert [i["id"] for i in first["data"]] == newest_first[:2]
    assert first["has_more"] is True
    cursor = first["data"][-1]["id"]
    second = (await api.get("/v1/invoices", params={"customer": customer, "limit": 2, "starting_after": cursor})).json()
    assert [i["id"] for i in second["data"]] == newest_first[2:4]
    assert second["has_more"] is True
    last = (await api.get("/v1/invoices", params={"customer": customer, "starting_after": newest_first[3]})).json()
    assert [i["id"] for i in last["data"]] == newest_first[4:]
    assert last["has_more"] is False
    invoice = last["data"][0]
    assert invoice["object"] == "invoice"
    assert invoice["status"] == "paid"
    assert invoice["number"].endswith("-0001")
    assert invoice["hosted_invoice_url"].startswith(stripe.url)

    too_many = await api.get("/v1/invoices", params={"limit": 101})
    assert too_many.status_code == 400
    assert too_many.json()["error"]["param"] == "limit"


async def test_error_shapes(stripe: StripeStub, api: httpx.AsyncClient) -> None:
    missing = await api.get("/v1/customers/cus_nope")
    assert missing.status_code == 404
    assert missing.json()["error"] | {"doc_url": None} == {
        "type": "invalid_request_error",
        "code": "resource_missing",
        "message": "No such customer: 'cus_nope'",
        "param": "id",
        "doc_url": None,
    }
    customer = stripe.state.add_customer()["id"]
    form = {"mode": "subscription", "customer": customer, "line_items[0][price]": "price_nope"}
    no_url = await api.post("/v1/checkout/sessions", data=form)
    assert no_url.status_code == 400
    assert no_url.json()["error"]["code"] == "parameter_missing"
    assert no_url.json()["error"]["param"] == "success_url"
    urls = {"success_url": "https://a.example/ok", "cancel_url": "https://a.example/no"}
    bad = await api.post("/v1/checkout/sessions", data=form | urls)
    assert bad.status_code == 400
    assert (bad.json()["error"]["code"], bad.json()["error"]["param"]) == ("resource_missing", "line_items[0][price]")
    portal = await api.post("/v1/billing_portal/sessions", data={"customer": "cus_nope"})
    assert portal.status_code == 404
    assert portal.json()["error"]["param"] == "customer"

    stripe.state.fail_next(429, "rate_limit_error", "Too many requests", should_retry=True)
    limited = await api.get(f"/v1/customers/{customer}")
    assert limited.status_code == 429
    assert limited.json()["error"]["type"] == "rate_limit_error"
    assert limited.headers["stripe-should-retry"] == "true"
    assert (await api.get(f"/v1/customers/{customer}")).status_code == 200


async def test_idempotent_post_is_replayed(stripe: StripeStub, api: httpx.AsyncClient) -> None:
    customer = stripe.state.add_customer()["id"]
    form = {"customer": customer, "return_url": "https://app.example/billing"}
    first = await api.post("/v1/billing_portal/sessions", data=form, headers={"Idempotency-Key": "k1"})
    again = await api.post("/v1/billing_portal/sessions", data=form, headers={"Idempotency-Key": "k1"})
    assert first.json()["id"].startswith("bps_")
    assert again.json() == first.json()
    assert first.json()["url"].startswith(stripe.url)
    assert again.headers["idempotent-replayed"] == "true"
    assert len(stripe.state.portal_sessions) == 1
    other = await api.post(
        "/v1/billing_portal/sessions", data={"customer": customer}, headers={"Idempotency-Key": "k1"}
    )
    assert other.status_code == 400
    assert other.json()["error"]["type"] == "idempotency_error"


def test_sync_clients_reach_it(stripe: StripeStub) -> None:
    # The stub runs in its own thread: a blocking client in the test thread does not deadlock it.
    with httpx.Client(base_url=stripe.url, headers={"Authorization": f"Bearer {KEY}"}) as client:
        response = client.get(f"/v1/prices/{PRICE}")
    assert response.status_code == 200
    assert response.json()["unit_amount"] == 1_000
    assert response.headers["request-id"].startswith("req_")
    assert response.headers["stripe-version"] == API_VERSION


def test_sign_payload_matches_stripes_scheme() -> None:
    body = dumps(event("customer.subscription.updated", {"id": "sub_1", "object": "subscription"}))
    header = sign_payload(body, "whsec_test", timestamp=1_700_000_000)
    expected = hmac.new(b"whsec_test", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={expected}"

    rotated = sign_payload(body, ["whsec_old", "whsec_new"], timestamp=1_700_000_000)
    parts = rotated.split(",")
    assert parts[0] == "t=1700000000"
    assert len(parts) == 3
    assert parts[2] == "v1=" + hmac.new(b"whsec_new", b"1700000000." + body, hashlib.sha256).hexdigest()

    envelope = json.loads(body)
    assert envelope["id"].startswith("evt_")
    assert envelope["object"] == "event"
    assert envelope["data"]["object"]["id"] == "sub_1"
    assert envelope["livemode"] is False
    assert envelope["request"] == {"id": None, "idempotency_key": None}
    assert envelope["pending_webhooks"] == 1
