"""An API fuzz over the whole OpenAPI document: schemathesis generates valid and invalid requests
for every operation and sends them to the real app (uvicorn on a loopback socket, a database of its
own), signed in as a user who owns an organization. Every response must be no 5xx, with a status
code the document declares, of the declared content type, matching its declared schema.

Bounded for CI (a fixed number of examples per operation, derandomized so a run is repeatable);
raise FUZZ_EXAMPLES locally for a longer search.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy.engine import make_url

from codepulse.app import create_app
from codepulse.repositories.dependencies import host_resolver
from tests.auth.helpers import PASSWORD
from tests.databases import DatabaseServer, build_settings
from tests.stubs.stripe import StripeStub

FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "6"))

# Operations that would end the fuzzing user's session or delete what the other cases need; each
# has tests of its own.
EXCLUDED = {
    ("POST", "/api/v1/auth/logout"),
    ("POST", "/api/v1/auth/logout-all"),
    ("DELETE", "/api/v1/users/me"),
    ("DELETE", "/api/v1/orgs/{org}"),
    # An endless stream: each case would wait out the client's read timeout (tests/notifications/test_stream.py).
    ("GET", "/api/v1/notifications/stream"),
}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


async def _offline_resolver(host: str) -> list[str]:
    """Clone URL checks resolve names here, never on the network: every name is a public
    address from the documentation range (nothing is cloned: no worker runs)."""
    return ["192.0.2.10"] if host != "localhost" else ["127.0.0.1"]


@dataclass
class FuzzTarget:
    base_url: str
    headers: dict[str, str]
    org_id: str
    username: str


@pytest.fixture(scope="module")
async def fuzz_database_url(database_server: DatabaseServer) -> str:
    return await database_server.clone("fuzz")


@pytest.fixture(scope="module")
def stripe_stub() -> Iterator[StripeStub]:
    with StripeStub(prices=["price_pro"]) as stub:
        yield stub


@pytest.fixture(scope="module")
def fuzz_target(fuzz_database_url: str, stripe_stub: StripeStub) -> Iterator[FuzzTarget]:
    app_settings = build_settings(
        fuzz_database_url,
        RATE_LIMIT_ENABLED=False,
        LOG_LEVEL="WARNING",
        # No GitHub to reach: a closed loopback port answers at once.
        GITHUB_API_URL="http://127.0.0.1:9",
        GITHUB_URL="http://127.0.0.1:9",
        # Billing's calls go to a local Stripe (without one, checkout answers 503 by design).
        STRIPE_SECRET_KEY=stripe_stub.secret_key,
        STRIPE_API_BASE=stripe_stub.url,
        STRIPE_PRICE_PRO="price_pro",
        STRIPE_WEBHOOK_SECRET="whsec_fuzz",
    )
    app = create_app(app_settings)
    app.dependency_overrides[host_resolver] = lambda: _offline_resolver
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan="on"))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[listener])), daemon=True)
    thread.start()
    base_url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base_url, timeout=30) as client:
            _wait_until_up(client, server)
            registered = client.post(
                "/api/v1/auth/register",
                json={"email": "fuzz@example.com", "password": PASSWORD, "username": "fuzzer", "name": "Fuzz"},
            )
            assert registered.status_code == 201, registered.text
            headers = {"Authorization": f"Bearer {registered.json()['token']}"}
            org = client.post("/api/v1/orgs", json={"name": "Fuzz", "slug": "fuzz-org"}, headers=headers)
            assert org.status_code == 201, org.text
            # A connection per case: requests' keep-alive against uvicorn pays a delayed-ACK
            # wait (20-40 ms) on every request.
            yield FuzzTarget(base_url, headers, org.json()["id"], "fuzzer")
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        listener.close()


def _wait_until_up(client: httpx.Client, server: uvicorn.Server) -> None:
    for _ in range(600):
        if server.started:
            break
        threading.Event().wait(0.05)
    assert client.get("/api/v1/health").status_code == 200


def _load_schema() -> schemathesis.BaseSchema:
    # The document does not depend on the database: build it from an app that never starts.
    document = create_app(build_settings("sqlite+aiosqlite:///:memory:")).openapi()
    return schemathesis.openapi.from_dict(document).exclude(
        func=lambda ctx: (ctx.operation.method.upper(), ctx.operation.path) in EXCLUDED
    )


schema = _load_schema()


@schema.parametrize()
@settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_api_fuzz(case: schemathesis.Case[Any], fuzz_target: FuzzTarget) -> None:
    path_parameters = case.path_parameters or {}
    # Half the org-scoped cases reach the fuzzing user's own organization (its id: a PATCH may
    # change its slug), the rest whatever was generated.
    if "org" in path_parameters and zlib.crc32(repr(case.body).encode()) % 2 == 0:
        path_parameters["org"] = fuzz_target.org_id
    response = case.call_and_validate(base_url=fuzz_target.base_url, headers=fuzz_target.headers, checks=CHECKS)
    REACHED.append((case.operation.method.upper(), case.operation.path, response.status_code))


REACHED: list[tuple[str, str, int]] = []


def test_the_fuzz_reached_the_operations() -> None:
    """The fuzz is worth its time only if it gets past authentication and the guards: most
    operations answered at least one case with a success, and the token was never lost."""
    assert REACHED, "run with the fuzz above"
    succeeded = {(method, path) for method, path, status in REACHED if status < 400}
    operations = {(method, path) for method, path, _ in REACHED}
    print(f"fuzz: {len(REACHED)} requests, {len(succeeded)} of {len(operations)} operations answered 2xx/3xx")
    assert len(succeeded) >= len(operations) // 3
    assert ("GET", "/api/v1/auth/me") in succeeded


def test_the_fuzz_sends_nul_and_runs_on_the_suite_database(
    fuzz_database_url: str, database_server: DatabaseServer
) -> None:
    """NUL is what PostgreSQL's text refuses (a 500 before every text input refused it): the
    strategies must generate it, and the fuzzed app must run on the suite's database, PostgreSQL
    in its pass."""
    generation = schema.config.generation
    assert generation.allow_x00
    assert generation.codec == "utf-8"
    assert make_url(fuzz_database_url).get_backend_name() == database_server.dialect
