"""The superusers' account administration (`/api/v1/admin/users`): the list and its filters, one
account's detail, disabling (every session and CLI token ends, every sign-in path answers 401
`account_disabled`), the last-superuser rules and the audit trail.

Non-superusers are refused every one of these routes in tests/test_isolation.py; streams of a
disabled account are closed in tests/auth/test_admin_users_live.py and tests/scans/test_live.py.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from datetime import date
from decimal import Decimal
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from codepulse.auth.models import AuthSession, User
from codepulse.config import Settings
from codepulse.orgs.models import AuditEvent
from codepulse.usage.models import UsageDaily
from tests.auth.helpers import PASSWORD, SignedIn, login, register
from tests.auth.test_github_device import poll, start
from tests.auth.test_oauth import sign_in
from tests.factories import Account, MakeMember, MakeOrg, MakeUser
from tests.helpers import FakeClock
from tests.stubs.github import GitHubStub, StubEmail

USERS = "/api/v1/admin/users"


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert (body["status"], body["code"]) == (status, code)
    return body


@pytest.fixture
async def admin(make_user: MakeUser) -> Account:
    return await make_user("root", is_superuser=True)


async def patch(client: httpx.AsyncClient, admin: SignedIn, user_id: str, **changes: bool) -> httpx.Response:
    return await client.patch(f"{USERS}/{user_id}", headers=admin.headers, json=changes)


async def disable(client: httpx.AsyncClient, admin: SignedIn, user_id: str) -> dict[str, Any]:
    response = await patch(client, admin, user_id, disabled=True)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


# --- the list and one account ------------------------------------------------------------------


async def test_the_list_searches_email_username_and_name_and_filters(
    client: httpx.AsyncClient, admin: Account, make_user: MakeUser
) -> None:
    ada = await make_user("ada", name="Ada Lovelace")
    await make_user("grace", name="Grace Hopper", email="admiral@navy.example")
    await make_user("alan", name="Alan Turing", is_superuser=True)
    await disable(client, admin, str(ada.model.id))

    async def usernames(**params: Any) -> list[str]:
        response = await client.get(USERS, headers=admin.headers, params=params)
        assert response.status_code == 200, response.text
        return [item["username"] for item in response.json()["items"]]

    assert await usernames() == ["alan", "grace", "ada", "root"]  # newest first
    assert await usernames(q="LOVELACE") == ["ada"]  # name, any case
    assert await usernames(q="navy") == ["grace"]  # email
    assert await usernames(q="ala") == ["alan"]  # username
    assert await usernames(q="%") == []  # a literal, not a wildcard
    assert await usernames(superuser=True) == ["alan", "root"]
    assert await usernames(superuser=False) == ["grace", "ada"]
    assert await usernames(disabled=True) == ["ada"]
    assert await usernames(disabled=False, superuser=False) == ["grace"]

    first = (await client.get(USERS, headers=admin.headers, params={"limit": 3})).json()
    rest = (await client.get(USERS, headers=admin.headers, params={"cursor": first["next_cursor"]})).json()
    assert [item["username"] for item in rest["items"]] == ["root"]
    assert rest["next_cursor"] is None
    item = first["items"][-1]
    assert (item["username"], item["disabled"], item["is_superuser"]) == ("ada", True, False)
    assert item["disabled_at"] is not None


async def test_one_account_with_its_organizations_sessions_and_usage(
    client: httpx.AsyncClient,
    session: AsyncSession,
    admin: Account,
    make_org: MakeOrg,
    make_member: MakeMember,
    clock: FakeClock,
) -> None:
    owner = await register(client, "owner")
    engines = await make_org(owner, slug="engines", name="Engines")
    ada = await make_member(engines, "viewer", "ada")
    await make_org(ada.model, slug="ada-labs", name="Ada Labs")
    cli = await client.post("/api/v1/auth/tokens", headers=ada.headers, json={"name": "laptop"})
    assert cli.status_code == 201, cli.text
    for day, tokens in ((date(2026, 11, 30), 1000), (date(2026, 12, 1), 500)):
        session.add(
            UsageDaily(
                user_id=ada.model.id,
                day=day,
                source="claude-code",
                model="claude-sonnet-4",
                input_tokens=tokens,
                output_tokens=10,
                cache_creation_5m_tokens=0,
                cache_creation_1h_tokens=0,
                cache_read_tokens=0,
                reasoning_tokens=0,
                cost_nanousd=2_000_000_000,
                records=3,
                unpriced_records=0,
            )
        )
    await session.flush()

    response = await client.get(f"{USERS}/{ada.model.id}", headers=admin.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["id"], body["username"], body["email"]) == (str(ada.model.id), "ada", ada.model.email)
    assert (body["disabled"], body["is_superuser"]) == (False, False)
    assert sorted((org["slug"], org["role"]) for org in body["organizations"]) == [
        ("ada-labs", "owner"),
        ("engines", "viewer"),
    ]
    assert body["sessions_count"] == 2  # the factory's web session and the CLI token
    assert body["last_activity_at"] is not None
    usage = body["usage"]
    assert (usage["records"], usage["active_days"], usage["tokens"]["input"]) == (6, 2, 1500)
    assert Decimal(usage["cost_usd"]) == 4

    await disable(client, admin, str(ada.model.id))
    after = (await client.get(f"{USERS}/{ada.model.id}", headers=admin.headers)).json()
    assert (after["disabled"], after["sessions_count"]) == (True, 0)

    missing = await client.get(f"{USERS}/{uuid.uuid4()}", headers=admin.headers)
    assert_problem(missing, 404, "user_not_found")
    assert_problem(await patch(client, admin, str(uuid.uuid4()), disabled=True), 404, "user_not_found")


# --- disabling -----------------------------------------------------------------------------------


@pytest.fixture
async def cached_client(
    make_settings: Callable[..., Settings], app_factory: Callable[[Settings], FastAPI]
) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its auth cache on, as in production."""
    app = app_factory(make_settings(AUTH_CACHE_SECONDS=60))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as client,
    ):
        yield client


