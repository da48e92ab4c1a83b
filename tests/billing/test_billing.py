"""Plans and quotas over HTTP: the public plans, an organization's plan and usage, plan assignment
(superuser and CLI), downgrades, the default plan, and the 402 problem's fields."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from typer.testing import CliRunner

from codepulse.billing.plans import PlanId, Resource, plan_of, upgrade_to
from codepulse.billing.service import month_start, next_month_start
from codepulse.cli import app as cli
from codepulse.config import Settings
from codepulse.db import Database
from codepulse.orgs.models import AuditEvent, Invitation, Organization
from codepulse.usage.service import record_event
from tests.databases import TEST_SECRET_KEY, DatabaseServer
from tests.factories import MakeMember, MakeOrg, MakeUser, RepositoryFactory
from tests.helpers import FakeClock

API = "/api/v1"


@pytest.fixture
async def make_client(
    app_factory: Callable[[Settings], FastAPI], make_settings: Callable[..., Settings]
) -> AsyncIterator[Callable[..., Any]]:
    clients: list[tuple[FastAPI, httpx.AsyncClient]] = []

    async def make(**overrides: Any) -> httpx.AsyncClient:
        app = app_factory(make_settings(**overrides))
        await app.router.lifespan_context(app).__aenter__()
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")
        clients.append((app, client))
        return client

    yield make
    for _app, client in clients:
        await client.aclose()


def _problem(response: httpx.Response) -> dict[str, Any]:
    assert response.headers["content-type"] == "application/problem+json", response.text
    body: dict[str, Any] = response.json()
    return body


async def test_the_plans_are_public_cheapest_first_with_overrides_and_prices(
    make_client: Callable[..., Any],
) -> None:
    client = await make_client(
        PLAN_LIMITS={"free": {"repositories": 5}, "team": {"seats": None}},
        STRIPE_PRICE_PRO="price_pro_monthly",
        DEFAULT_PLAN="pro",
    )
    response = await client.get(f"{API}/billing/plans")
    assert response.status_code == 200
    body = response.json()
    assert body["default_plan"] == "pro"
    plans = {plan["id"]: plan for plan in body["items"]}
    assert list(plans) == ["free", "pro", "team", "enterprise"]
    assert plans["free"]["limits"] == {"repositories": 5, "seats": 3, "scans_per_month": 50}
    assert plans["pro"]["limits"] == {"repositories": 20, "seats": 10, "scans_per_month": 1_000}
    assert plans["team"]["limits"] == {"repositories": 100, "seats": None, "scans_per_month": 10_000}
    assert plans["enterprise"]["limits"] == {"repositories": None, "seats": None, "scans_per_month": None}
    assert [plans[name]["stripe_price_id"] for name in plans] == [None, "price_pro_monthly", None, None]


def test_upgrade_to_is_the_cheapest_plan_that_lifts_the_limit(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    free, team = plan_of(settings, "free"), plan_of(settings, "team")

    def lifted(plan_settings: Settings, current: str, resource: Resource, needed: int) -> str | None:
        found = upgrade_to(plan_settings, plan_of(plan_settings, current), resource, needed)
        return found.id.value if found else None

    assert lifted(settings, "free", Resource.SEATS, 4) == "pro"
    assert lifted(settings, "free", Resource.SEATS, 11) == "team"
    assert lifted(settings, "free", Resource.REPOSITORIES, 101) == "enterprise"
    assert lifted(settings, "enterprise", Resource.SEATS, 1_000) is None
    capped = make_settings(PLAN_LIMITS={"enterprise": {"seats": 60}})
    assert lifted(capped, "team", Resource.SEATS, 61) is None
    assert (free.id, team.id) == (PlanId.FREE, PlanId.TEAM)
    # A plan id the code no longer knows is the free plan.
    assert plan_of(settings, "gold").id is PlanId.FREE


async def test_an_organizations_billing_shows_its_plan_and_usage_to_members_only(
    client: httpx.AsyncClient,
    session: AsyncSession,
    make_user: MakeUser,
    make_org: MakeOrg,
    make_member: MakeMember,
    clock: FakeClock,
) -> None:
    clock.now = datetime(2026, 12, 4, 12, tzinfo=UTC)
    ada = await make_user("ada")
    engines = await make_org(ada, slug="engines")
    viewer = await make_member(engines, "viewer", "vic")
    outsider = await make_user("eve")
    RepositoryFactory.create(org=engines)
    RepositoryFactory.create(org=engines, archived=True)  # archived ones are not counted
    session.add(
        Invitation(
            org_id=engines.id,
            email="grace@example.com",
            role="member",
            token_hash=uuid.uuid4().hex,
            invited_by=ada.model.id,
            created_at=clock.now,
            expires_at=datetime(2026, 12, 11, tzinfo=UTC),
        )
    )
    await record_event(session, engines.id, "scan.run", idempotency_key="this", occurred_at=clock.now)
    await record_event(
        session, engines.id, "scan.run", idempotency_key="last", occurred_at=datetime(2026, 11, 30, 23, tzinfo=UTC)
    )
    await session.flush()

    response = await client.get(f"{API}/orgs/engines/billing", headers=viewer.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["plan"], body["plan_name"], body["assigned"], body["status"]) == ("free", "Free", False, "active")
    assert (body["current_period_start"], body["current_period_end"]) == (
        "2026-12-01T00:00:00Z",
        "2027-01-01T00:00:00Z",
    )
    assert body["usage"] == {
        "repositories": {"used": 1, "limit": 3, "remaining": 2},
        "seats": {"used": 3, "limit": 3, "remaining": 0},  # ada, vic and grace's invitation
        "scans_per_month": {"used": 1, "limit": 50, "remaining": 49},  # November's does not count
    }
    assert (await client.get(f"{API}/orgs/engines", headers=viewer.headers)).json()["plan"] == "free"
    hidden = await client.get(f"{API}/orgs/engines/billing", headers=outsider.headers)
    assert (hidden.status_code, _problem(hidden)["code"]) == (404, "organization_not_found")
    assert (await client.get(f"{API}/orgs/engines/billing")).status_code == 401


def test_calendar_periods_roll_over_the_year() -> None:
    december = datetime(2026, 12, 31, 23, 59, tzinfo=UTC)
    assert (month_start(december), next_month_start(december)) == (
        datetime(2026, 12, 1, tzinfo=UTC),
        datetime(2027, 1, 1, tzinfo=UTC),
    )


async def test_a_superuser_assigns_plans_and_a_downgrade_keeps_what_exists(
    client: httpx.AsyncClient, session: AsyncSession, make_user: MakeUser, make_org: MakeOrg
) -> None:
    ada = await make_user("ada")
    root = await make_user("root", is_superuser=True)
    engines = await make_org(ada, slug="engines")
    plan_url = f"{API}/admin/orgs/engines/plan"

    refused = await client.put(plan_url, headers=ada.headers, json={"plan": "enterprise"})
    assert (refused.status_code, _problem(refused)["code"]) == (403, "superuser_required")
    missing = await client.put(f"{API}/admin/orgs/nowhere/plan", headers=root.headers, json={"plan": "pro"})
    assert (missing.status_code, _problem(missing)["code"]) == (404, "organization_not_found")
    invalid = await client.put(plan_url, headers=root.headers, json={"plan": "gold"})
    assert (invalid.status_code, _problem(invalid)["code"]) == (422, "validation_failed")

    upgraded = await client.put(f"{API}/admin/orgs/{engines.id}/plan", headers=root.headers, json={"plan": "pro"})
    assert upgraded.status_code == 200, upgraded.text
    assert (upgraded.json()["plan"], upgraded.json()["assigned"]) == ("pro", True)
    for n in range(5):
        created = await client.post(
            f"{API}/orgs/engines/repositories",
            headers=ada.headers,
            json={"clone_url": f"https://140.82.112.3/octo/r{n}.git"},
        )
        assert created.status_code == 201, created.text

    downgraded = await client.put(plan_url, headers=root.headers, json={"plan": "free"})
    assert downgraded.json()["usage"]["repositories"] == {"used": 5, "limit": 3, "remaining": 0}
    over = await client.post(
        f"{API}/orgs/engines/repositories", headers=ada.headers, json={"clone_url": "https://140.82.112.3/octo/x.git"}
    )
    problem = _problem(over)
    assert over.status_code == 402
    assert {key: problem[key] for key in ("code", "resource", "limit", "used", "plan", "upgrade_to")} == {
        "code": "quota_exceeded",
        "resource": "repositories",
        "limit": 3,
        "used": 5,
        "plan": "free",
        "upgrade_to": "pro",
    }
    listed = await client.get(f"{API}/orgs/engines/repositories", headers=ada.headers)
    assert len(listed.json()["items"]) == 5  # what existed stays

    back = await client.put(plan_url, headers=root.headers, json={"plan": None})
    assert (back.json()["plan"], back.json()["assigned"]) == ("free", False)
    events = (
        await session.execute(
            select(AuditEvent.action, AuditEvent.actor_id, AuditEvent.details)
            .where(AuditEvent.org_id == engines.id, AuditEvent.action == "billing.plan_changed")
            .order_by(AuditEvent.created_at, AuditEvent.id)
        )
    ).all()
    changes = sorted((event.details["from"], event.details["to"], event.details["assigned"]) for event in events)
    assert changes == [("free", "free", False), ("free", "pro", True), ("pro", "free", True)]
    assert {event.actor_id for event in events} == {root.model.id}


async def test_the_default_plan_setting_and_an_unlimited_plan(
    make_client: Callable[..., Any], make_user: MakeUser, make_org: MakeOrg
) -> None:
    client = await make_client(DEFAULT_PLAN="enterprise")
    ada = await make_user("ada")
    await make_org(ada, slug="engines")
    for n in range(6):
        invited = await client.post(
            f"{API}/orgs/engines/invitations", headers=ada.headers, json={"email": f"p{n}@example.com"}
        )
        assert invited.status_code == 201, invited.text
    billing = (await client.get(f"{API}/orgs/engines/billing", headers=ada.headers)).json()
    assert (billing["plan"], billing["usage"]["seats"]) == ("enterprise", {"used": 7, "limit": None, "remaining": None})


async def test_the_top_plan_names_no_upgrade(
    make_client: Callable[..., Any], make_user: MakeUser, make_org: MakeOrg
) -> None:
    client = await make_client(DEFAULT_PLAN="enterprise", PLAN_LIMITS={"enterprise": {"seats": 1}})
    ada = await make_user("ada")
    await make_org(ada, slug="engines")
    refused = await client.post(f"{API}/orgs/engines/invitations", headers=ada.headers, json={"email": "b@example.com"})
    problem = _problem(refused)
    assert (refused.status_code, problem["resource"], problem["plan"], problem["upgrade_to"]) == (
        402,
        "seats",
        "enterprise",
        None,
    )
    assert (
        problem["detail"]
        == "This organization's Enterprise plan has 1 seat and 1 are taken (members and pending invitations)."
    )


async def test_the_set_plan_command(
    database_server: DatabaseServer, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    url = await database_server.clone("billing_cli")
    database = Database.from_settings(make_settings(DATABASE_URL=url))
    try:
        async with database.transaction() as session:
            org = Organization(name="Engines", slug="engines")
            session.add(org)
        env = {
            "DATABASE_URL": url,
            "SECRET_KEY": TEST_SECRET_KEY,
            "VAR_DIR": str(tmp_path / "var"),
            "LOG_LEVEL": "WARNING",
        }
        runner = CliRunner()
        done = await asyncio.to_thread(runner.invoke, cli, ["billing", "set-plan", "engines", "team"], env=env)
        assert (done.exit_code, done.output) == (0, "engines: free -> team\n")
        by_id = await asyncio.to_thread(runner.invoke, cli, ["billing", "set-plan", str(org.id), "default"], env=env)
        assert (by_id.exit_code, by_id.output) == (0, "engines: team -> free\n")
        missing = await asyncio.to_thread(runner.invoke, cli, ["billing", "set-plan", "nowhere", "pro"], env=env)
        assert missing.exit_code == 1
        assert "no organization 'nowhere'" in missing.output
        wrong = await asyncio.to_thread(runner.invoke, cli, ["billing", "set-plan", "engines", "gold"], env=env)
        assert wrong.exit_code == 2
        async with database.transaction(write=False) as session:
            assert await session.scalar(select(Organization.plan).where(Organization.slug == "engines")) is None
            actions = await session.scalars(
                select(AuditEvent.action).where(AuditEvent.org_id == org.id, AuditEvent.actor_id.is_(None))
            )
            assert list(actions) == ["billing.plan_changed", "billing.plan_changed"]
    finally:
        await database.dispose()


async def test_without_stripe_payments_answer_503_and_plans_still_work(
    client: httpx.AsyncClient, make_user: MakeUser, make_org: MakeOrg
) -> None:
    ada = await make_user("ada")
    await make_org(ada, slug="engines")
    for method, path, body in (
        ("POST", "/orgs/engines/billing/checkout", {"plan": "pro"}),
        ("POST", "/orgs/engines/billing/portal", None),
        ("GET", "/orgs/engines/billing/invoices", None),
    ):
        response = await client.request(method, f"{API}{path}", headers=ada.headers, json=body)
        assert (response.status_code, _problem(response)["code"]) == (503, "billing_not_configured"), path
    assert (await client.get(f"{API}/orgs/engines/billing", headers=ada.headers)).json()["plan"] == "free"


async def test_billing_routes_need_a_signed_in_caller_except_the_plans(client: httpx.AsyncClient) -> None:
    assert (await client.get(f"{API}/billing/plans")).status_code == 200
    for method, path in (
        ("GET", "/orgs/engines/billing"),
        ("POST", "/orgs/engines/billing/checkout"),
        ("POST", "/orgs/engines/billing/portal"),
        ("GET", "/orgs/engines/billing/invoices"),
        ("PUT", "/admin/orgs/engines/plan"),
    ):
        response = await client.request(method, f"{API}{path}", json={"plan": "pro"})
        assert (response.status_code, _problem(response)["code"]) == (401, "not_authenticated"), path
