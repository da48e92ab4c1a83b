"""Password reset in the browser: "Forgot password?" (`/forgot-password`: an email, always the
same answer, the rate limits of `POST /api/v1/auth/password-reset/request`) and the reset mail's
landing page at the path the mail links to (`FRONTEND_URL/reset-password?token=<token>`, see
`AccountService.request_password_reset`), whose form sets a new password through the flow of
`POST /api/v1/auth/password-reset` (the password policy, the per-IP limit of token submissions;
every session of the account ends). Then to the sign-in page with a notice.

Opening the link changes nothing (mail scanners open links too): only the form's post does. Both
forms are shown before sign-in, so they carry the pre-sign-in cookie's CSRF token.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Query, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.types import DecoratedCallable
from pydantic import ValidationError

from codepulse.auth.dependencies import TOKEN_SUBMIT_PER_IP, AuthServiceDep, Limiter
from codepulse.auth.router import RESET_PER_ACCOUNT, RESET_PER_IP
from codepulse.auth.schemas import EmailIn, PasswordResetIn
from codepulse.errors import BadRequest, RateLimited, ValidationFailed
from codepulse.ratelimit import Rule
from codepulse.routing import DomainRouter
from codepulse.web.account import form_page
from codepulse.web.forms import MAX_FORM_BYTES, field_errors, read_form, validation_errors
from codepulse.web.session import SIGN_IN_PATH, AnonymousCsrf

router = DomainRouter(tags=["web"])

FORGOT_PATH = "/forgot-password"
RESET_PATH = "/reset-password"
RESET_DONE_PATH = SIGN_IN_PATH + "?done=reset"
SENT = "If an account uses this email, a reset link is on its way. It works for one hour."


def _ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _form_post(path: str) -> Callable[[DecoratedCallable], DecoratedCallable]:
    return router.post(
        path,
        dependencies=[AnonymousCsrf],
        include_in_schema=False,
        response_class=HTMLResponse,
        max_body_size=MAX_FORM_BYTES,
    )


@router.get(FORGOT_PATH, include_in_schema=False, response_class=HTMLResponse)
async def forgot_page(request: Request) -> HTMLResponse:
    return form_page(request, "forgot_password.html", sent=None)


@_form_post(FORGOT_PATH)
async def forgot(request: Request, service: AuthServiceDep, limiter: Limiter) -> HTMLResponse:
    values = {"email": (await read_form(request)).get("email", "")}
    try:
        body = EmailIn.model_validate(values)
        await limiter.hit(
            [Rule("reset:ip", _ip(request), RESET_PER_IP), Rule("reset:account", body.email, RESET_PER_ACCOUNT)]
        )
        await service.accounts.request_password_reset(body.email)
    except ValidationError as error:
        errors = validation_errors(error)
        return form_page(request, "forgot_password.html", status_code=422, values=values, errors=errors, sent=None)
    except RateLimited as error:
        errors = {"form": [error.detail or error.title]}
        response = form_page(request, "forgot_password.html", status_code=429, values=values, errors=errors, sent=None)
        response.headers.update(error.headers)
        return response
    # The same answer whether or not an account uses the email (no account enumeration).
    return form_page(request, "forgot_password.html", status_code=202, sent=SENT)


@router.get(RESET_PATH, include_in_schema=False, response_class=HTMLResponse)
async def reset_page(request: Request, token: Annotated[str, Query(max_length=200)] = "") -> HTMLResponse:
    return form_page(request, "reset_password.html", token=token)


@_form_post(RESET_PATH)
async def reset(request: Request, service: AuthServiceDep, limiter: Limiter) -> Response:
    form = await read_form(request)
    token = form.get("token", "")[:200]
    try:
        body = PasswordResetIn.model_validate({"token": token, "new_password": form.get("new_password", "")})
        await limiter.hit([Rule("token-submit:ip", _ip(request), TOKEN_SUBMIT_PER_IP)])
        # A refused password leaves the token unused: the error answer rolls the request back.
        await service.accounts.reset_password(body.token, body.new_password)
    except ValidationError as error:
        errors = validation_errors(error)
        if "token" in errors:  # no token in the link: nothing the form can fix
            errors = {"form": ["This link is invalid, expired or already used; ask for a new one."]}
        return form_page(request, "reset_password.html", status_code=422, errors=errors, token=token)
    except ValidationFailed as error:
        errors = field_errors(error.errors)
        return form_page(request, "reset_password.html", status_code=422, errors=errors, token=token)
    except (BadRequest, RateLimited) as error:
        errors = {"form": [error.detail or error.title]}
        response = form_page(request, "reset_password.html", status_code=error.status, errors=errors, token=token)
        response.headers.update(error.headers)
        return response
    return RedirectResponse(RESET_DONE_PATH, status_code=status.HTTP_303_SEE_OTHER)