async def test_disabling_ends_every_session_and_cli_token_at_once_and_refuses_sign_in(
    cached_client: httpx.AsyncClient, session: AsyncSession, admin: Account
) -> None:
    client = cached_client
    ada = await register(client, "ada")
    laptop = await client.post("/api/v1/auth/tokens", headers=ada.headers, json={"name": "laptop"})
    cli = SignedIn(laptop.json()["token"], ada.user)
    for who in (ada, cli):  # both authenticated, and now in the auth cache
        assert (await client.get("/api/v1/auth/me", headers=who.headers)).status_code == 200

    body = await disable(client, admin, ada.user["id"])
    assert (body["disabled"], body["username"]) == (True, "ada")

    for who in (ada, cli):  # a read (the cache's path) and a write: the same 401
        assert_problem(await client.get("/api/v1/auth/me", headers=who.headers), 401, "account_disabled")
        denied = await client.post("/api/v1/auth/tokens", headers=who.headers, json={"name": "another"})
        assert_problem(denied, 401, "account_disabled")
    sessions = (
        await session.scalars(select(AuthSession).where(AuthSession.user_id == uuid.UUID(ada.user["id"])))
    ).all()
    assert sessions
    assert all(row.revoked_at is not None for row in sessions)

    # Password sign-in: the right password is told the account is disabled; a wrong one learns nothing.
    refused = await client.post("/api/v1/auth/login", json={"login": "ada", "password": PASSWORD})
    assert_problem(refused, 401, "account_disabled")
    wrong = await client.post("/api/v1/auth/login", json={"login": "ada", "password": "not-the-password-at-all"})
    assert_problem(wrong, 401, "invalid_credentials")

    # Enabled again: a new sign-in works; the ended sessions stay ended.
    enabled = await patch(client, admin, ada.user["id"], disabled=False)
    assert enabled.status_code == 200, enabled.text
    assert enabled.json()["disabled_at"] is None
    again = await login(client, "ada")
    assert (await client.get("/api/v1/auth/me", headers=again.headers)).status_code == 200
    assert_problem(await client.get("/api/v1/auth/me", headers=ada.headers), 401, "session_revoked")


