"""Stripe, through its official SDK's async client, with the API version pinned.

Only what billing needs: customers, Checkout Sessions (subscription mode), Customer Portal
sessions, subscriptions and invoices, read into small dataclasses so the rest of the code never
touches the SDK's objects. `STRIPE_API_BASE` points the client at a local stub in tests.

Errors become two exceptions: `StripeUnavailable` (network, timeouts, Stripe's 5xx and rate
limits: try again later) and `StripeRejected` (Stripe refused the request: a bug or a
misconfiguration, e.g. an unknown price). The SDK retries idempotent failures itself.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import stripe
from stripe.params import CustomerCreateParams, InvoiceListParams
from stripe.params.checkout import SessionCreateParams

from codepulse.config import Settings

# The shapes read below are this version's (subscription periods live on the items).
STRIPE_API_VERSION = "2026-10-28.endive"
NETWORK_RETRIES = 2


class StripeNotConfigured(Exception):
    """No STRIPE_SECRET_KEY: billing runs self-hosted."""


class StripeUnavailable(Exception):
    """Stripe could not be reached or failed; the request may succeed later."""


class StripeRejected(Exception):
    """Stripe refused the request (4xx); `param` names the parameter it refused, if any."""

    def __init__(self, message: str, *, code: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.param = param


@dataclass(frozen=True)
class StripeSubscription:
    id: str
    customer: str
    status: str
    price_id: str | None
    current_period_start: datetime | None
    current_period_end: datetime | None
    cancel_at_period_end: bool
    metadata: dict[str, str]


@dataclass(frozen=True)
class StripeInvoice:
    id: str
    number: str | None
    status: str | None
    amount_due: int
    amount_paid: int
    currency: str
    period_start: datetime | None
    period_end: datetime | None
    hosted_invoice_url: str | None
    created: datetime


@dataclass(frozen=True)
class InvoicePage:
    items: list[StripeInvoice]
    has_more: bool


def configured(settings: Settings) -> bool:
    return settings.STRIPE_SECRET_KEY is not None and bool(settings.STRIPE_SECRET_KEY.get_secret_value())


def _time(value: Any) -> datetime | None:
    return datetime.fromtimestamp(int(value), UTC) if value is not None else None


@asynccontextmanager
async def _translated_errors() -> AsyncIterator[None]:
    try:
        yield
    except (stripe.APIConnectionError, stripe.RateLimitError, stripe.APIError) as error:
        raise StripeUnavailable(str(error.user_message or type(error).__name__)) from error
    except stripe.StripeError as error:
        param = getattr(error, "param", None)
        raise StripeRejected(
            str(error.user_message or type(error).__name__),
            code=error.code,
            param=param if isinstance(param, str) else None,
        ) from error


class StripeGateway:
    """One Stripe client (its own HTTP connections): use as `async with StripeGateway(settings) as
    stripe_api: ...`."""

    def __init__(self, settings: Settings) -> None:
        key = settings.STRIPE_SECRET_KEY.get_secret_value() if settings.STRIPE_SECRET_KEY else ""
        if not key:
            raise StripeNotConfigured
        self._http = stripe.HTTPXClient(timeout=settings.STRIPE_TIMEOUT_SECONDS)
        self._client = stripe.StripeClient(
            key,
            stripe_version=STRIPE_API_VERSION,
            base_addresses={"api": settings.STRIPE_API_BASE},
            http_client=self._http,
            max_network_retries=NETWORK_RETRIES,
        )

    async def __aenter__(self) -> StripeGateway:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._http.close_async()  # type: ignore[no-untyped-call]

    async def create_customer(self, *, name: str, org_id: str, email: str | None) -> str:
        params: CustomerCreateParams = {"name": name, "metadata": {"org_id": org_id}}
        if email:
            params["email"] = email
        async with _translated_errors():
            customer = await self._client.v1.customers.create_async(params, {"idempotency_key": f"customer-{org_id}"})
        return str(customer.id)

    async def create_checkout_session(
        self, *, customer: str, price: str, org_id: str, success_url: str, cancel_url: str
    ) -> str:
        """A Checkout Session in subscription mode for `price`; its URL."""
        params: SessionCreateParams = {
            "mode": "subscription",
            "customer": customer,
            "client_reference_id": org_id,
            "line_items": [{"price": price, "quantity": 1}],
            "success_url": success_url,
            "cancel_url": cancel_url,
            "metadata": {"org_id": org_id},
            "subscription_data": {"metadata": {"org_id": org_id}},
        }
        async with _translated_errors():
            session = await self._client.v1.checkout.sessions.create_async(params)
        return str(session.url)

    async def create_portal_session(self, *, customer: str, return_url: str) -> str:
        async with _translated_errors():
            session = await self._client.v1.billing_portal.sessions.create_async(
                {"customer": customer, "return_url": return_url}
            )
        return str(session.url)

    async def subscription(self, subscription_id: str) -> StripeSubscription:
        async with _translated_errors():
            found = await self._client.v1.subscriptions.retrieve_async(subscription_id)
        data = found.to_dict()
        items = (data.get("items") or {}).get("data") or []
        first = items[0] if items else {}
        price = first.get("price") or {}
        return StripeSubscription(
            id=str(data["id"]),
            customer=str(data["customer"]),
            status=str(data["status"]),
            price_id=price.get("id"),
            current_period_start=_time(first.get("current_period_start", data.get("current_period_start"))),
            current_period_end=_time(first.get("current_period_end", data.get("current_period_end"))),
            cancel_at_period_end=bool(data.get("cancel_at_period_end")),
            metadata={str(key): str(value) for key, value in (data.get("metadata") or {}).items()},
        )

    async def invoices(self, *, customer: str, limit: int, starting_after: str | None) -> InvoicePage:
        params: InvoiceListParams = {"customer": customer, "limit": limit}
        if starting_after:
            params["starting_after"] = starting_after
        async with _translated_errors():
            page = await self._client.v1.invoices.list_async(params)
        items = [
            StripeInvoice(
                id=str(invoice["id"]),
                number=invoice.get("number"),
                status=invoice.get("status"),
                amount_due=int(invoice.get("amount_due") or 0),
                amount_paid=int(invoice.get("amount_paid") or 0),
                currency=str(invoice.get("currency") or ""),
                period_start=_time(invoice.get("period_start")),
                period_end=_time(invoice.get("period_end")),
                hosted_invoice_url=invoice.get("hosted_invoice_url"),
                created=_time(invoice.get("created")) or datetime.fromtimestamp(0, UTC),
            )
            for invoice in (item.to_dict() for item in page.data)
        ]
        return InvoicePage(items, bool(page.has_more))
