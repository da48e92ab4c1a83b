"""Browser sign-in over the ASGI app: the forms, the session cookie and its flags, CSRF, the
pages' security headers, redirects when signed out, and the cookie never accepted by the API."""

from __future__ import annotations

import re
from collections.abc import Callable

import httpx
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession

from codepulse.auth import service as auth_service
from codepulse.config import Settings
from codepulse.web.session import SESSION_COOKIE
from tests.auth.helpers import PASSWORD
from tests.factories import MakeUser
from tests.helpers import FakeClock
from tests.web.helpers import csrf_of, form_token, set_cookie_headers, sign_up, use_session

STRONG_KEY = "Zx8-" + "q7RkT2mWv9LpB4nY" * 3


async def test_sign_up_sign_out_and_sign_in_again(client: httpx.AsyncClient) -> None:
    signed_up = await sign_up(client, "ada", PASSWORD)
    assert (signed_up.status_code, signed_up.headers["location"]) == (303, "/")
    [cookie] = set_cookie_headers(signed_up, SESSION_COOKIE)
    flags = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "path=/", "samesite=lax"} <= flags
    assert "secure" not in flags
    max_age = int(next(flag for flag in flags if flag.startswith("max-age="))[8:])
    assert 89 * 86400 < max_age <= 90 * 86400  # a web session's absolute lifetime
    token = client.cookies[SESSION_COOKIE]

    overview = await client.get("/")
    assert overview.status_code == 200
    assert 'data-testid="connect-cli"' in overview.text
    assert "codepulse login --server http://testserver" in overview.text
    # The cookie's token is a web session of the auth slice: the API takes it as a bearer.
    me = await client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert me.json()["username"] == "ada"

    signed_out = await client.post("/sign-out", data={"csrf_token": csrf_of(overview.text)})
    assert (signed_out.status_code, signed_out.headers["location"]) == (303, "/sign-in")
    assert SESSION_COOKIE not in client.cookies
    # Ended on the server: the token is dead everywhere, not just forgotten by the browser.
    revoked = await client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert (revoked.status_code, revoked.json()["code"]) == (401, "session_revoked")
    assert (await client.get("/")).headers["location"] == "/sign-in"

    for login in ("ada", "ADA@example.com"):
        csrf = await form_token(client, "/sign-in?next=/overview/usage")
        signed_in = await client.post(
            "/sign-in", data={"csrf_token": csrf, "login": login, "password": PASSWORD, "next": "/overview/usage"}
        )
        assert (signed_in.status_code, signed_in.headers["location"]) == (303, "/overview/usage")
        assert (await client.get("/")).status_code == 200
        client.cookies.delete(SESSION_COOKIE)


async def test_next_stays_on_this_site(client: httpx.AsyncClient) -> None:
    await sign_up(client, "ada", PASSWORD)
    client.cookies.delete(SESSION_COOKIE)
    for evil in ("//evil.test/x", "https://evil.test/", "/\\evil.test", "javascript:alert(1)"):
        csrf = await form_token(client, "/sign-in")
        response = await client.post(
            "/sign-in", data={"csrf_token": csrf, "login": "ada", "password": PASSWORD, "next": evil}
        )
        assert response.headers["location"] == "/", evil
        client.cookies.delete(SESSION_COOKIE)


async def test_cookies_are_secure_in_production(
    make_settings: Callable[..., Settings], app_factory: Callable[[Settings], FastAPI]
) -> None:
    app = app_factory(make_settings(ENVIRONMENT="production", SECRET_KEY=STRONG_KEY, MAIL_DISABLED=True))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://testserver") as client,
    ):
        page = await client.get("/sign-up")
        [csrf_cookie] = set_cookie_headers(page, "codepulse_csrf")
        assert "secure" in csrf_cookie.lower()
        assert page.headers["strict-transport-security"].startswith("max-age=")
        response = await sign_up(client, "ada", PASSWORD)
        [cookie] = set_cookie_headers(response, SESSION_COOKIE)
        flags = {part.strip().lower() for part in cookie.split(";")[1:]}
        assert {"httponly", "secure", "samesite=lax"} <= flags


