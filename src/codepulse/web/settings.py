"""Settings: the signed-in user's CLI tokens (create — the token shown once, on the page that
answers the form, never stored in clear — and revoke) and web sessions (revoke; revoking the
current one signs this browser out). Through the auth slice's `SessionService`, as
`/api/v1/auth/tokens` and `/api/v1/auth/sessions` do.
"""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from codepulse.auth.dependencies import AuthServiceDep, device_of
from codepulse.auth.schemas import CliTokenIn, SessionOut
from codepulse.auth.service import SessionKind
from codepulse.pagination import PageRequest
from codepulse.routing import DomainRouter
from codepulse.web.forms import MAX_FORM_BYTES, FieldErrors, read_form, validation_errors
from codepulse.web.rendering import render
from codepulse.web.session import SIGN_IN_PATH, SessionCsrf, SignedIn, Viewer, clear_session_cookie

router = DomainRouter(tags=["web"])

SETTINGS_PATH = "/settings"
LIST_LIMIT = 100


async def _settings_page(
    request: Request,
    viewer: Viewer,
    service: AuthServiceDep,
    *,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    sessions, _ = await service.sessions.list_sessions(viewer.user, PageRequest(limit=LIST_LIMIT))
    rows = [SessionOut.model_validate(s).model_copy(update={"current": s.id == viewer.session_id}) for s in sessions]
    context.setdefault("values", {})
    context.setdefault("errors", {})
    context.setdefault("issued", None)
    return render(
        request,
        "settings.html",
        status_code=status_code,
        cli_tokens=[row for row in rows if row.kind == SessionKind.CLI.value],
        web_sessions=[row for row in rows if row.kind == SessionKind.WEB.value],
        **context,
    )


@router.get(SETTINGS_PATH, include_in_schema=False, response_class=HTMLResponse)
async def settings_page(request: Request, viewer: SignedIn, service: AuthServiceDep) -> HTMLResponse:
    return await _settings_page(request, viewer, service)


@router.post(
    SETTINGS_PATH + "/tokens", include_in_schema=False, response_class=HTMLResponse, max_body_size=MAX_FORM_BYTES
)
async def create_token(request: Request, viewer: SessionCsrf, service: AuthServiceDep) -> HTMLResponse:
    form = await read_form(request)
    values = {"name": form.get("name", ""), "expires_in_days": form.get("expires_in_days", "90")}
    try:
        body = CliTokenIn.model_validate(values)
    except ValidationError as error:
        errors: FieldErrors = validation_errors(error)
        return await _settings_page(request, viewer, service, status_code=422, values=values, errors=errors)
    issued = await service.sessions.create_cli_token(viewer.user, body.name, body.expires_in_days, device_of(request))
    # Shown once, in this answer (not stored, never in a URL); the page is not cached (no-store).
    return await _settings_page(request, viewer, service, status_code=201, issued=issued)


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
