"""GitHub sign-in and linking in the browser: the start (`/auth/github`) and the landing page
(`FRONTEND_URL/auth/callback`).

"Continue with GitHub" opens `/auth/github?next=`, which gives this browser a random nonce in a
short-lived HttpOnly cookie and goes on to the API's start (`/api/v1/auth/oauth/github`) with the
nonce's hash as `binding`. The API's GitHub callback sends the browser back here with a
60-second one-time `?code=` bound to that hash (and the `?next=` it was started with), or
`?error=&error_description=` when GitHub or the sign-in refused. This page trades the code, with
the cookie's nonce, for a web session through the same rate-limited flow as
`POST /api/v1/auth/oauth/exchange` (`oauth_exchange_limited`), sets the session cookie (ending
the session it replaces) and goes on to `next` (a path of this site) or the overview. A code
whose flow another browser started (someone's `/auth/callback?code=` link: login CSRF) is
refused, as are a used, expired or unknown code, a disabled account, the rate limit and GitHub's
refusals: error pages. The nonce cookie is cleared by every answer here.

Linking GitHub from settings goes through the API's link flow (`web.profile`); it ends here with
`?linked=github` (then the settings page) or an error.

For these links to reach the dashboard, `FRONTEND_URL` must be this server's own address.
"""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Query, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from codepulse.auth.dependencies import (
    GITHUB_AUTHORIZE_ROUTE,
    AuthServiceDep,
    Limiter,
    oauth_exchange_limited,
)
from codepulse.auth.service import browser_binding
from codepulse.config import Settings
from codepulse.db import writes
from codepulse.errors import DomainError, NotFound, RateLimited
from codepulse.routing import DomainRouter
from codepulse.web.account import signed_in_response
from codepulse.web.rendering import render
from codepulse.web.session import MaybeSignedIn, safe_next

router = DomainRouter(tags=["web"])

START_PATH = "/auth/github"
CALLBACK_PATH = "/auth/callback"
AFTER_LINKING = "/settings?saved=github_linked"
NONCE_COOKIE = "codepulse_github_nonce"
# As long as the API keeps the flow's OAuth state (its cookie session's max_age).
NONCE_LIFETIME_SECONDS = 600

Param = Annotated[str | None, Query(max_length=2000)]

# GitHub's and the API's `error` codes: the page's status and title.
_ERRORS = {
    "access_denied": (400, "GitHub sign-in was canceled"),
    "github_unavailable": (400, "GitHub did not answer"),
    "github_already_linked": (409, "GitHub was not linked"),
    "oauth_link_not_bound": (400, "GitHub was not linked"),
}
_FAILED = (400, "GitHub sign-in failed")


def _failed(request: Request, status_code: int, title: str, detail: str | None) -> HTMLResponse:
    return render(request, "error.html", status_code=status_code, title=title, detail=detail, github_retry=True)


def _clear_nonce(response: Response, settings: Settings) -> Response:
    response.delete_cookie(
        NONCE_COOKIE, path=CALLBACK_PATH, secure=settings.is_production, httponly=True, samesite="lax"
    )
    return response


@router.get(START_PATH, include_in_schema=False, response_class=HTMLResponse)
async def github_start(request: Request, next: Param = None) -> Response:
    """Bind a GitHub sign-in to this browser: the nonce stays in its cookie, only its hash travels."""
    settings: Settings = request.app.state.settings
    if request.app.state.github_oauth is None:
        raise NotFound("oauth", "GitHub sign-in is not configured on this server.", code="oauth_not_configured")
    nonce = secrets.token_urlsafe(32)
    params = {"binding": browser_binding(nonce)} | ({"next": safe_next(next)} if next else {})
    authorize = request.url_for(GITHUB_AUTHORIZE_ROUTE).include_query_params(**params)
    response = RedirectResponse(str(authorize), status_code=status.HTTP_303_SEE_OTHER)
    response.set_cookie(
        NONCE_COOKIE,
        nonce,
        max_age=NONCE_LIFETIME_SECONDS,
        path=CALLBACK_PATH,  # read only where the flow ends
        secure=settings.is_production,
        httponly=True,
        samesite="lax",  # GitHub's redirect back is a cross-site top-level navigation
    )
    return response


@router.get(CALLBACK_PATH, include_in_schema=False, response_class=HTMLResponse)
@writes  # the one-time code is consumed and a session made
async def github_callback_page(
    request: Request,
    service: AuthServiceDep,
    limiter: Limiter,
    viewer: MaybeSignedIn,  # the error pages' layout; the session a sign-in replaces
    code: Param = None,
    next: Param = None,
    error: Param = None,
    error_description: Param = None,
    linked: Param = None,
) -> Response:
    settings: Settings = request.app.state.settings
    return _clear_nonce(await _land(request, service, limiter, code, next, error, error_description, linked), settings)


async def _land(
    request: Request,
    service: AuthServiceDep,
    limiter: Limiter,
    code: str | None,
    next_path: str | None,
    error: str | None,
    error_description: str | None,
    linked: str | None,
) -> Response:
    if linked is not None and code is None and error is None:
        return RedirectResponse(safe_next(next_path or AFTER_LINKING), status_code=status.HTTP_303_SEE_OTHER)
    if error is not None or not code:
        status_code, title = _ERRORS.get(error or "", _FAILED)
        return _failed(request, status_code, title, error_description)
    nonce = request.cookies.get(NONCE_COOKIE)
    if not nonce or len(nonce) > 200:
        # Not started in this browser: someone else's sign-in link, which would sign this browser
        # into their account. Nothing is exchanged (the code stays theirs, and unusable here).
        detail = "This sign-in was not started in this browser. Start again with “Continue with GitHub”."
        return _failed(request, status.HTTP_400_BAD_REQUEST, _FAILED[1], detail)
    try:
        issued = await oauth_exchange_limited(request, code, service, limiter, nonce=nonce)
    except DomainError as refused:
        response = _failed(request, refused.status, _FAILED[1], refused.detail or refused.title)
        if isinstance(refused, RateLimited):
            response.headers.update(refused.headers)
        return response
    return await signed_in_response(request, service, issued, safe_next(next_path))
