"""Settings: the signed-in user's CLI tokens (create — the token shown once, on the page that
answers the form, never stored in clear — and revoke) and web sessions (revoke; revoking the
current one signs this browser out). Through the auth slice's `SessionService`, as
`/api/v1/auth/tokens` and `/api/v1/auth/sessions` do. The page's other forms (profile, privacy,
password, GitHub, deleting the account) are in `web.profile`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Annotated, Any
from zoneinfo import available_timezones

from fastapi import Depends, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from codepulse.auth.dependencies import AuthServiceDep, device_of
from codepulse.auth.schemas import CliTokenIn, SessionOut
from codepulse.auth.service import AuthService, SessionKind, github_link
from codepulse.db import DbSession
from codepulse.pagination import PageRequest
from codepulse.routing import DomainRouter
from codepulse.usage.dependencies import SharingServiceDep
from codepulse.usage.sharing import SharingService
from codepulse.web.forms import MAX_FORM_BYTES, FieldErrors, read_form, validation_errors
from codepulse.web.rendering import render
from codepulse.web.session import SIGN_IN_PATH, SessionCsrf, SignedIn, Viewer, clear_session_cookie

router = DomainRouter(tags=["web"])

SETTINGS_PATH = "/settings"
LIST_LIMIT = 100
TIME_ZONES = tuple(sorted(available_timezones()))

# After a form that redirects back here (`?saved=<what>`): the notice shown on the page.
NOTICES = {
    "profile": "Your profile is saved.",
    "privacy": "Your privacy settings are saved.",
    "password": "Your password is changed; your other sessions and tokens are signed out.",
    "github": "GitHub is unlinked from your account.",
    "github_linked": "GitHub is linked to your account.",
}


@dataclass(frozen=True)
class SettingsServices:
    """The services the settings page reads and its forms change, on the request's session."""

    auth: AuthService
    sharing: SharingService
    session: AsyncSession


async def _services(auth: AuthServiceDep, sharing: SharingServiceDep, session: DbSession) -> SettingsServices:
    return SettingsServices(auth, sharing, session)


Services = Annotated[SettingsServices, Depends(_services)]


async def settings_page_response(
    request: Request,
    viewer: Viewer,
    services: SettingsServices,
    *,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    """The settings page, with `values`, `errors` (by field id), `issued`, `notice` as given."""
    user = viewer.user
    sessions, _ = await services.auth.sessions.list_sessions(user, PageRequest(limit=LIST_LIMIT))
    rows = [SessionOut.model_validate(s).model_copy(update={"current": s.id == viewer.session_id}) for s in sessions]
    link = await github_link(services.session, user.id, request.app.state.secret_box)
    context.setdefault("errors", {})
    context.setdefault("issued", None)
    context.setdefault("notice", None)
    context["values"] = {
        "display_name": user.name,
        "username": user.username,
        "timezone": user.timezone,
        "expires_in_days": "90",
    } | context.get("values", {})
    return render(
        request,
        "settings.html",
        status_code=status_code,
        cli_tokens=[row for row in rows if row.kind == SessionKind.CLI.value],
        web_sessions=[row for row in rows if row.kind == SessionKind.WEB.value],
        user=user,
        profile_public=user.profile_public,
        share_usage=await services.sharing.share_setting(user),
        github_login=link.login if link is not None else None,
        time_zones=TIME_ZONES,
        **context,
    )


@router.get(SETTINGS_PATH, include_in_schema=False, response_class=HTMLResponse)
async def settings_page(
    request: Request, viewer: SignedIn, services: Services, saved: str | None = None
) -> HTMLResponse:
    return await settings_page_response(request, viewer, services, notice=NOTICES.get(saved or ""))


@router.post(
    SETTINGS_PATH + "/tokens", include_in_schema=False, response_class=HTMLResponse, max_body_size=MAX_FORM_BYTES
)
async def create_token(request: Request, viewer: SessionCsrf, services: Services) -> HTMLResponse:
    form = await read_form(request)
    values = {"name": form.get("name", ""), "expires_in_days": form.get("expires_in_days", "90")}
    try:
        body = CliTokenIn.model_validate(values)
    except ValidationError as error:
        errors: FieldErrors = validation_errors(error)
        return await settings_page_response(request, viewer, services, status_code=422, values=values, errors=errors)
    issued = await services.auth.sessions.create_cli_token(
        viewer.user, body.name, body.expires_in_days, device_of(request)
    )
    # Shown once, in this answer (not stored, never in a URL); the page is not cached (no-store).
    return await settings_page_response(request, viewer, services, status_code=201, issued=issued)


@router.post(
    SETTINGS_PATH + "/sessions/{session_id}/revoke",
    include_in_schema=False,
    response_class=HTMLResponse,
    max_body_size=MAX_FORM_BYTES,
)
async def revoke(request: Request, session_id: uuid.UUID, viewer: SessionCsrf, service: AuthServiceDep) -> Response:
    """Revoke one of my tokens or sessions (404 page for anyone else's)."""
    await service.sessions.revoke_session(viewer.user, session_id)
    if session_id == viewer.session_id:
        response = RedirectResponse(SIGN_IN_PATH, status_code=status.HTTP_303_SEE_OTHER)
        clear_session_cookie(response, request.app.state.settings)
        return response
    return RedirectResponse(SETTINGS_PATH, status_code=status.HTTP_303_SEE_OTHER)
