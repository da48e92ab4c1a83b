"""The dashboard's sign-in: a cookie holding the raw token of a web session of the auth slice's
session table (the same sessions, lifetimes, revocation and cache as a bearer token; only the
transport differs). The cookie is read on page routes only: the JSON API takes bearer tokens
alone, so it needs no CSRF defence.

`SignedIn` is a page's signed-in viewer (else a redirect to the sign-in page), `MaybeSignedIn`
the viewer or None; `SessionCsrf` and `AnonymousCsrf` check a state-changing request's token.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import quote

from fastapi import Depends, Request, Response

from codepulse.auth.dependencies import authenticate_request
from codepulse.auth.service import User
from codepulse.config import Settings
from codepulse.errors import Unauthorized
from codepulse.web import csrf
from codepulse.web.forms import read_form

SESSION_COOKIE = "codepulse_session"
SIGN_IN_PATH = "/sign-in"


@dataclass(frozen=True)
class Viewer:
    """The signed-in person looking at a page: the user, the web session, its CSRF token."""

    user: User
    session_id: uuid.UUID
    csrf_token: str


class SignInRequired(Exception):
    """No valid session cookie on a page that needs one: answered by a redirect to sign in."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


_UNSET = object()


async def current_viewer(request: Request) -> Viewer | None:
    """The viewer of the request's session cookie; None without one or when it no longer
    authenticates (expired, signed out, a disabled account), which also clears the cookie."""
    cached = getattr(request.state, "web_viewer", _UNSET)
    if cached is not _UNSET:
        return cached  # type: ignore[return-value]
    viewer: Viewer | None = None
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        try:
            authenticated = await authenticate_request(request, token)
        except Unauthorized:
            request.state.web_stale_cookie = True
        else:
            settings: Settings = request.app.state.settings
            session_id = authenticated.session.id
            viewer = Viewer(authenticated.user, session_id, csrf.session_token(settings.secret_key, session_id))
    request.state.web_viewer = viewer
    return viewer


def next_path_of(request: Request) -> str:
    query = request.url.query
    return request.url.path + (f"?{query}" if query else "")


def sign_in_url(next_path: str) -> str:
    return SIGN_IN_PATH if next_path in ("", "/") else f"{SIGN_IN_PATH}?next={quote(next_path, safe='/')}"


def safe_next(value: str | None) -> str:
    """A `next` to go to after signing in: a path of this site only (no scheme, host or `//`)."""
    if not value or not value.startswith("/") or value.startswith(("//", "/\\")) or any(c in value for c in "\r\n\\"):
        return "/"
    return value


async def _signed_in(request: Request) -> Viewer:
    viewer = await current_viewer(request)
    if viewer is None:
        raise SignInRequired(next_path_of(request) if request.method in ("GET", "HEAD") else "/")
    return viewer


async def _submitted_token(request: Request) -> str | None:
    header = request.headers.get(csrf.CSRF_HEADER)
    return header if header is not None else (await read_form(request)).get(csrf.CSRF_FIELD)


async def _session_csrf(request: Request) -> Viewer:
    """The signed-in viewer of a state-changing request whose CSRF token is the session's."""
    viewer = await _signed_in(request)
    csrf.check(viewer.csrf_token, await _submitted_token(request))
    return viewer


async def _anonymous_csrf(request: Request) -> None:
    """A form posted before sign-in: its token must match the browser's `codepulse_csrf` cookie."""
    settings: Settings = request.app.state.settings
    cookie = request.cookies.get(csrf.ANONYMOUS_COOKIE)
    expected = csrf.anonymous_token(settings.secret_key, cookie) if cookie else None
    csrf.check(expected, await _submitted_token(request))


SignedIn = Annotated[Viewer, Depends(_signed_in)]
MaybeSignedIn = Annotated[Viewer | None, Depends(current_viewer)]
SessionCsrf = Annotated[Viewer, Depends(_session_csrf)]
AnonymousCsrf = Depends(_anonymous_csrf)


def anonymous_csrf_token(request: Request) -> tuple[str, str | None]:
    """The token for a form shown before sign-in, and the new cookie value to set (None when the
    browser already has one)."""
    settings: Settings = request.app.state.settings
    cookie = request.cookies.get(csrf.ANONYMOUS_COOKIE)
    new_cookie = None
    if not cookie or len(cookie) > 100:
        cookie = new_cookie = csrf.new_anonymous_cookie()
    return csrf.anonymous_token(settings.secret_key, cookie), new_cookie


def set_anonymous_cookie(response: Response, value: str, settings: Settings) -> None:
    response.set_cookie(
        csrf.ANONYMOUS_COOKIE, value, httponly=True, samesite="lax", secure=settings.is_production, path="/"
    )


def set_session_cookie(response: Response, token: str, max_age_seconds: int, settings: Settings) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=max_age_seconds,
        httponly=True,
        samesite="lax",
        secure=settings.is_production,
        path="/",
    )


def clear_session_cookie(response: Response, settings: Settings) -> None:
    response.delete_cookie(SESSION_COOKIE, httponly=True, samesite="lax", secure=settings.is_production, path="/")