async def test_pages_send_a_strict_csp_and_no_inline_script(client: httpx.AsyncClient, make_user: MakeUser) -> None:
    ada = await make_user("ada")
    pages = [await client.get("/sign-in"), await client.get("/sign-up"), await client.get("/nope")]
    use_session(client, ada.token)
    pages.append(await client.get("/"))
    for page in pages:
        csp = page.headers["content-security-policy"]
        directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
        assert directives["default-src"] == "'self'"
        assert directives["script-src"] == "'self'"
        assert directives["style-src"] == "'self'"
        assert directives["frame-ancestors"] == "'none'"
        assert directives["object-src"] == "'none'"
        assert "unsafe" not in csp
        assert page.headers["x-frame-options"] == "DENY"
        assert page.headers["x-content-type-options"] == "nosniff"
        assert page.headers["referrer-policy"] == "no-referrer"
        assert page.headers["cache-control"] == "no-store"
        html = page.text
        # Every script is a file of ours or a JSON data block; no inline handler or style.
        for tag in re.findall(r"<script\b[^>]*>", html):
            assert 'src="/static/' in tag or 'type="application/json"' in tag, tag
        assert not re.search(r"\son[a-z]+\s*=", html)
        assert " style=" not in html
        assert "<style" not in html
    # The API keeps its own, stricter policy.
    api = await client.get("/api/v1/health")
    assert api.headers["content-security-policy"].startswith("default-src 'none'")


async def test_forms_without_the_right_csrf_token_are_refused(
    client: httpx.AsyncClient, make_user: MakeUser, session: AsyncSession
) -> None:
    # Before sign-in: the token must match the browser's csrf cookie.
    token = await form_token(client, "/sign-up")
    data = {"email": "eve@example.com", "username": "eve", "name": "Eve", "password": PASSWORD}
    for refused_with in (
        {},
        {"csrf_token": "0" * 64},
        {"csrf_token": token[:-1] + ("1" if token.endswith("0") else "0")},
    ):
        refused = await client.post("/sign-up", data={**data, **refused_with})
        assert refused.status_code == 403
        assert refused.headers["content-type"].startswith("text/html")
        assert "This form has expired" in refused.text
    client.cookies.delete("codepulse_csrf")  # a cross-site post has no cookie of ours
    assert (await client.post("/sign-up", data={**data, "csrf_token": token})).status_code == 403
    assert await auth_service.user_by_username(session, "eve") is None

    # Signed in: the token is the session's; another session's does not do.
    ada, bob = await make_user("ada"), await make_user("bob")
    use_session(client, bob.token)
    bobs_token = csrf_of((await client.get("/")).text)
    use_session(client, ada.token)
    for refused_with in ({}, {"csrf_token": bobs_token}):
        refused = await client.post("/sign-out", data=refused_with)
        assert refused.status_code == 403
    # The header htmx sends is accepted like the field; nothing was signed out before.
    page = await client.get("/")
    assert page.status_code == 200
    signed_out = await client.post("/sign-out", headers={"X-CSRF-Token": csrf_of(page.text)})
    assert signed_out.status_code == 303


async def test_the_api_never_accepts_the_cookie(client: httpx.AsyncClient, make_user: MakeUser) -> None:
    ada = await make_user("ada")
    use_session(client, ada.token)
    assert (await client.get("/")).status_code == 200
    for path in ("/api/v1/auth/me", "/api/v1/dashboard/overview", "/api/v1/auth/sessions"):
        response = await client.get(path)
        assert (response.status_code, response.json()["code"]) == (401, "not_authenticated"), path
    posted = await client.post("/api/v1/auth/logout")
    assert posted.status_code == 401


