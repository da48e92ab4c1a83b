"""Sign in, sign up and sign out in the browser.

The forms go through the very flows of `POST /api/v1/auth/login` and `/auth/register`
(`login_limited`, `register_limited`: the same validation, the same rate limits), and end in a web
session of the auth slice whose token becomes the `codepulse_session` cookie; a session that
cookie replaces (signing in again, or as someone else) ends. Sign-out revokes that session on the
server, so a copied cookie is dead too.
"""

from __future__ import annotations

from contextlib import suppress
from typing import Any

from fastapi import Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from codepulse.auth.dependencies import AuthServiceDep, Limiter, login_limited, register_limited
from codepulse.auth.schemas import LoginIn, RegisterIn
from codepulse.auth.service import AuthService
from codepulse.auth.sessions import IssuedSession
from codepulse.config import Settings
from codepulse.errors import Conflict, NotFound, RateLimited, Unauthorized, ValidationFailed
from codepulse.routing import DomainRouter
from codepulse.web.forms import MAX_FORM_BYTES, FieldErrors, field_errors, read_form, validation_errors
from codepulse.web.rendering import render
from codepulse.web.session import (
    SIGN_IN_PATH,
    AnonymousCsrf,
    MaybeSignedIn,
    SessionCsrf,
    anonymous_csrf_token,
    clear_session_cookie,
    current_viewer,
    safe_next,
    set_anonymous_cookie,
    set_session_cookie,
)

router = DomainRouter(tags=["web"])

SIGN_UP_PATH = "/sign-up"
SIGN_OUT_PATH = "/sign-out"
# `?done=` on the sign-in page, after a password reset or deleting the account.
SIGN_IN_NOTICES = {
    "reset": "Your password is reset and every session signed out: sign in with the new one.",
    "deleted": "Your account and its personal data are deleted.",
}


def form_page(
    request: Request,
    template: str,
    *,
    status_code: int = 200,
    values: dict[str, str] | None = None,
    errors: FieldErrors | None = None,
    **context: Any,
) -> HTMLResponse:
    token, new_cookie = anonymous_csrf_token(request)
    context.setdefault("notice", None)
    response = render(
        request,
        template,
        status_code=status_code,
        csrf_token=token,
        values=values or {},
        errors=errors or {},
        **context,
    )
    if new_cookie is not None:
        set_anonymous_cookie(response, new_cookie, request.app.state.settings)
    return response


async def signed_in_response(request: Request, service: AuthService, issued: IssuedSession, next_path: str) -> Response:
    """On to `next_path` with the new session's cookie. The session of the cookie it replaces
    ends: nothing would sign it out any more, yet a copy of the old cookie would still work."""
    replaced = await current_viewer(request)
    if replaced is not None:
        with suppress(NotFound):  # revoked meanwhile
            await service.sessions.revoke_session(replaced.user, replaced.session_id)
    settings: Settings = request.app.state.settings
    response = RedirectResponse(safe_next(next_path), status_code=status.HTTP_303_SEE_OTHER)
    # The session's idle expiry slides on use; the cookie lasts as long as the session may.
    expires_at = issued.session.absolute_expires_at
    max_age = max(0, int((expires_at - request.app.state.clock()).total_seconds()))
    set_session_cookie(response, issued.token, max_age, settings)
    return response


# --- sign in ---------------------------------------------------------------------------------


@router.get(SIGN_IN_PATH, include_in_schema=False, response_class=HTMLResponse)
async def sign_in_page(
    request: Request, viewer: MaybeSignedIn, next: str | None = None, done: str | None = None
) -> Response:
    if viewer is not None:
        return RedirectResponse(safe_next(next), status_code=status.HTTP_303_SEE_OTHER)
    return form_page(request, "sign_in.html", next=safe_next(next), notice=SIGN_IN_NOTICES.get(done or ""))


@router.post(
    SIGN_IN_PATH,
    dependencies=[AnonymousCsrf],
    include_in_schema=False,
    response_class=HTMLResponse,
    max_body_size=MAX_FORM_BYTES,
)
async def sign_in(request: Request, service: AuthServiceDep, limiter: Limiter) -> Response:
    form = await read_form(request)
    values = {"login": form.get("login", "")}
    next_path = safe_next(form.get("next"))
    try:
        body = LoginIn.model_validate({"login": form.get("login", ""), "password": form.get("password", "")})
        issued = await login_limited(request, body, service, limiter)
    except ValidationError as error:
        return form_page(
            request, "sign_in.html", status_code=422, values=values, errors=validation_errors(error), next=next_path
        )
    except (Unauthorized, RateLimited) as error:
        status_code = error.status
        errors = {"form": [error.detail or error.title]}
        response = form_page(
            request, "sign_in.html", status_code=status_code, values=values, errors=errors, next=next_path
        )
        response.headers.update(error.headers if isinstance(error, RateLimited) else {})
        return response
    return await signed_in_response(request, service, issued, next_path)


# --- sign up ---------------------------------------------------------------------------------

_CONFLICT_FIELDS = {"email_taken": "email", "username_taken": "username"}


@router.get(SIGN_UP_PATH, include_in_schema=False, response_class=HTMLResponse)
async def sign_up_page(request: Request, viewer: MaybeSignedIn, next: str | None = None) -> Response:
    if viewer is not None:
        return RedirectResponse(safe_next(next), status_code=status.HTTP_303_SEE_OTHER)
    return form_page(request, "sign_up.html", next=safe_next(next))


@router.post(
    SIGN_UP_PATH,
    dependencies=[AnonymousCsrf],
    include_in_schema=False,
    response_class=HTMLResponse,
    max_body_size=MAX_FORM_BYTES,
)
async def sign_up(request: Request, service: AuthServiceDep, limiter: Limiter) -> Response:
    form = await read_form(request)
    fields = ("email", "username", "name", "password")
    data = {name: form.get(name, "") for name in fields}
    values = {name: data[name] for name in fields if name != "password"}
    next_path = safe_next(form.get("next"))
    page: dict[str, Any] = {"values": values, "next": next_path}
    try:
        body = RegisterIn.model_validate(data)
        issued = await register_limited(request, body, service, limiter)
    except ValidationError as error:
        return form_page(request, "sign_up.html", status_code=422, errors=validation_errors(error), **page)
    except ValidationFailed as error:
        return form_page(request, "sign_up.html", status_code=422, errors=field_errors(error.errors), **page)
    except (Conflict, RateLimited) as error:
        field = _CONFLICT_FIELDS.get(error.instance_code, "form")
        errors = {field: [error.detail or error.title]}
        response = form_page(request, "sign_up.html", status_code=error.status, errors=errors, **page)
        response.headers.update(error.headers)
        return response
    return await signed_in_response(request, service, issued, next_path)


# --- sign out --------------------------------------------------------------------------------


@router.post(SIGN_OUT_PATH, include_in_schema=False, response_class=HTMLResponse, max_body_size=MAX_FORM_BYTES)
async def sign_out(request: Request, viewer: SessionCsrf, service: AuthServiceDep) -> Response:
    with suppress(NotFound):  # revoked meanwhile (another tab): signed out all the same
        await service.sessions.revoke_session(viewer.user, viewer.session_id)
    response = RedirectResponse(SIGN_IN_PATH, status_code=status.HTTP_303_SEE_OTHER)
    clear_session_cookie(response, request.app.state.settings)
    return response
