"""The email verification mail's landing page: `FRONTEND_URL/verify-email?token=<token>` (see
`AccountService.request_email_verification`). Opening the link verifies nothing by itself (mail
scanners open links too): the page's button posts the token (CSRF-checked: the session's token
when signed in, the pre-sign-in cookie's otherwise), through the same rate-limited flow as
`POST /api/v1/auth/verify-email`. Then to the organizations page, where invitations waiting for
the verified email can be accepted (or to sign in, and there after).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from codepulse.auth.dependencies import AuthServiceDep, Limiter, verify_email_limited
from codepulse.config import Settings
from codepulse.errors import BadRequest, RateLimited
from codepulse.routing import DomainRouter
from codepulse.web import csrf
from codepulse.web.forms import MAX_FORM_BYTES, read_form
from codepulse.web.rendering import render
from codepulse.web.session import (
    MaybeSignedIn,
    Viewer,
    anonymous_csrf_token,
    set_anonymous_cookie,
    sign_in_url,
)

router = DomainRouter(tags=["web"])

VERIFY_PATH = "/verify-email"
AFTER = "/orgs?verified=1"


def _page(
    request: Request, viewer: Viewer | None, token: str, *, status_code: int = 200, error: str | None = None
) -> HTMLResponse:
    new_cookie = None
    context = {}
    if viewer is None:
        context["csrf_token"], new_cookie = anonymous_csrf_token(request)
    response = render(request, "verify_email.html", status_code=status_code, token=token, error=error, **context)
    if new_cookie is not None:
        set_anonymous_cookie(response, new_cookie, request.app.state.settings)
    return response


@router.get(VERIFY_PATH, include_in_schema=False, response_class=HTMLResponse)
async def verify_page(
    request: Request, viewer: MaybeSignedIn, token: Annotated[str, Query(max_length=200)] = ""
) -> HTMLResponse:
    return _page(request, viewer, token)


async def _either_csrf(request: Request, viewer: MaybeSignedIn) -> None:
    """Signed in, the session's token; signed out, the pre-sign-in cookie's."""
    if viewer is not None:
        expected: str | None = viewer.csrf_token
    else:
        settings: Settings = request.app.state.settings
        cookie = request.cookies.get(csrf.ANONYMOUS_COOKIE)
        expected = csrf.anonymous_token(settings.secret_key, cookie) if cookie else None
    submitted = request.headers.get(csrf.CSRF_HEADER) or (await read_form(request)).get(csrf.CSRF_FIELD)
    csrf.check(expected, submitted)


@router.post(
    VERIFY_PATH,
    dependencies=[Depends(_either_csrf)],
    include_in_schema=False,
    response_class=HTMLResponse,
    max_body_size=MAX_FORM_BYTES,
)
async def verify(request: Request, viewer: MaybeSignedIn, service: AuthServiceDep, limiter: Limiter) -> Response:
    token = (await read_form(request)).get("token", "")
    try:
        if not token or len(token) > 200:
            raise BadRequest("This link is invalid, expired or already used; ask for a new one.", code="invalid_token")
        await verify_email_limited(request, token, service, limiter)
    except (BadRequest, RateLimited) as error:
        response = _page(request, viewer, token, status_code=error.status, error=error.detail or error.title)
        response.headers.update(error.headers)
        return response
    target = AFTER if viewer is not None else sign_in_url(AFTER)
    return RedirectResponse(target, status_code=status.HTTP_303_SEE_OTHER)