async def test_changes_are_audited_with_the_acting_superuser(
    client: httpx.AsyncClient, session: AsyncSession, admin: Account, make_user: MakeUser
) -> None:
    ada = await make_user("ada")
    ada_id = str(ada.model.id)
    await disable(client, admin, ada_id)
    assert (await patch(client, admin, ada_id, disabled=True)).status_code == 200  # unchanged: not audited
    assert (await patch(client, admin, ada_id, disabled=False, is_superuser=True)).status_code == 200
    assert (await patch(client, admin, ada_id, is_superuser=False)).status_code == 200

    events = (
        await session.scalars(select(AuditEvent).where(AuditEvent.target_id == ada_id).order_by(AuditEvent.created_at))
    ).all()
    assert [event.action for event in events] == [
        "user.disabled",
        "user.enabled",
        "user.superuser_granted",
        "user.superuser_revoked",
    ]
    assert {(event.org_id, event.actor_id, event.target_type) for event in events} == {(None, admin.model.id, "user")}
    assert events[0].details == {"username": "ada", "sessions_revoked": 1}


# --- the last superuser --------------------------------------------------------------------------


async def test_the_last_superuser_can_be_neither_demoted_nor_disabled(
    client: httpx.AsyncClient, session: AsyncSession, admin: Account, make_user: MakeUser
) -> None:
    root = str(admin.model.id)
    assert_problem(await patch(client, admin, root, is_superuser=False), 409, "last_superuser")
    assert_problem(await patch(client, admin, root, disabled=True), 409, "cannot_disable_self")

    alan = await make_user("alan", is_superuser=True)
    # A superuser never disables themselves, even with another one left.
    assert_problem(await patch(client, alan, str(alan.model.id), disabled=True), 409, "cannot_disable_self")
    # Another enabled superuser: either may be demoted (themselves too), once.
    demoted = await patch(client, alan, str(alan.model.id), is_superuser=False)
    assert demoted.status_code == 200, demoted.text
    assert demoted.json()["is_superuser"] is False
    assert_problem(await patch(client, admin, root, is_superuser=False), 409, "last_superuser")

    # A disabled superuser does not count: they cannot sign in to act.
    grace = await make_user("grace", is_superuser=True)
    await disable(client, admin, str(grace.model.id))
    assert_problem(await patch(client, admin, root, is_superuser=False), 409, "last_superuser")
    # ... and demoting or enabling them again needs no other superuser.
    assert (await patch(client, admin, str(grace.model.id), is_superuser=False)).status_code == 200

    user = await session.get_one(User, admin.model.id, populate_existing=True)
    assert (user.is_superuser, user.disabled_at) == (True, None)


async def test_an_unknown_field_or_a_non_boolean_is_a_422(client: httpx.AsyncClient, admin: Account) -> None:
    root = str(admin.model.id)
    assert_problem(
        await client.patch(f"{USERS}/{root}", headers=admin.headers, json={"email": "x"}), 422, "validation_failed"
    )
    bad = await client.patch(f"{USERS}/{root}", headers=admin.headers, json={"disabled": "maybe"})
    assert_problem(bad, 422, "validation_failed")


# --- GitHub: the browser flow, the server-driven device flow, a device-flow token ----------------


@pytest.fixture
async def github_client(
    github_settings: Settings, app_factory: Callable[[Settings], FastAPI]
) -> AsyncIterator[httpx.AsyncClient]:
    app = app_factory(github_settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as client,
    ):
        yield client


async def test_a_disabled_account_cannot_sign_in_with_github_on_any_path(
    github_client: httpx.AsyncClient, github_stub: GitHubStub, admin: Account, make_user: MakeUser
) -> None:
    client = github_client
    ada = await make_user("ada", email="ada@example.com")
    ada_gh = github_stub.state.add_user("ada-gh", emails=[StubEmail("ada@example.com", primary=True)])
    # Linked by its verified email through the browser flow, while enabled.
    github_stub.state.sign_in(ada_gh)
    _, signed_in = await sign_in(client)
    assert signed_in is not None
    assert signed_in.user["id"] == str(ada.model.id)

    await disable(client, admin, str(ada.model.id))

    # The browser flow: back on the dashboard with the problem's code, and no exchange code.
    github_stub.state.sign_in(ada_gh)
    params, refused = await sign_in(client)
    assert refused is None
    assert params["error"] == ["account_disabled"]
    assert "code" not in params

    # The CLI handing over a device-flow token of our app.
    token = github_stub.state.issue_token(ada_gh)
    device = await client.post("/api/v1/auth/oauth/github/device", json={"access_token": token})
    body = assert_problem(device, 401, "account_disabled")
    assert body["error"] == "invalid_token"

    # The server-driven device flow.
    started = await start(client)
    github_stub.state.approve_device(started["user_code"], ada_gh)
    assert_problem(await poll(client, github_stub, started["device_code"]), 401, "account_disabled")
