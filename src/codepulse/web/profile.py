"""Settings' account forms: profile (name, username, time zone), privacy (public profile, sharing
usage with organizations), password change, linking and unlinking GitHub, deleting the account.

Each goes through the service call and validation of its API operation — `PATCH /api/v1/users/me`
(`UserUpdate`), `PATCH /api/v1/usage/settings`, `POST /api/v1/auth/password` (the password policy;
every other session and token is signed out), `POST /api/v1/auth/oauth/github/link` (a link code
bound to this browser by its cookie, then GitHub's consent; the flow ends on `/auth/callback`),
`DELETE /api/v1/auth/oauth/github`,
`DELETE /api/v1/users/me` — so a field's errors are the API's, shown beside it. The API has no
email change, so neither has the page. Deleting asks for the username typed out (the API asks for
nothing more); then the browser is signed out, on the sign-in page.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from fastapi import Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.types import DecoratedCallable
from pydantic import ValidationError

from codepulse.auth.dependencies import start_github_link
from codepulse.auth.schemas import PasswordChangeIn, UserUpdate
from codepulse.auth.sessions import Authenticated
from codepulse.errors import Conflict, NotFound, ValidationFailed
from codepulse.routing import DomainRouter
from codepulse.web.forms import MAX_FORM_BYTES, FieldErrors, field_errors, read_form, validation_errors
from codepulse.web.session import SIGN_IN_PATH, SessionCsrf, Viewer, clear_session_cookie
from codepulse.web.settings import SETTINGS_PATH, Services, SettingsServices, settings_page_response

router = DomainRouter(tags=["web"])

DELETED_PATH = SIGN_IN_PATH + "?done=deleted"
# The API's field names to the page's field ids (the tokens form already has a `name`).
_PROFILE_FIELDS = {"name": "display_name"}
_CHECKED = ("on", "true", "1")


def _saved(what: str) -> RedirectResponse:
    return RedirectResponse(f"{SETTINGS_PATH}?saved={what}", status_code=status.HTTP_303_SEE_OTHER)


def _renamed(errors: FieldErrors, names: dict[str, str], form: str) -> FieldErrors:
    """Errors by the page's field ids; the model's own (`form`) under this form's key."""
    renamed = names | {"form": form}
    return {renamed.get(field, field): messages for field, messages in errors.items()}


async def _refused(
    request: Request, viewer: Viewer, services: SettingsServices, status_code: int, errors: FieldErrors, **page: Any
) -> HTMLResponse:
    return await settings_page_response(request, viewer, services, status_code=status_code, errors=errors, **page)


def _form_post(path: str) -> Callable[[DecoratedCallable], DecoratedCallable]:
    return router.post(path, include_in_schema=False, response_class=HTMLResponse, max_body_size=MAX_FORM_BYTES)


@_form_post(SETTINGS_PATH + "/profile")
async def update_profile(request: Request, viewer: SessionCsrf, services: Services) -> Response:
    form = await read_form(request)
    values = {name: form.get(name, "") for name in ("display_name", "username", "timezone")}
    try:
        changes = UserUpdate.model_validate(
            {"name": values["display_name"], "username": values["username"], "timezone": values["timezone"]}
        )
        await services.auth.accounts.update_profile(viewer.user, changes)
    except ValidationError as error:
        errors = _renamed(validation_errors(error), _PROFILE_FIELDS, "profile_form")
        return await _refused(request, viewer, services, 422, errors, values=values)
    except Conflict as error:  # username_taken
        errors = {"username": [error.detail or error.title]}
        return await _refused(request, viewer, services, 409, errors, values=values)
    return _saved("profile")


@_form_post(SETTINGS_PATH + "/privacy")
async def update_privacy(request: Request, viewer: SessionCsrf, services: Services) -> Response:
    form = await read_form(request)
    public = form.get("profile_public", "").lower() in _CHECKED
    share = form.get("share_usage_with_orgs", "").lower() in _CHECKED
    await services.auth.accounts.update_profile(viewer.user, UserUpdate(profile_public=public))
    await services.sharing.set_share_setting(viewer.user, share)
    return _saved("privacy")


@_form_post(SETTINGS_PATH + "/password")
async def change_password(request: Request, viewer: SessionCsrf, services: Services) -> Response:
    form = await read_form(request)
    current = form.get("current_password") if viewer.user.has_password else None
    try:
        data = {"current_password": current, "new_password": form.get("new_password", "")}
        body = PasswordChangeIn.model_validate(data)
        # The API keeps the request's own session; here, this browser's.
        keep = cast(Authenticated, request.state.authenticated).session  # set when the cookie was read
        await services.auth.accounts.change_password(viewer.user, body.current_password, body.new_password, keep=keep)
    except ValidationError as error:
        return await _refused(request, viewer, services, 422, _renamed(validation_errors(error), {}, "password_form"))
    except ValidationFailed as error:
        return await _refused(request, viewer, services, 422, _renamed(field_errors(error.errors), {}, "password_form"))
    return _saved("password")


@_form_post(SETTINGS_PATH + "/github/link")
async def link_github(request: Request, viewer: SessionCsrf, services: Services) -> Response:
    """To GitHub's consent through the API's link flow: the link code stands for this user, the
    link cookie binds it to this browser (the URL is refused anywhere else)."""
    if request.app.state.github_oauth is None:
        raise NotFound("oauth", "GitHub sign-in is not configured on this server.", code="oauth_not_configured")
    response = Response(status_code=status.HTTP_303_SEE_OTHER)
    response.headers["location"] = await start_github_link(request, response, viewer.user, services.auth)
    return response


@_form_post(SETTINGS_PATH + "/github/unlink")
async def unlink_github(request: Request, viewer: SessionCsrf, services: Services) -> Response:
    try:
        await services.auth.github.unlink_oauth(viewer.user, "github")
    except (Conflict, NotFound) as error:  # the only way to sign in; not linked (meanwhile)
        return await _refused(request, viewer, services, error.status, {"github_form": [error.detail or error.title]})
    return _saved("github")


@_form_post(SETTINGS_PATH + "/delete")
async def delete_account(request: Request, viewer: SessionCsrf, services: Services) -> Response:
    form = await read_form(request)
    typed = form.get("confirm_username", "")
    if typed.strip().lower() != viewer.user.username:  # as the page's script compares it
        message = f"Type your username, {viewer.user.username}, to confirm."
        errors = {"confirm_username": [message]}
        return await _refused(request, viewer, services, 422, errors, values={"confirm_username": typed})
    try:
        # A refusing hook may come after others wrote: the error answer rolls them all back.
        await services.auth.accounts.delete_account(viewer.user)
    except Conflict as error:  # an `on_user_delete` hook refuses (e.g. the last owner of an organization)
        return await _refused(request, viewer, services, 409, {"delete_form": [error.detail or error.title]})
    response = RedirectResponse(DELETED_PATH, status_code=status.HTTP_303_SEE_OTHER)
    clear_session_cookie(response, request.app.state.settings)
    return response
