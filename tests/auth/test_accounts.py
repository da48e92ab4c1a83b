from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from codepulse.auth.models import User
from codepulse.config import Settings
from tests.auth.helpers import PASSWORD, login, register
from tests.helpers import FakeClock, Mailbox


async def test_register_returns_a_session_and_the_user(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/v1/auth/register",
        json={"email": "Ada@Example.COM", "password": PASSWORD, "username": "Ada_L", "name": "Ada"},
    )
    assert response.status_code == 201
    body = response.json()
    assert body["token"].startswith("cp_")
    assert len(body["token"]) >= 3 + 43
    user = body["user"]
    assert (user["email"], user["username"], user["name"]) == ("ada@example.com", "ada_l", "Ada")
    assert user["email_verified"] is False
    assert user["timezone"] == "UTC"
    assert user["profile_public"] is False  # private by default
    assert "password_hash" not in user
    me = await client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {body['token']}"})
    assert me.status_code == 200
    assert me.json()["id"] == user["id"]


@pytest.mark.parametrize(
    ("password", "codes"),
    [
        ("short", {"password_too_short"}),
        ("x" * 257, {"password_too_long"}),
        ("password1234", {"password_too_common"}),
        ("grace@example.com", {"password_matches_identity"}),
        ("Grace_Hopper", {"password_matches_identity"}),
        ("1234567", {"password_too_short", "password_too_common"}),
    ],
)
async def test_password_policy_reports_each_broken_rule(
    client: httpx.AsyncClient, password: str, codes: set[str]
) -> None:
    response = await client.post(
        "/api/v1/auth/register",
        json={"email": "grace@example.com", "password": password, "username": "grace_hopper", "name": "Grace"},
    )
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "validation_failed"
    assert {e["code"] for e in body["errors"]} == codes
    assert {e["field"] for e in body["errors"]} == {"body.password"}


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"username": "ab"}, "body.username"),
        ({"username": "has space"}, "body.username"),
        ({"username": "x" * 31}, "body.username"),
        ({"username": "Me"}, "body.username"),
        ({"email": "not-an-email"}, "body.email"),
        ({"name": ""}, "body.name"),
    ],
)
async def test_register_validates_fields(client: httpx.AsyncClient, patch: dict[str, str], field: str) -> None:
    body = {"email": "lin@example.com", "password": PASSWORD, "username": "lin", "name": "Lin"} | patch
    response = await client.post("/api/v1/auth/register", json=body)
    assert response.status_code == 422
    assert field in {e["field"] for e in response.json()["errors"]}


async def test_email_and_username_are_unique_case_insensitively(client: httpx.AsyncClient) -> None:
    await register(client, "ada", email="ada@example.com")
    email_taken = await client.post(
        "/api/v1/auth/register",
        json={"email": "ADA@example.com", "password": PASSWORD, "username": "other", "name": "X"},
    )
    assert email_taken.status_code == 409
    assert email_taken.json()["code"] == "email_taken"
    username_taken = await client.post(
        "/api/v1/auth/register",
        json={"email": "other@example.com", "password": PASSWORD, "username": "ADA", "name": "X"},
    )
    assert username_taken.status_code == 409
    assert username_taken.json()["code"] == "username_taken"


async def test_login_by_email_or_username(client: httpx.AsyncClient) -> None:
    await register(client, "ada")
    by_username = await login(client, "ADA")
    by_email = await login(client, "Ada@Example.com")
    assert by_username.user["id"] == by_email.user["id"]
    assert by_username.token != by_email.token


async def test_unknown_user_and_wrong_password_look_the_same(client: httpx.AsyncClient) -> None:
    await register(client, "ada")
    wrong = await client.post("/api/v1/auth/login", json={"login": "ada", "password": "not-the-password-1"})
    unknown = await client.post("/api/v1/auth/login", json={"login": "nobody", "password": "not-the-password-1"})
    assert wrong.status_code == unknown.status_code == 401
    strip = {"request_id"}
    assert {k: v for k, v in wrong.json().items() if k not in strip} == {
        k: v for k, v in unknown.json().items() if k not in strip
    }
    assert wrong.json()["code"] == "invalid_credentials"
    assert wrong.headers["www-authenticate"] == "Bearer"


async def test_hash_is_upgraded_at_login_when_parameters_change(
    client: httpx.AsyncClient,
    make_settings: Callable[..., Settings],
    app_factory: Callable[[Settings], FastAPI],
    session: AsyncSession,
) -> None:
    await register(client, "ada")
    before = (await session.scalars(select(User.password_hash).where(User.username == "ada"))).one() or ""
    assert "t=1" in before
    stronger = app_factory(make_settings(PASSWORD_HASH_TIME_COST=2))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=stronger), base_url="http://t") as other:
        await login(other, "ada")
    session.expire_all()
    after = (await session.scalars(select(User.password_hash).where(User.username == "ada"))).one() or ""
    assert after != before
    assert "t=2" in after
    assert after.startswith("$argon2id$")
    await login(client, "ada")  # the new hash still verifies


