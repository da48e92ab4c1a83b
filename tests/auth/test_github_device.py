"""The CLI's GitHub device sign-in (`/auth/oauth/github/device/code` and `/token`) against the stub
GitHub (real loopback HTTP, GitHub's device-flow protocol) and the real app. The stub's device
clock moves only with `pass_time`: nothing here waits."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from codepulse.auth.device_flow import seal_device_code
from codepulse.auth.models import AuthSession, OAuthAccount, User
from codepulse.config import Settings
from codepulse.integrations.github_device import DEVICE_GRANT_TYPE, GitHubDeviceCode
from codepulse.security import SecretBox
from tests.factories import UserFactory
from tests.helpers import FakeClock
from tests.stubs.github import GitHubStub, StubEmail

DEVICE = "/api/v1/auth/oauth/github/device"


@pytest.fixture
async def client(
    github_settings: Settings, app_factory: Callable[[Settings], FastAPI]
) -> AsyncIterator[httpx.AsyncClient]:
    app = app_factory(github_settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as client,
    ):
        yield client


async def start(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.post(f"{DEVICE}/code")
    assert response.status_code == 200, response.text
    started: dict[str, Any] = response.json()
    return started


async def poll(
    client: httpx.AsyncClient, github_stub: GitHubStub, device_code: str, *, wait: float = 5, **fields: object
) -> httpx.Response:
    """One poll, `wait` seconds (of the stub's device clock) after the previous request."""
    github_stub.state.pass_time(wait)
    return await client.post(f"{DEVICE}/token", json={"device_code": device_code, **fields})


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert (body["status"], body["code"], body["type"]) == (status, code, f"urn:codepulse:problem:{code}")
    assert body["detail"]
    return body


async def test_start_asks_github_for_a_device_code_of_our_app_and_seals_it(
    client: httpx.AsyncClient, github_stub: GitHubStub
) -> None:
    started = await start(client)
    assert set(started) == {"device_code", "user_code", "verification_uri", "expires_in", "interval"}
    assert started["verification_uri"] == f"{github_stub.url}/login/device"
    assert (started["expires_in"], started["interval"]) == (900, 5)
    issued = github_stub.state.device_code_for(started["user_code"])
    # The CLI holds a sealed code, not GitHub's: it cannot redeem it at GitHub itself.
    assert issued.device_code not in started["device_code"]
    assert github_stub.state.device_requests == [
        {"client_id": "cp-test-github-client", "scope": "read:user user:email"}
    ]


async def test_pending_until_approved_then_a_new_account_gets_a_cli_session(
    client: httpx.AsyncClient,
    github_stub: GitHubStub,
    session: AsyncSession,
    github_settings: Settings,
    clock: FakeClock,
) -> None:
    octocat = github_stub.state.add_user("OctoCat", name="The Octocat")
    started = await start(client)
    pending = await poll(client, github_stub, started["device_code"])
    assert_problem(pending, 400, "authorization_pending")
    assert (await session.scalars(select(User))).first() is None

    github_stub.state.approve_device(started["user_code"].lower(), octocat)
    issued = await poll(client, github_stub, started["device_code"], name="laptop", expires_in_days=365)
    assert issued.status_code == 201, issued.text
    body = issued.json()
    # The shape `POST /auth/tokens` answers.
    assert set(body) == {"id", "name", "token", "expires_at", "created_at"}
    assert body["name"] == "laptop"
    assert body["token"].startswith("cp_")
    headers = {"Authorization": f"Bearer {body['token']}"}
    me = (await client.get("/api/v1/auth/me", headers=headers)).json()
    assert (me["username"], me["email"], me["email_verified"]) == ("octocat", "octocat@users.example.com", True)
    cli_session = await session.get_one(AuthSession, uuid.UUID(body["id"]))
    assert cli_session.kind == "cli"
    assert cli_session.expires_at == clock.now + timedelta(days=365)
    account = (await session.scalars(select(OAuthAccount))).one()
    assert (account.provider_user_id, account.login) == (str(octocat.id), "OctoCat")
    stored = SecretBox(github_settings.secret_key).decrypt(account.access_token_encrypted or "")
    assert github_stub.state.token_owner(stored) is not None  # GitHub's token, kept sealed
    polls = [fields for fields in github_stub.state.device_requests if "grant_type" in fields]
    assert len(polls) == 2
    assert all(
        fields.keys() == {"client_id", "device_code", "grant_type"} and fields["grant_type"] == DEVICE_GRANT_TYPE
        for fields in polls
    )  # no client secret: the device flow takes none

    # GitHub redeems a device code once.
    replay = await poll(client, github_stub, started["device_code"])
    assert_problem(replay, 400, "invalid_device_code")


async def test_a_linked_account_signs_in_and_keeps_its_browser_granted_token(
    client: httpx.AsyncClient, github_stub: GitHubStub, session: AsyncSession, github_settings: Settings
) -> None:
    octocat = github_stub.state.add_user("octocat", emails=[StubEmail("other@example.com", primary=True)])
    box = SecretBox(github_settings.secret_key)
    ada = UserFactory.create(username="ada", email="ada@example.com")
    await session.flush()
    session.add(
        OAuthAccount(
            user_id=ada.id,
            provider="github",
            provider_user_id=str(octocat.id),
            login="octocat",
            access_token_encrypted=box.encrypt("gho_granted_in_the_browser"),
            scopes="read:user,repo,user:email",
        )
    )
    await session.flush()
    started = await start(client)
    github_stub.state.approve_device(started["user_code"], octocat)
    issued = await poll(client, github_stub, started["device_code"])
    assert issued.status_code == 201, issued.text
    assert issued.json()["name"] == "GitHub device sign-in"
    me = await client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {issued.json()['token']}"})
    assert me.json()["id"] == str(ada.id)
    account = (await session.scalars(select(OAuthAccount))).one()
    await session.refresh(account)
    assert box.decrypt(account.access_token_encrypted or "") == "gho_granted_in_the_browser"
    assert account.scopes == "read:user,repo,user:email"
    assert (await session.scalars(select(User))).all() == [ada]


async def test_a_verified_account_is_linked_by_github_primary_verified_email(
    client: httpx.AsyncClient, github_stub: GitHubStub, session: AsyncSession
) -> None:
    ada = UserFactory.create(username="ada", email="ada@example.com")
    await session.flush()
    ada_gh = github_stub.state.add_user("ada-gh", emails=[StubEmail("Ada@Example.com", primary=True)])
    started = await start(client)
    github_stub.state.approve_device(started["user_code"], ada_gh)
    issued = await poll(client, github_stub, started["device_code"])
    assert issued.status_code == 201, issued.text
    me = await client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {issued.json()['token']}"})
    assert me.json()["username"] == "ada"
    account = (await session.scalars(select(OAuthAccount))).one()
    assert (account.user_id, account.provider_user_id) == (ada.id, str(ada_gh.id))


async def test_unverified_emails_link_nothing(
    client: httpx.AsyncClient, github_stub: GitHubStub, session: AsyncSession
) -> None:
    UserFactory.create(username="grace", email="grace@example.com", email_verified_at=None)
    await session.flush()
    grace_gh = github_stub.state.add_user("grace-gh", emails=[StubEmail("grace@example.com", primary=True)])
    shady = github_stub.state.add_user(
        "shady", emails=[StubEmail("shady@example.com", primary=True, verified=False), StubEmail("alt@example.com")]
    )
    for github_user, code in ((grace_gh, "account_email_unverified"), (shady, "github_email_unverified")):
        started = await start(client)
        github_stub.state.approve_device(started["user_code"], github_user)
        assert_problem(await poll(client, github_stub, started["device_code"]), 409, code)
    assert (await session.scalars(select(OAuthAccount))).first() is None
    assert len((await session.scalars(select(User))).all()) == 1


async def test_slow_down_answers_the_new_interval(client: httpx.AsyncClient, github_stub: GitHubStub) -> None:
    started = await start(client)
    too_soon = await poll(client, github_stub, started["device_code"], wait=2)
    body = assert_problem(too_soon, 400, "slow_down")
    assert body["interval"] == 10
    assert too_soon.headers["retry-after"] == "10"
    # The old interval is now too short; the new one is fine.
    assert_problem(await poll(client, github_stub, started["device_code"], wait=5), 400, "slow_down")
    assert_problem(await poll(client, github_stub, started["device_code"], wait=15), 400, "authorization_pending")
    # GitHub may throttle on its own, however long the client waited.
    github_stub.state.slow_down_device(started["user_code"])
    assert (
        assert_problem(await poll(client, github_stub, started["device_code"], wait=60), 400, "slow_down")["interval"]
        == 20
    )


async def test_declined_on_github_is_403_access_denied(client: httpx.AsyncClient, github_stub: GitHubStub) -> None:
    started = await start(client)
    github_stub.state.deny_device(started["user_code"])
    for _ in range(2):  # the code cannot be used again
        assert_problem(await poll(client, github_stub, started["device_code"]), 403, "access_denied")


async def test_expired_codes(client: httpx.AsyncClient, github_stub: GitHubStub, clock: FakeClock) -> None:
    octocat = github_stub.state.add_user("octocat")
    started = await start(client)
    github_stub.state.expire_device(started["user_code"])
    github_stub.state.approve_device(started["user_code"], octocat)  # too late
    assert_problem(await poll(client, github_stub, started["device_code"]), 400, "expired_token")

    # Past its expires_in, the server refuses the code itself, without asking GitHub.
    late = await start(client)
    asked = len(github_stub.state.device_requests)
    clock.advance(seconds=900)
    assert_problem(await poll(client, github_stub, late["device_code"]), 400, "expired_token")
    assert len(github_stub.state.device_requests) == asked


async def test_only_codes_this_server_sealed_for_its_client_id_are_polled(
    client: httpx.AsyncClient, github_stub: GitHubStub, github_settings: Settings, clock: FakeClock
) -> None:
    started = await start(client)
    github_code = github_stub.state.device_code_for(started["user_code"]).device_code
    box = SecretBox(github_settings.secret_key)
    code = GitHubDeviceCode(device_code=github_code, user_code="X", verification_uri="x", expires_in=900, interval=5)
    forged = [
        github_code,  # GitHub's own device code
        "not-a-code",
        started["device_code"][:-4] + "AAAA",  # tampered
        seal_device_code(
            SecretBox("another-server-secret-key-0123456789abcdef"), "cp-test-github-client", code, clock()
        ),
        seal_device_code(box, "another-client-id", code, clock()),  # sealed before GITHUB_CLIENT_ID changed
        box.encrypt(f'{{"d": "{github_code}"}}'),  # sealed by us for something else
    ]
    for device_code in forged:
        assert_problem(await poll(client, github_stub, device_code), 400, "invalid_device_code")
    assert not [fields for fields in github_stub.state.device_requests if "grant_type" in fields]
    malformed = await client.post(f"{DEVICE}/token", json={"device_code": ""})
    assert_problem(malformed, 422, "validation_failed")


async def test_polls_and_starts_are_rate_limited_per_address(
    client: httpx.AsyncClient, github_stub: GitHubStub
) -> None:
    statuses = [(await client.post(f"{DEVICE}/token", json={"device_code": "guess"})).status_code for _ in range(21)]
    assert statuses == [400] * 20 + [429]
    limited = await client.post(f"{DEVICE}/token", json={"device_code": "guess"})
    assert_problem(limited, 429, "rate_limited")
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    starts = [(await client.post(f"{DEVICE}/code")).status_code for _ in range(11)]
    assert starts == [200] * 10 + [429]


async def test_a_device_flow_github_refuses_or_cannot_serve(
    client: httpx.AsyncClient,
    github_stub: GitHubStub,
    make_settings: Callable[..., Settings],
    app_factory: Callable[[Settings], FastAPI],
) -> None:
    github_stub.state.device_flow_enabled = False
    assert_problem(await client.post(f"{DEVICE}/code"), 502, "github_device_flow_refused")
    # GitHub unreachable: a closed loopback port.
    down = app_factory(
        make_settings(
            **{
                **github_stub.settings_overrides(),
                "GITHUB_URL": "http://127.0.0.1:9",
                "GITHUB_API_URL": "http://127.0.0.1:9",
            }
        )
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=down), base_url="http://t") as other:
        assert_problem(await other.post(f"{DEVICE}/code"), 503, "github_unavailable")


async def test_not_configured_is_404(
    make_settings: Callable[..., Settings], app_factory: Callable[[Settings], FastAPI]
) -> None:
    app = app_factory(make_settings())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        assert_problem(await client.post(f"{DEVICE}/code"), 404, "oauth_not_configured")
        assert_problem(
            await client.post(f"{DEVICE}/token", json={"device_code": "anything"}), 404, "oauth_not_configured"
        )


async def test_codes_and_tokens_are_never_logged(
    client: httpx.AsyncClient, github_stub: GitHubStub, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    octocat = github_stub.state.add_user("octocat")
    started = await start(client)
    github_code = github_stub.state.device_code_for(started["user_code"]).device_code
    await poll(client, github_stub, started["device_code"])
    github_stub.state.approve_device(started["user_code"], octocat)
    issued = await poll(client, github_stub, started["device_code"])
    assert issued.status_code == 201
    github_token = next(iter(github_stub.state.tokens))
    logged = "\n".join(f"{record.getMessage()} {record.__dict__}" for record in caplog.records)
    assert "auth.github_device_signed_in" in logged
    for secret in (started["device_code"], github_code, github_token, issued.json()["token"], started["user_code"]):
        assert secret not in logged
