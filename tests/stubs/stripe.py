"""A stub Stripe that speaks Stripe's real REST protocol over loopback HTTP.

`StripeStub` is a Starlette app served by uvicorn on 127.0.0.1:<free port> in a background
thread (its own event loop), so both Stripe's synchronous client and an async one can call it,
even from inside the test's event loop. Point the client's API base at `.url` (the stub answers
under `/v1`, as api.stripe.com does). Tests drive it through `.state` (a `StripeStubState`):
register prices, complete checkouts ("the customer paid"), change subscriptions, add invoices,
inject errors, and read what was sent. `sign_payload` and `event` build webhook deliveries
without the server.

Protocol details mirrored from Stripe:
- Auth: `Authorization: Bearer <secret key>`; none or a wrong key -> 401 `invalid_request_error`
  (the wrong key shown redacted). Every request is recorded with its decoded parameters and
  headers (`Stripe-Version`, `Idempotency-Key`).
- Parameters: `application/x-www-form-urlencoded` bodies (GET: the query string) in Stripe's
  bracket notation (`metadata[k]=v`, `line_items[0][price]=p`, `expand[]=f`), decoded into nested
  dicts and lists (a dict whose keys are 0..n-1 becomes a list).
- Errors: `{"error": {"type", "code", "message", "param", "doc_url"}}`; unknown ids in the path
  -> 404 `resource_missing` (param `id`), unknown ids in parameters -> 400 `resource_missing`
  naming the parameter (the billing portal's `customer`: 404), missing required parameters
  -> 400 `parameter_missing`. Responses carry `Request-Id` and `Stripe-Version` headers.
- Idempotency: a POST repeating an `Idempotency-Key` gets the first (successful) answer again
  with `Idempotent-Replayed: true`; the same key with other parameters -> 400 `idempotency_error`.
- Objects: `id` with Stripe's prefix, `object`, `created` (unix seconds), `livemode: false`.
  Checkout sessions leave out `line_items` unless `expand[]=line_items`, as Stripe does;
  `expand[]` also replaces an id field (`customer`, `subscription`, `latest_invoice`) by its object.
  Subscriptions carry the period both at the top level and on the item (API 2025-03-31 moved it
  to the item); invoices carry `subscription` and the newer `parent.subscription_details`.
- Lists: `{"object": "list", "data", "has_more", "url"}`, newest first, `limit` 1..100 (default
  10), cursors `starting_after` / `ending_before`. Subscription lists leave out canceled ones
  unless `status=all` or `status=canceled`.
"""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import hashlib
import hmac
import json
import re
import secrets
import string
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self, TypeAlias
from urllib.parse import parse_qsl

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

API_VERSION = "2025-03-31.basil"
DEFAULT_SECRET_KEY = "sk_test_stub_not_a_real_key"
_ALPHABET = string.ascii_letters + string.digits
_ERROR_DOCS = "https://stripe.com/docs/error-codes"

Json: TypeAlias = dict[str, Any]
FormValue: TypeAlias = "str | list[FormValue] | dict[str, FormValue]"


def new_id(prefix: str, length: int = 24) -> str:
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(length))


def _now() -> int:
    return int(time.time())


# -- pure helpers: form decoding, webhook signing, events ---------------------------------------

_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")


def decode_form(pairs: Iterable[tuple[str, str]]) -> dict[str, FormValue]:
    """Stripe's bracket notation into nested values: `a[b][0][c]=v` -> {"a": {"b": [{"c": "v"}]}}."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        match = _KEY.match(key)
        if match is None:
            root[key] = value  # not bracket notation: keep it as sent
            continue
        path = [match.group(1), *re.findall(r"\[([^\[\]]*)\]", match.group(2))]
        node = root
        for part in path[:-1]:
            # `x[]` appends: numbered like an explicit index, so it becomes a list below.
            child = node.get(part or str(len(node)))
            if not isinstance(child, dict):
                child = node[part or str(len(node))] = {}
            node = child
        node[path[-1] or str(len(node))] = value
    decoded: dict[str, FormValue] = _listify(root)
    return decoded


def _listify(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    items = {key: _listify(child) for key, child in value.items()}
    if items and sorted(items) == sorted(str(i) for i in range(len(items))):
        return [items[str(i)] for i in range(len(items))]
    return items


def sign_payload(payload: bytes, secret: str | Sequence[str], timestamp: int | None = None) -> str:
    """A `Stripe-Signature` value: `t=<ts>,v1=<hex HMAC-SHA256 of "<ts>.<payload>">`; a list of
    secrets gives one v1 per secret, as Stripe sends while an endpoint's secret is rolled."""
    ts = _now() if timestamp is None else timestamp
    signed = f"{ts}.".encode() + payload
    keys = [secret] if isinstance(secret, str) else list(secret)
    v1 = [hmac.new(key.encode(), signed, hashlib.sha256).hexdigest() for key in keys]
    return ",".join([f"t={ts}", *(f"v1={digest}" for digest in v1)])


