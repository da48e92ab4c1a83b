"""Answering an invitation in the browser.

`/invitations/{token}` is the link of the invitation mail (`FRONTEND_URL/invitations/<token>`,
see `InvitationService.invite`): it shows the organization and the role to whoever holds the link;
signed out, it offers to sign in or sign up and come back (`next`); signed in with the invited,
verified email, it accepts or declines (CSRF-checked forms). The signed-in user's pending
invitations are also answered from the organizations page (`/me/invitations/{id}/...`, as
`GET /api/v1/invitations` lists them, with `can_accept`/`reason`).
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import Path, Request
from fastapi.responses import HTMLResponse, Response

from codepulse.errors import BadRequest, Conflict, Forbidden, NotFound
from codepulse.orgs.dependencies import InvitationServiceDep
from codepulse.orgs.invitations import InvitationService
from codepulse.routing import DomainRouter
from codepulse.web.forms import MAX_FORM_BYTES
from codepulse.web.orgs import ORGS_PATH, ip_of, my_orgs_page, org_path, redirect
from codepulse.web.rendering import render
from codepulse.web.session import MaybeSignedIn, SessionCsrf, Viewer

router = DomainRouter(tags=["web"])

INVITATION = "/invitations/{token}"
MINE = "/me/invitations/{invitation_id}"

Token = Annotated[str, Path(min_length=1, max_length=200)]


async def _invitation_page(
    request: Request,
    token: str,
    viewer: Viewer | None,
    invitations: InvitationService,
    *,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    found = await invitations.pending_invitation_by_token(token)
    if found is None:
        return render(request, "invitation.html", status_code=404, invitation=None, org=None, token=token, errors=[])
    invitation, org = found
    user = viewer.user if viewer is not None else None
    context.setdefault("errors", [])
    return render(
        request,
        "invitation.html",
        status_code=status_code,
        invitation=invitation,
        org=org,
        token=token,
        next_path=request.url.path if request.method == "GET" else f"/invitations/{token}",
        other_email=user is not None and user.email != invitation.email,
        unverified=user is not None and invitations.acceptable(user) is not None,
        **context,
    )


@router.get(INVITATION, include_in_schema=False, response_class=HTMLResponse)
async def invitation_page(
    request: Request, token: Token, viewer: MaybeSignedIn, invitations: InvitationServiceDep
) -> HTMLResponse:
    return await _invitation_page(request, token, viewer, invitations)


@router.post(INVITATION + "/accept", include_in_schema=False, response_class=HTMLResponse, max_body_size=MAX_FORM_BYTES)
async def accept(request: Request, token: Token, viewer: SessionCsrf, invitations: InvitationServiceDep) -> Response:
    try:
        access = await invitations.accept(viewer.user, token, ip_of(request))
    except (BadRequest, Forbidden, Conflict) as error:
        messages = [error.detail or error.title]
        return await _invitation_page(request, token, viewer, invitations, status_code=error.status, errors=messages)
    return redirect(org_path(access))


@router.post(
    INVITATION + "/decline", include_in_schema=False, response_class=HTMLResponse, max_body_size=MAX_FORM_BYTES
)
async def decline(request: Request, token: Token, viewer: SessionCsrf, invitations: InvitationServiceDep) -> Response:
    found = await invitations.pending_invitation_by_token(token)
    if found is None:
        raise NotFound("invitation")
    try:
        await invitations.decline(viewer.user, found[0].id, ip_of(request))
    except (NotFound, Forbidden) as error:
        # Someone else's invitation (another email), or an unverified email.
        messages = [error.detail or error.title]
        return await _invitation_page(request, token, viewer, invitations, status_code=error.status, errors=messages)
    return redirect(ORGS_PATH + "?declined=1")


# --- from the organizations page: my pending invitations, by id ---------------------------


@router.post(MINE + "/accept", include_in_schema=False, response_class=HTMLResponse, max_body_size=MAX_FORM_BYTES)
async def accept_mine(
    request: Request, invitation_id: uuid.UUID, viewer: SessionCsrf, invitations: InvitationServiceDep
) -> Response:
    """404 page when it is not a pending invitation to my email."""
    try:
        access = await invitations.accept_by_id(viewer.user, invitation_id, ip_of(request))
    except (BadRequest, Forbidden, Conflict) as error:
        errors = {"invitations": [error.detail or error.title]}
        return await my_orgs_page(request, viewer, invitations, status_code=error.status, errors=errors)
    return redirect(org_path(access))


@router.post(MINE + "/decline", include_in_schema=False, response_class=HTMLResponse, max_body_size=MAX_FORM_BYTES)
async def decline_mine(
    request: Request, invitation_id: uuid.UUID, viewer: SessionCsrf, invitations: InvitationServiceDep
) -> Response:
    try:
        await invitations.decline(viewer.user, invitation_id, ip_of(request))
    except Forbidden as error:
        errors = {"invitations": [error.detail or error.title]}
        return await my_orgs_page(request, viewer, invitations, status_code=error.status, errors=errors)
    return redirect(ORGS_PATH + "?declined=1")
