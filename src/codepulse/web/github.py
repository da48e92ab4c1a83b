"""GitHub sign-in's landing page in the browser: `FRONTEND_URL/auth/callback`.

The API's GitHub callback (`/api/v1/auth/oauth/github/callback`) sends the browser here with a
60-second one-time `?code=` (and the `?next=` it was started with), or `?error=&error_description=`
when GitHub or the sign-in refused. This page trades the code for a web session through the
same rate-limited flow as `POST /api/v1/auth/oauth/exchange` (`oauth_exchange_limited`), sets
the session cookie and goes on to `next` (a path of this site) or the overview; a used, expired
or unknown code, a disabled account, the rate limit and GitHub's refusals are error pages.
After linking GitHub to an account (`?linked=github`) it goes to the settings page.

For these links to reach the dashboard, `FRONTEND_URL` must be this server's own address.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Query, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from codepulse.auth.dependencies import AuthServiceDep, Limiter, oauth_exchange_limited
from codepulse.db import writes
from codepulse.errors import DomainError, RateLimited
from codepulse.routing import DomainRouter
from codepulse.web.account import signed_in_response
from codepulse.web.rendering import render
from codepulse.web.session import safe_next

router = DomainRouter(tags=["web"])

CALLBACK_PATH = "/auth/callback"
AFTER_LINKING = "/settings"

Param = Annotated[str | None, Query(max_length=2000)]

_ERROR_TITLES = {
    "access_denied": "GitHub sign-in was canceled",
    "github_unavailable": "GitHub did not answer",
}


def _failed(request: Request, status_code: int, title: str, detail: str | None) -> HTMLResponse:
    return render(request, "error.html", status_code=status_code, title=title, detail=detail, github_retry=True)


@router.get(CALLBACK_PATH, include_in_schema=False, response_class=HTMLResponse)
@writes  # the one-time code is consumed and a session made
async def github_callback_page(
    request: Request,
    service: AuthServiceDep,
    limiter: Limiter,
    code: Param = None,
    next: Param = None,
    error: Param = None,
    error_description: Param = None,
    linked: Param = None,
) -> Response:
    if linked is not None and code is None and error is None:
        return RedirectResponse(safe_next(next or AFTER_LINKING), status_code=status.HTTP_303_SEE_OTHER)
    if error is not None or not code:
        title = _ERROR_TITLES.get(error or "", "GitHub sign-in failed")
        return _failed(request, status.HTTP_400_BAD_REQUEST, title, error_description)
    try:
        issued = await oauth_exchange_limited(request, code, service, limiter)
    except DomainError as refused:
        response = _failed(request, refused.status, "GitHub sign-in failed", refused.detail or refused.title)
        if isinstance(refused, RateLimited):
            response.headers.update(refused.headers)
        return response
    return signed_in_response(request, issued.token, issued.session.absolute_expires_at, safe_next(next))