async def test_me_requires_a_valid_bearer_token(client: httpx.AsyncClient) -> None:
    for headers in ({}, {"Authorization": "Bearer cp_nope"}, {"Authorization": "Basic abc"}, {"Authorization": "x"}):
        response = await client.get("/api/v1/auth/me", headers=headers)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.headers["content-type"] == "application/problem+json"


async def test_update_profile(client: httpx.AsyncClient) -> None:
    ada = await register(client, "ada")
    await register(client, "grace")
    response = await client.patch(
        "/api/v1/users/me",
        headers=ada.headers,
        json={
            "name": "Ada L.",
            "timezone": "Europe/London",
            "profile_public": False,
            "avatar_url": "https://img.example/a.png",
        },
    )
    assert response.status_code == 200
    body = response.json()
    assert (body["name"], body["timezone"], body["profile_public"]) == ("Ada L.", "Europe/London", False)
    bad_zone = await client.patch("/api/v1/users/me", headers=ada.headers, json={"timezone": "Mars/Olympus"})
    assert bad_zone.status_code == 422
    assert bad_zone.json()["errors"][0]["field"] == "body.timezone"
    taken = await client.patch("/api/v1/users/me", headers=ada.headers, json={"username": "GRACE"})
    assert taken.status_code == 409
    assert taken.json()["code"] == "username_taken"
    unknown_field = await client.patch("/api/v1/users/me", headers=ada.headers, json={"is_superuser": True})
    assert unknown_field.status_code == 422
    renamed = await client.patch("/api/v1/users/me", headers=ada.headers, json={"username": "countess"})
    assert renamed.json()["username"] == "countess"
    cleared = await client.patch("/api/v1/users/me", headers=ada.headers, json={"avatar_url": None})
    assert cleared.json()["avatar_url"] is None


async def test_public_profile_honours_privacy(client: httpx.AsyncClient) -> None:
    ada = await register(client, "ada")
    grace = await register(client, "grace")
    # A new account is private: only its owner sees it until it opts in.
    assert (await client.get("/api/v1/users/ada")).status_code == 404
    assert (await client.get("/api/v1/users/ada", headers=grace.headers)).status_code == 404
    assert (await client.get("/api/v1/users/ada", headers=ada.headers)).status_code == 200
    opted_in = await client.patch("/api/v1/users/me", headers=ada.headers, json={"profile_public": True})
    assert opted_in.status_code == 200
    assert opted_in.json()["profile_public"] is True
    public = await client.get("/api/v1/users/ada")
    assert public.status_code == 200
    assert set(public.json()) == {"username", "name", "avatar_url", "created_at"}
    await client.patch("/api/v1/users/me", headers=ada.headers, json={"profile_public": False})
    assert (await client.get("/api/v1/users/ada")).status_code == 404
    assert (await client.get("/api/v1/users/ada", headers=grace.headers)).status_code == 404
    assert (await client.get("/api/v1/users/ada", headers=ada.headers)).status_code == 200
    assert (await client.get("/api/v1/users/nobody")).json()["code"] == "user_not_found"


async def test_change_password_revokes_other_sessions(client: httpx.AsyncClient) -> None:
    first = await register(client, "ada")
    second = await login(client, "ada")
    wrong = await client.post(
        "/api/v1/auth/password",
        headers=first.headers,
        json={"current_password": "not-it-at-all", "new_password": "a-brand-new-secret-77"},
    )
    assert wrong.status_code == 422
    assert wrong.json()["errors"][0]["code"] == "wrong_password"
    weak = await client.post(
        "/api/v1/auth/password", headers=first.headers, json={"current_password": PASSWORD, "new_password": "short"}
    )
    assert weak.status_code == 422
    assert weak.json()["errors"][0]["field"] == "body.new_password"
    changed = await client.post(
        "/api/v1/auth/password",
        headers=first.headers,
        json={"current_password": PASSWORD, "new_password": "a-brand-new-secret-77"},
    )
    assert changed.status_code == 204
    assert (await client.get("/api/v1/auth/me", headers=first.headers)).status_code == 200
    assert (await client.get("/api/v1/auth/me", headers=second.headers)).status_code == 401
    await login(client, "ada", "a-brand-new-secret-77")