async def test_signed_out_visitors_are_sent_to_sign_in(
    client: httpx.AsyncClient, make_user: MakeUser, session: AsyncSession, clock: FakeClock
) -> None:
    assert (await client.get("/")).headers["location"] == "/sign-in"
    deep = await client.get("/overview/usage?range=7d")
    assert (deep.status_code, deep.headers["location"]) == (303, "/sign-in?next=/overview/usage%3Frange%3D7d")
    partial = await client.get("/overview/usage", headers={"HX-Request": "true"})
    assert (partial.status_code, partial.headers["hx-redirect"]) == (204, "/sign-in?next=/overview/usage")

    # A revoked session, a disabled account and an expired session all end on the sign-in page,
    # and the dead cookie is dropped.
    revoked = await make_user("rev")
    await client.post("/api/v1/auth/logout", headers=revoked.headers)
    disabled = await make_user("dis")
    disabled.model.disabled_at = clock()
    await session.flush()
    expired = await make_user("exp")
    for who, advance in ((revoked, 0), (disabled, 0), (expired, 31)):
        clock.advance(days=advance)
        use_session(client, who.token)
        response = await client.get("/")
        assert (response.status_code, response.headers["location"]) == (303, "/sign-in"), who.user["username"]
        [dropped] = set_cookie_headers(response, SESSION_COOKIE)
        assert "max-age=0" in dropped.lower()


async def test_signing_in_again_ends_the_session_the_cookie_held(client: httpx.AsyncClient) -> None:
    """Signing in over a live session (another tab's sign-in form, another account) replaces the
    cookie: the replaced session ends on the server instead of living on, unseen."""
    csrf = await form_token(client, "/sign-in")  # the pre-sign-in token, kept by the browser's cookie
    await sign_up(client, "bob", PASSWORD)
    client.cookies.delete(SESSION_COOKIE)
    await sign_up(client, "ada", PASSWORD)
    adas = client.cookies[SESSION_COOKIE]
    for login in ("bob", "ada"):
        previous = client.cookies[SESSION_COOKIE]
        signed_in = await client.post("/sign-in", data={"csrf_token": csrf, "login": login, "password": PASSWORD})
        assert signed_in.status_code == 303
        assert client.cookies[SESSION_COOKIE] != previous
        ended = await client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {previous}"})
        assert (ended.status_code, ended.json()["code"]) == (401, "session_revoked"), login
    current = await client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {client.cookies[SESSION_COOKIE]}"})
    assert current.json()["username"] == "ada"
    assert client.cookies[SESSION_COOKIE] != adas
    # A refused sign-in keeps the session it would have replaced.
    wrong = await client.post("/sign-in", data={"csrf_token": csrf, "login": "bob", "password": "wrong-password-x"})
    assert wrong.status_code == 401
    assert (await client.get("/")).status_code == 200


async def test_pages_answer_head_as_get_without_a_body(client: httpx.AsyncClient, make_user: MakeUser) -> None:
    for path in ("/sign-in", "/forgot-password"):
        got, head = await client.get(path), await client.head(path)
        assert (head.status_code, head.content) == (200, b""), path
        assert head.headers["content-type"] == got.headers["content-type"] == "text/html; charset=utf-8"
        assert head.headers["content-security-policy"] == got.headers["content-security-policy"]
        assert int(head.headers["content-length"]) > 0  # GET's length, not the empty body's
    signed_out = await client.head("/settings")
    assert (signed_out.status_code, signed_out.headers["location"]) == (303, "/sign-in?next=/settings")
    use_session(client, (await make_user("ada")).token)
    for path in ("/", "/settings", "/orgs"):
        head = await client.head(path)
        assert (head.status_code, head.content) == (200, b""), path
    missing = await client.head("/nope")
    assert (missing.status_code, missing.content, missing.headers["content-type"][:9]) == (404, b"", "text/html")
    # Only what GET answers: a form's POST route is no page to HEAD.
    assert (await client.head("/sign-out")).status_code == 405
    # Nor a GET that acts: GitHub sign-in's start and its landing (which spends the code).
    for path in ("/auth/github", "/auth/callback?code=x"):
        assert (await client.head(path)).status_code == 405, path
