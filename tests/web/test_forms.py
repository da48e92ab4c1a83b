"""The sign-in and sign-up forms: the API's validation shown beside each field, and sign-in's
rate limits shared with `POST /api/v1/auth/login`."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx

from tests.auth.helpers import PASSWORD, register
from tests.web.helpers import form_token, sign_up


def field_errors(html: str) -> dict[str, str]:
    return {
        field: re.sub(r"<[^>]+>", " ", body)
        for field, body in re.findall(r'data-field="(\w+)"[^>]*>(.*?)</(?:ul|div)>', html, re.DOTALL)
    }


async def test_sign_up_shows_every_problem_beside_its_field(client: httpx.AsyncClient) -> None:
    token = await form_token(client, "/sign-up")
    data = {"csrf_token": token, "email": "not-an-email<b>", "username": "A", "name": "", "password": "short"}
    response = await client.post("/sign-up", data=data)
    assert response.status_code == 422
    errors = field_errors(response.text)
    assert set(errors) == {"email", "username", "name", "password"}
    assert "valid email address" in errors["email"]
    assert "use 3 to 30 of a-z" in errors["username"]
    assert "at least 10 characters" in errors["password"]
    # What was typed is kept (escaped), the password never.
    assert 'value="not-an-email&lt;b&gt;"' in response.text
    assert 'value="short"' not in response.text
    assert 'aria-invalid="true"' in response.text


async def test_sign_up_conflicts_and_password_policy(client: httpx.AsyncClient) -> None:
    await register(client, "ada")
    taken = await sign_up(client, "ada", PASSWORD)
    assert taken.status_code == 409
    assert "already exists" in field_errors(taken.text)["email"]
    token = await form_token(client, "/sign-up")
    data = {"csrf_token": token, "email": "bob@example.com", "username": "ada", "name": "Bob", "password": PASSWORD}
    username_taken = await client.post("/sign-up", data=data)
    assert (username_taken.status_code, field_errors(username_taken.text)["username"].strip()) == (
        409,
        "This username is taken.",
    )
    common = await sign_up(client, "carol", "password1234")
    assert common.status_code == 422
    assert "password" in field_errors(common.text)


async def test_sign_in_errors(client: httpx.AsyncClient) -> None:
    await register(client, "ada")
    token = await form_token(client, "/sign-in")
    empty = await client.post("/sign-in", data={"csrf_token": token, "login": "", "password": ""})
    assert empty.status_code == 422
    assert "login" in field_errors(empty.text)
    wrong = await client.post("/sign-in", data={"csrf_token": token, "login": "ada", "password": "wrong-password-x"})
    assert wrong.status_code == 401
    assert field_errors(wrong.text)["form"].strip() == "The login or password is wrong."
    assert 'value="ada"' in wrong.text


async def test_sign_in_shares_the_apis_rate_limits(client: httpx.AsyncClient) -> None:
    await register(client, "ada")
    token = await form_token(client, "/sign-in")
    for _ in range(5):  # the per-account limit: 5 failures a minute
        failed = await client.post(
            "/sign-in", data={"csrf_token": token, "login": "ada", "password": "wrong-password-x"}
        )
        assert failed.status_code == 401
    limited = await client.post("/sign-in", data={"csrf_token": token, "login": "ada", "password": PASSWORD})
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) >= 1
    assert "Too many requests" in limited.text
    # ...and the API counts the form's failures: it is not a way around them, nor the other way.
    api = await client.post("/api/v1/auth/login", json={"login": "ada@example.com", "password": PASSWORD})
    assert api.status_code == 429


async def test_a_form_body_is_bounded(client: httpx.AsyncClient) -> None:
    token = await form_token(client, "/sign-in")
    huge = await client.post("/sign-in", data={"csrf_token": token, "login": "x" * 100_000, "password": "y"})
    _too_large_page(huge)

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the limit counts what arrives
        yield b"login="
        yield b"x" * 70_000

    streamed = await client.post(
        "/sign-in",
        content=chunks(),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    _too_large_page(streamed)
    # The API keeps its problem answer for the same refusal.
    api = await client.post(
        "/api/v1/auth/login", content=b"x" * 2_000_000, headers={"content-type": "application/json"}
    )
    assert (api.status_code, api.headers["content-type"]) == (413, "application/problem+json")
    assert api.json()["code"] == "payload_too_large"


def _too_large_page(response: httpx.Response) -> None:
    """A form over the limit is refused with an HTML page, whichever layer refuses it."""
    assert response.status_code == 413
    assert response.headers["content-type"].startswith("text/html")
    assert 'data-status="413"' in response.text
    assert "That was too much to send" in response.text
    assert response.headers["content-security-policy"].startswith("default-src 'self'")