async def test_delete_account_removes_user_and_sessions(client: httpx.AsyncClient, session: AsyncSession) -> None:
    ada = await register(client, "ada")
    assert (await client.delete("/api/v1/users/me", headers=ada.headers)).status_code == 204
    assert (await client.get("/api/v1/auth/me", headers=ada.headers)).status_code == 401
    assert (await session.scalars(select(User).where(User.username == "ada"))).first() is None
    again = await register(client, "ada")  # the email and username are free again
    assert again.user["id"] != ada.user["id"]


async def test_email_verification_by_mail(client: httpx.AsyncClient, mailbox: Mailbox) -> None:
    ada = await register(client, "ada")
    await mailbox.deliver()
    # Registration mails the link at once.
    [message] = mailbox.messages_to("ada@example.com")
    assert message["Subject"] == "Confirm your email for codepulse"
    response = await client.post("/api/v1/auth/verify-email/request", headers=ada.headers)
    assert response.status_code == 202  # a new link on request; either works
    await mailbox.deliver()
    assert len(mailbox.messages_to("ada@example.com")) == 2
    token = mailbox.link_token(message, "http://127.0.0.1:8000/verify-email")
    verified = await client.post("/api/v1/auth/verify-email", json={"token": token})
    assert verified.status_code == 200
    assert verified.json()["email_verified"] is True
    replay = await client.post("/api/v1/auth/verify-email", json={"token": token})
    assert replay.status_code == 400
    assert replay.json()["code"] == "invalid_token"
    already = await client.post("/api/v1/auth/verify-email/request", headers=ada.headers)
    assert already.json()["detail"] == "Your email is already verified."
    await mailbox.deliver()
    assert len(mailbox.messages) == 2


async def test_verification_token_expires_after_24_hours(
    client: httpx.AsyncClient, mailbox: Mailbox, clock: FakeClock
) -> None:
    ada = await register(client, "ada")
    await client.post("/api/v1/auth/verify-email/request", headers=ada.headers)
    await mailbox.deliver()
    token = mailbox.link_token(mailbox.messages[-1], "/verify-email")
    clock.advance(hours=24, seconds=1)
    expired = await client.post("/api/v1/auth/verify-email", json={"token": token})
    assert expired.status_code == 400


async def test_password_reset_flow(client: httpx.AsyncClient, mailbox: Mailbox) -> None:
    ada = await register(client, "ada")
    other = await login(client, "ada")
    unknown = await client.post("/api/v1/auth/password-reset/request", json={"email": "nobody@example.com"})
    known = await client.post("/api/v1/auth/password-reset/request", json={"email": "ADA@example.com"})
    assert unknown.status_code == known.status_code == 202
    assert unknown.json() == known.json()
    await mailbox.deliver()
    [message] = [mail for mail in mailbox.messages if mail["Subject"] == "Reset your codepulse password"]
    assert message["To"] == "ada@example.com"
    token = mailbox.link_token(message, "/reset-password")
    weak = await client.post("/api/v1/auth/password-reset", json={"token": token, "new_password": "password"})
    assert weak.status_code == 422
    reset = await client.post(
        "/api/v1/auth/password-reset", json={"token": token, "new_password": "reset-and-renewed-2026"}
    )
    assert reset.status_code == 204
    for signed_in in (ada, other):
        assert (await client.get("/api/v1/auth/me", headers=signed_in.headers)).status_code == 401
    again = await login(client, "ada", "reset-and-renewed-2026")
    assert again.user["email_verified"] is True
    replay = await client.post(
        "/api/v1/auth/password-reset", json={"token": token, "new_password": "another-one-entirely-9"}
    )
    assert replay.status_code == 400


async def test_password_reset_token_expires_after_an_hour(
    client: httpx.AsyncClient, mailbox: Mailbox, clock: FakeClock
) -> None:
    await register(client, "ada")
    await client.post("/api/v1/auth/password-reset/request", json={"email": "ada@example.com"})
    await mailbox.deliver()
    token = mailbox.link_token(mailbox.messages[-1], "/reset-password")
    clock.advance(hours=1, seconds=1)
    response = await client.post(
        "/api/v1/auth/password-reset", json={"token": token, "new_password": "too-late-for-this-1"}
    )
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_token"


async def test_registration_reports_every_problem_in_one_answer(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/v1/auth/register", json={"email": "not-an-email", "password": "short", "username": "grace"}
    )
    assert response.status_code == 422
    problems = {(e["field"], e["code"]) for e in response.json()["errors"]}
    assert ("body.name", "missing") in problems
    assert ("body.password", "password_too_short") in problems
    assert "body.email" in {field for field, _ in problems}
    # The policy alone, when every field is there, still answers 422 with the policy's codes.
    weak = await client.post(
        "/api/v1/auth/register",
        json={"email": "grace@example.com", "password": "grace", "username": "grace", "name": "Grace"},
    )
    assert {e["code"] for e in weak.json()["errors"]} >= {"password_too_short", "password_matches_identity"}