def event(
    type: str,
    obj: Mapping[str, Any],
    *,
    event_id: str | None = None,
    created: int | None = None,
    api_version: str = API_VERSION,
) -> Json:
    """A Stripe event envelope around `obj` (serialize it and sign the bytes with `sign_payload`)."""
    return {
        "id": event_id or new_id("evt_"),
        "object": "event",
        "type": type,
        "created": _now() if created is None else created,
        "api_version": api_version,
        "livemode": False,
        "data": {"object": dict(obj)},
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
    }


def dumps(obj: Any) -> bytes:
    """Compact JSON bytes for a webhook body, ready for `sign_payload`."""
    return json.dumps(obj, separators=(",", ":")).encode()


def _add_interval(start: int, interval: str, count: int = 1) -> int:
    # Stripe bills calendar months and years (Jan 31 + 1 month = Feb 28/29).
    if interval in ("day", "week"):
        return start + count * (86_400 if interval == "day" else 604_800)
    moment = datetime.fromtimestamp(start, UTC)
    months = moment.month - 1 + count * (12 if interval == "year" else 1)
    year, month = moment.year + months // 12, months % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return int(moment.replace(year=year, month=month, day=day).timestamp())


# -- state --------------------------------------------------------------------------------------


class StripeApiError(Exception):
    """Raised by handlers (and usable by tests via `fail_next`): becomes Stripe's error body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        should_retry: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type, code, param
        self.should_retry = should_retry

    def body(self) -> Json:
        error: Json = {"type": self.type, "message": self.message}
        if self.code is not None:
            error |= {"code": self.code, "doc_url": f"{_ERROR_DOCS}/{self.code.replace('_', '-')}"}
        if self.param is not None:
            error["param"] = self.param
        return {"error": error}


def _missing(kind: str, object_id: str, param: str, status: int = 400) -> StripeApiError:
    return StripeApiError(status, f"No such {kind}: '{object_id}'", code="resource_missing", param=param)


@dataclass
class RecordedRequest:
    method: str
    path: str
    params: dict[str, Any]  # decoded form body or query string
    headers: dict[str, str]  # lower-case names

    @property
    def stripe_version(self) -> str | None:
        return self.headers.get("stripe-version")

    @property
    def idempotency_key(self) -> str | None:
        return self.headers.get("idempotency-key")


@dataclass
class StripeStubState:
    """Objects are kept in Stripe's JSON shape, keyed by id; tests may read them directly."""

    secret_key: str = DEFAULT_SECRET_KEY
    api_version: str = API_VERSION  # answered in Stripe-Version when a request names none
    base_url: str = "http://127.0.0.1"  # the stub's origin, set when it starts (hosted page URLs)
    customers: dict[str, Json] = field(default_factory=dict)
    prices: dict[str, Json] = field(default_factory=dict)
    checkout_sessions: dict[str, Json] = field(default_factory=dict)
    portal_sessions: dict[str, Json] = field(default_factory=dict)
    subscriptions: dict[str, Json] = field(default_factory=dict)
    invoices: dict[str, Json] = field(default_factory=dict)
    line_items: dict[str, list[Json]] = field(default_factory=dict)  # checkout session id -> items
    requests: list[RecordedRequest] = field(default_factory=list)
    faults: list[StripeApiError] = field(default_factory=list)
    idempotent: dict[str, tuple[str, Any, Json]] = field(default_factory=dict)  # key -> path, params, body
    clock: Callable[[], int] = _now
    # Handlers run in the server's thread; the lock keeps a test's changes and a request apart.
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    def requests_to(self, method: str, path: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == method.upper() and r.path == path]

    def fail_next(
        self,
        status: int = 500,
        error_type: str = "api_error",
        message: str = "An unknown error occurred",
        *,
        code: str | None = None,
        should_retry: bool | None = None,
        times: int = 1,
    ) -> None:
        """The next `times` authenticated requests answer this error (e.g. 429 `rate_limit_error`);
        `should_retry` sets Stripe-Should-Retry, which Stripe's clients obey."""
        with self.lock:
            fault = StripeApiError(status, message, type=error_type, code=code, should_retry=should_retry)
            self.faults.extend([fault] * times)

    def add_price(
        self,
        price_id: str | None = None,
        *,
        product_name: str = "Pro",
        unit_amount: int = 1_000,
        currency: str = "usd",
        interval: str | None = "month",
        lookup_key: str | None = None,
    ) -> Json:
        """A price (recurring unless `interval=None`) of a new product named `product_name`."""
        price_id = price_id or new_id("price_")
        recurring = {"interval": interval, "interval_count": 1, "usage_type": "licensed"} if interval else None
        price: Json = {
            "id": price_id,
            "object": "price",
            "active": True,
            "currency": currency,
            "unit_amount": unit_amount,
            "recurring": recurring,
            "type": "recurring" if interval else "one_time",
            "product": new_id("prod_", 14),
            "nickname": product_name,
            "lookup_key": lookup_key,
            "metadata": {},
            "created": self.clock(),
            "livemode": False,
        }
        with self.lock:
            self.prices[price_id] = price
        return price

    def add_customer(
        self, email: str | None = None, name: str | None = None, metadata: Mapping[str, str] | None = None
    ) -> Json:
        customer: Json = {
            "id": new_id("cus_", 14),
            "object": "customer",
            "email": email,
            "name": name,
            "metadata": dict(metadata or {}),
            "invoice_prefix": secrets.token_hex(4).upper(),
            "created": self.clock(),
            "livemode": False,
        }
        with self.lock:
            self.customers[customer["id"]] = customer
        return customer

    def add_subscription(
        self,
        customer: str,
        price: str,
        *,
        status: str = "active",
        quantity: int = 1,
        metadata: Mapping[str, str] | None = None,
    ) -> Json:
        with self.lock:
            start = self.clock()
            sub_id = new_id("sub_")
            item: Json = {
                "id": new_id("si_", 14),
                "object": "subscription_item",
                "price": self.prices[price],
                "quantity": quantity,
                "subscription": sub_id,
                "created": start,
            }
            sub: Json = {
                "id": sub_id,
                "object": "subscription",
                "customer": customer,
                "status": status,
                "cancel_at_period_end": False,
                "cancel_at": None,
                "canceled_at": None,
                "ended_at": None,
                "metadata": dict(metadata or {}),
                "latest_invoice": None,
                "created": start,
                "livemode": False,
                "items": {
                    "object": "list",
                    "data": [item],
                    "has_more": False,
                    "total_count": 1,
                    "url": f"/v1/subscription_items?subscription={sub_id}",
                },
            }
            self.subscriptions[sub_id] = sub
            interval = (self.prices[price]["recurring"] or {}).get("interval", "month")
            return self.set_subscription(
                sub_id, current_period_start=start, current_period_end=_add_interval(start, interval)
            )

    def set_subscription(
        self,
        sub_id: str,
        *,
        status: str | None = None,
        cancel_at_period_end: bool | None = None,
        price: str | None = None,
        current_period_start: int | None = None,
        current_period_end: int | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> Json:
        """Change a subscription as Stripe would after a portal visit, a renewal or a failed payment."""
        with self.lock:
            sub = self.subscriptions[sub_id]
            item = sub["items"]["data"][0]
            if status is not None:
                sub["status"] = status
                if status == "canceled":
                    sub["canceled_at"] = sub["ended_at"] = self.clock()
            if cancel_at_period_end is not None:
                sub["cancel_at_period_end"] = cancel_at_period_end
                sub["cancel_at"] = item.get("current_period_end") if cancel_at_period_end else None
            if price is not None:
                item["price"] = self.prices[price]
            if metadata is not None:
                sub["metadata"] = dict(metadata)
            for name, value in (
                ("current_period_start", current_period_start),
                ("current_period_end", current_period_end),
            ):
                if value is not None:
                    sub[name] = item[name] = value
            return sub

    def add_invoice(
        self,
        customer: str,
        *,
        subscription: str | None = None,
        status: str = "paid",
        amount_due: int = 1_000,
        currency: str = "usd",
        created: int | None = None,
        period_start: int | None = None,
        period_end: int | None = None,
    ) -> Json:
        """An invoice (drafts have no number nor hosted page); also the subscription's latest one."""
        with self.lock:
            created = self.clock() if created is None else created
            invoice_id = new_id("in_")
            owner = self.customers.get(customer, {})
            count = sum(1 for i in self.invoices.values() if i["customer"] == customer and i["number"])
            finalized = status != "draft"
            sub = self.subscriptions.get(subscription or "")
            invoice: Json = {
                "id": invoice_id,
                "object": "invoice",
                "customer": customer,
                "status": status,
                "currency": currency,
                "number": f"{owner.get('invoice_prefix', 'STUB0000')}-{count + 1:04d}" if finalized else None,
                "amount_due": amount_due,
                "amount_paid": amount_due if status == "paid" else 0,
                "amount_remaining": 0 if status == "paid" else amount_due,
                "total": amount_due,
                "period_start": created if period_start is None else period_start,
                "period_end": created if period_end is None else period_end,
                "hosted_invoice_url": f"{self.base_url}/i/{invoice_id}" if finalized else None,
                "invoice_pdf": f"{self.base_url}/i/{invoice_id}/pdf" if finalized else None,
                "subscription": subscription,
                "created": created,
                "livemode": False,
                "parent": None
                if sub is None
                else {
                    "type": "subscription_details",
                    "subscription_details": {"subscription": subscription, "metadata": dict(sub["metadata"])},
                },
            }
            self.invoices[invoice_id] = invoice
            if sub is not None:
                sub["latest_invoice"] = invoice_id
            return invoice

    def complete_checkout(self, session_id: str, status: str = "active") -> Json:
        """The customer paid: a subscription to the session's price (metadata from
        `subscription_data[metadata]`), a paid invoice, and the session `complete`."""
        with self.lock:
            session = self.checkout_sessions[session_id]
            if session["mode"] != "subscription" or session["status"] != "open":
                raise ValueError(f"{session_id} is not an open subscription checkout")
            customer = session["customer"] or self.add_customer(email=session["customer_email"])["id"]
            line = self.line_items[session_id][0]
            price = line["price"]
            sub = self.add_subscription(
                customer, price["id"], status=status, quantity=line["quantity"], metadata=session["_sub_metadata"]
            )
            self.add_invoice(
                customer,
                subscription=sub["id"],
                amount_due=price["unit_amount"] * line["quantity"],
                currency=price["currency"],
                period_start=sub["current_period_start"],
                period_end=sub["current_period_end"],
            )
            session.update(status="complete", payment_status="paid", customer=customer, subscription=sub["id"])
            return sub

    def find(self, object_id: str) -> Json | None:
        for store in (self.customers, self.prices, self.subscriptions, self.invoices, self.checkout_sessions):
            if object_id in store:
                return store[object_id]
        return None


# -- the app ------------------------------------------------------------------------------------


@dataclass
class _Call:
    state: StripeStubState
    method: str
    path: dict[str, str]
    params: dict[str, Any]


def _public(obj: Json) -> Json:
    return {key: value for key, value in obj.items() if not key.startswith("_")}


def _require(params: Mapping[str, Any], *names: str) -> None:
    for name in names:
        if params.get(name) in (None, "", [], {}):
            raise StripeApiError(400, f"Missing required param: {name}.", code="parameter_missing", param=name)


def _metadata(params: Mapping[str, Any]) -> dict[str, str]:
    # `metadata=` (empty) is Stripe's way to clear it; empty values drop single keys.
    given = params.get("metadata")
    return {k: v for k, v in given.items() if v != ""} if isinstance(given, dict) else {}


def _get(store: Mapping[str, Json], object_id: str, kind: str) -> Json:
    if object_id not in store:
        raise _missing(kind, object_id, "id", status=404)
    return store[object_id]


def _expand(call: _Call, obj: Json) -> Json:
    body = _public(obj)
    expand = call.params.get("expand", [])
    for name in expand if isinstance(expand, list) else [expand]:
        if name == "line_items" and obj["id"] in call.state.line_items:
            data = call.state.line_items[obj["id"]]
            body[name] = {
                "object": "list",
                "data": data,
                "has_more": False,
                "url": f"/v1/checkout/sessions/{obj['id']}/line_items",
            }
        elif isinstance(body.get(name), str) and (found := call.state.find(body[name])) is not None:
            body[name] = _public(found)
    return body


def _page(call: _Call, items: Iterable[Json], kind: str, url: str) -> Json:
    """Stripe's list object over `items`, newest first, with cursor pagination."""
    ordered = [obj for _, obj in sorted(enumerate(items), key=lambda p: (p[1]["created"], p[0]), reverse=True)]
    raw = call.params.get("limit", "10")
    if not (isinstance(raw, str) and raw.isdigit() and 1 <= int(raw) <= 100):
        raise StripeApiError(400, f"Invalid limit: must be an integer from 1 to 100 (it is '{raw}').", param="limit")
    limit, ids = int(raw), [obj["id"] for obj in ordered]
    for cursor in ("starting_after", "ending_before"):
        if cursor in call.params and call.params[cursor] not in ids:
            raise _missing(kind, str(call.params[cursor]), cursor)
    if "ending_before" in call.params:
        end = ids.index(call.params["ending_before"])
        data, has_more = ordered[max(0, end - limit) : end], end - limit > 0
    else:
        start = ids.index(call.params["starting_after"]) + 1 if "starting_after" in call.params else 0
        data, has_more = ordered[start : start + limit], start + limit < len(ordered)
    return {"object": "list", "data": [_public(obj) for obj in data], "has_more": has_more, "url": url}


def create_customer(call: _Call) -> Json:
    p = call.params
    return call.state.add_customer(email=p.get("email"), name=p.get("name"), metadata=_metadata(p))


def _line_item(state: StripeStubState, index: int, line: Any) -> Json:
    prefix = f"line_items[{index}]"
    if not isinstance(line, dict) or not line.get("price"):
        raise StripeApiError(
            400, f"Missing required param: {prefix}[price].", code="parameter_missing", param=f"{prefix}[price]"
        )
    if line["price"] not in state.prices:
        raise _missing("price", line["price"], f"{prefix}[price]")
    quantity = line.get("quantity", "1")
    if not (isinstance(quantity, str) and quantity.isdigit()):
        raise StripeApiError(
            400, f"Invalid integer: {quantity}", code="parameter_invalid_integer", param=f"{prefix}[quantity]"
        )
    price = state.prices[line["price"]]
    return {
        "id": new_id("li_"),
        "object": "item",
        "price": price,
        "quantity": int(quantity),
        "currency": price["currency"],
        "amount_total": price["unit_amount"] * int(quantity),
        "description": price["nickname"],
    }


def create_checkout_session(call: _Call) -> Json:
    p, state = call.params, call.state
    _require(p, "mode", "line_items", "success_url", "cancel_url")
    if p["mode"] not in ("payment", "setup", "subscription"):
        raise StripeApiError(400, "Invalid mode: must be one of payment, setup, or subscription", param="mode")
    if p.get("customer") and p["customer"] not in state.customers:
        raise _missing("customer", p["customer"], "customer")
    if not isinstance(p["line_items"], list):
        raise StripeApiError(400, "Invalid array", param="line_items")
    lines = [_line_item(state, index, line) for index, line in enumerate(p["line_items"])]
    session_id = new_id("cs_test_", 58)
    subscription_data = p.get("subscription_data")
    subscription_data = subscription_data if isinstance(subscription_data, dict) else {}
    session: Json = {
        "id": session_id,
        "object": "checkout.session",
        "mode": p["mode"],
        "status": "open",
        "payment_status": "unpaid",
        "url": f"{state.base_url}/c/pay/{session_id}",
        "customer": p.get("customer"),
        "customer_email": p.get("customer_email"),
        "client_reference_id": p.get("client_reference_id"),
        "metadata": _metadata(p),
        "subscription": None,
        "success_url": p["success_url"],
        "cancel_url": p["cancel_url"],
        "created": state.clock(),
        "expires_at": state.clock() + 86_400,
        "livemode": False,
        "_sub_metadata": _metadata(subscription_data),
    }
    state.checkout_sessions[session_id], state.line_items[session_id] = session, lines
    return _expand(call, session)


def create_portal_session(call: _Call) -> Json:
    p, state = call.params, call.state
    _require(p, "customer")
    if p["customer"] not in state.customers:
        raise _missing("customer", p["customer"], "customer", status=404)
    session_id = new_id("bps_")
    session: Json = {
        "id": session_id,
        "object": "billing_portal.session",
        "customer": p["customer"],
        "return_url": p.get("return_url"),
        "url": f"{state.base_url}/p/session/{session_id}",
        "created": state.clock(),
        "livemode": False,
    }
    state.portal_sessions[session_id] = session
    return session


def list_subscriptions(call: _Call) -> Json:
    p = call.params
    wanted = p.get("status")
    subs = [
        s
        for s in call.state.subscriptions.values()
        if p.get("customer") in (None, s["customer"])
        and (wanted == "all" or s["status"] == wanted or (wanted is None and s["status"] != "canceled"))
    ]
    return _page(call, subs, "subscription", "/v1/subscriptions")


def list_invoices(call: _Call) -> Json:
    p = call.params
    invoices = [
        i
        for i in call.state.invoices.values()
        if p.get("customer") in (None, i["customer"])
        and p.get("subscription") in (None, i["subscription"])
        and p.get("status") in (None, i["status"])
    ]
    return _page(call, invoices, "invoice", "/v1/invoices")


def _retrieve(store: str, kind: str) -> Callable[[_Call], Json]:
    def handler(call: _Call) -> Json:
        return _expand(call, _get(getattr(call.state, store), call.path["id"], kind))

    return handler


def _unknown_route(call: _Call) -> Json:
    raise StripeApiError(404, f"Unrecognized request URL ({call.method}: /v1/{call.path['rest']}).")


class _Dispatcher:
    """Wraps every handler: records, authenticates, injects faults, replays idempotent POSTs.
    It reads `stub.state` on every request, so a test can swap in a fresh state."""

    def __init__(self, stub: StripeStub) -> None:
        self.stub = stub

    def __call__(self, handler: Callable[[_Call], Json]) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            body = (await request.body()).decode("utf-8", "replace")
            pairs = parse_qsl(request.url.query, keep_blank_values=True) + parse_qsl(body, keep_blank_values=True)
            headers = {k.lower(): v for k, v in request.headers.items()}
            state = self.stub.state
            with state.lock:
                call = _Call(state, request.method, dict(request.path_params), decode_form(pairs))
                state.requests.append(RecordedRequest(request.method, request.url.path, call.params, headers))
                return self.answer(call, handler, headers, request.method == "POST", request.url.path)

        return endpoint

    def answer(
        self, call: _Call, handler: Callable[[_Call], Json], headers: dict[str, str], post: bool, path: str
    ) -> Response:
        state, extra = call.state, {"request-id": new_id("req_", 14)}
        extra["stripe-version"] = headers.get("stripe-version", state.api_version)
        key = headers.get("idempotency-key") if post else None
        try:
            self.authenticate(state, headers.get("authorization", ""))
            if state.faults:
                raise state.faults.pop(0)
            if key is not None and key in state.idempotent:
                first_path, first_params, first_body = state.idempotent[key]
                if (first_path, first_params) != (path, call.params):
                    raise StripeApiError(
                        400,
                        "Keys for idempotent requests can only be used with the same "
                        "parameters they were first used with.",
                        type="idempotency_error",
                    )
                return JSONResponse(first_body, headers=extra | {"idempotent-replayed": "true"})
            result = _public(handler(call))
        except StripeApiError as error:
            if error.should_retry is not None:
                extra["stripe-should-retry"] = str(error.should_retry).lower()
            return JSONResponse(error.body(), status_code=error.status, headers=extra)
        if key is not None:
            state.idempotent[key] = (path, call.params, result)
        return JSONResponse(result, headers=extra)

    @staticmethod
    def authenticate(state: StripeStubState, header: str) -> None:
        scheme, _, credential = header.partition(" ")
        if scheme.lower() != "bearer":
            credential = ""
        if not credential.strip():
            raise StripeApiError(
                401,
                "You did not provide an API key. Send it in the Authorization header "
                "as a Bearer token (Authorization: Bearer sk_...).",
            )
        if not secrets.compare_digest(credential.strip(), state.secret_key):
            shown = credential.strip()
            raise StripeApiError(
                401, f"Invalid API Key provided: {shown[:8]}{'*' * max(0, len(shown) - 12)}{shown[-4:]}"
            )


async def _hosted_page(_request: Request) -> Response:
    # Checkout, portal and invoice pages: the browser lands here; tests drive payment via the state.
    return HTMLResponse("<html><body>Stripe stub hosted page</body></html>")


def build_app(stub: StripeStub) -> Starlette:
    wrap = _Dispatcher(stub)
    all_methods = ["GET", "POST", "DELETE", "PUT", "PATCH"]
    return Starlette(
        routes=[
            Route("/v1/customers", wrap(create_customer), methods=["POST"]),
            Route("/v1/customers/{id}", wrap(_retrieve("customers", "customer")), methods=["GET"]),
            Route("/v1/prices/{id}", wrap(_retrieve("prices", "price")), methods=["GET"]),
            Route("/v1/checkout/sessions", wrap(create_checkout_session), methods=["POST"]),
            Route(
                "/v1/checkout/sessions/{id}", wrap(_retrieve("checkout_sessions", "checkout.session")), methods=["GET"]
            ),
            Route("/v1/billing_portal/sessions", wrap(create_portal_session), methods=["POST"]),
            Route("/v1/subscriptions", wrap(list_subscriptions), methods=["GET"]),
            Route("/v1/subscriptions/{id}", wrap(_retrieve("subscriptions", "subscription")), methods=["GET"]),
            Route("/v1/invoices", wrap(list_invoices), methods=["GET"]),
            Route("/v1/invoices/{id}", wrap(_retrieve("invoices", "invoice")), methods=["GET"]),
            Route("/v1/{rest:path}", wrap(_unknown_route), methods=all_methods),
            Route("/{kind:path}", _hosted_page, methods=["GET"]),
        ]
    )


# -- the server ---------------------------------------------------------------------------------


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The test process owns SIGINT/SIGTERM: Ctrl-C must stop pytest, not just this stub.
        yield


class StripeStub:
    """`with StripeStub() as stripe:` or `async with ...`: serves the stub until the block ends.
    `prices` pre-registers prices: ids (a $10/month "Pro" price each) or keyword dicts for `add_price`."""

    def __init__(
        self,
        secret_key: str = DEFAULT_SECRET_KEY,
        *,
        prices: Iterable[str | Mapping[str, Any]] = (),
        api_version: str = API_VERSION,
        state: StripeStubState | None = None,
    ) -> None:
        self._seed = list(prices)
        self.state = state if state is not None else StripeStubState(secret_key=secret_key, api_version=api_version)
        self._seed_prices()
        self.app = build_app(self)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None

    def _seed_prices(self) -> None:
        for price in self._seed:
            if isinstance(price, str):
                self.state.add_price(price)
            else:
                self.state.add_price(**price)

    @property
    def url(self) -> str:
        """The API base (Stripe's https://api.stripe.com); it stays known after the stub stops."""
        if self._port is None:
            raise RuntimeError("the Stripe stub has not been started")
        return f"http://127.0.0.1:{self._port}"

    @property
    def secret_key(self) -> str:
        return self.state.secret_key

    def reset(self) -> StripeStubState:
        """A fresh state with the same key, API version and seeded prices (for a shared stub)."""
        old = self.state
        self.state = StripeStubState(secret_key=old.secret_key, api_version=old.api_version, base_url=old.base_url)
        self._seed_prices()
        return self.state

    def start(self) -> None:
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=0,
            lifespan="off",
            ws="none",
            log_config=None,  # leave the test process's logging configuration alone
            log_level=None,
            access_log=False,
            timeout_graceful_shutdown=1,  # a client's idle keep-alive connection must not hold up stop()
        )
        server = _Server(config)
        thread = threading.Thread(target=server.run, name="stripe-stub", daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the Stripe stub did not start")
            time.sleep(0.005)
        self._server, self._thread = server, thread
        self._port = int(server.servers[0].sockets[0].getsockname()[1])
        self.state.base_url = self.url

    def stop(self) -> None:
        if self._server is None or self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._server = self._thread = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(
        self, _type: type[BaseException] | None, _value: BaseException | None, _tb: TracebackType | None
    ) -> None:
        await asyncio.to_thread(self.stop)
