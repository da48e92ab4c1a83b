"""Helpers of the web dashboard's tests: the CSRF token of a rendered page, form posts."""

from __future__ import annotations

import re

import httpx

from codepulse.web.session import SESSION_COOKIE

_CSRF_FIELD = re.compile(r'name="csrf_token" value="([0-9a-f]+)"')
_CSRF_META = re.compile(r'<meta name="csrf-token" content="([0-9a-f]*)">')


def csrf_of(html: str) -> str:
    match = _CSRF_FIELD.search(html) or _CSRF_META.search(html)
    assert match is not None, "no CSRF token on the page"
    assert match.group(1), "an empty CSRF token"
    return match.group(1)


async def form_token(client: httpx.AsyncClient, path: str) -> str:
    page = await client.get(path)
    assert page.status_code == 200, page.text
    return csrf_of(page.text)


async def sign_up(client: httpx.AsyncClient, username: str, password: str) -> httpx.Response:
    token = await form_token(client, "/sign-up")
    data = {
        "csrf_token": token,
        "email": f"{username}@example.com",
        "username": username,
        "name": username.title(),
        "password": password,
    }
    return await client.post("/sign-up", data=data)


def use_session(client: httpx.AsyncClient, token: str) -> None:
    """Sign the client's browser in with a session token (as the sign-in form's cookie would)."""
    client.cookies.set(SESSION_COOKIE, token)


def set_cookie_headers(response: httpx.Response, name: str) -> list[str]:
    return [value for value in response.headers.get_list("set-cookie") if value.startswith(f"{name}=")]
