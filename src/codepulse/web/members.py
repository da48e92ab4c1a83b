"""An organization's members and invitations in the browser: the members with their roles (admins
and owners change a role and remove a member; anyone may leave), and the invitations (admins and
owners send one by email with a role, see the pending ones, revoke one) — through `OrgService`
and `InvitationService`, with the API's rules and errors (`/api/v1/orgs/{org}/members`, `/invitations`).

A refused change (the last owner, an admin touching an owner, someone already invited) is shown
on the page above the list or beside the invitation form's fields, with the API's status code.
"""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError

from codepulse.errors import Conflict, DomainError, Forbidden, QuotaExceeded
from codepulse.orgs.dependencies import OrgServiceDep
from codepulse.orgs.invitations import Invitation, InvitationService
from codepulse.orgs.schemas import InvitationCreate, RoleUpdate
from codepulse.orgs.service import OrgAccess, OrgService, Role
from codepulse.pagination import PageRequest
from codepulse.routing import DomainRouter
from codepulse.web.forms import MAX_FORM_BYTES, FieldErrors, read_form, validation_errors
from codepulse.web.orgs import LIST_LIMIT, ORGS_PATH, Cursor, OrgForm, OrgPage, ip_of, org_context, org_path, redirect
from codepulse.web.rendering import render

router = DomainRouter(tags=["web"])

MEMBERS = ORGS_PATH + "/{slug}/members"
INVITATIONS = ORGS_PATH + "/{slug}/invitations"
ROLES = tuple(Role)


def _invitations(orgs: OrgService) -> InvitationService:
    return InvitationService(orgs.session, orgs.settings, orgs.clock)


def can_manage(access: OrgAccess, role: Role) -> bool:
    """Whether I may change or remove a member holding `role` (admins: below owner; owners: all)."""
    return access.role.at_least(Role.ADMIN) and (role is not Role.OWNER or access.role is Role.OWNER)


async def _members_page(
    request: Request,
    access: OrgAccess,
    orgs: OrgService,
    *,
    cursor: str | None = None,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    page = PageRequest(limit=LIST_LIMIT, cursor=cursor, signer=request.app.state.cursor_signer)
    members, next_cursor = await orgs.members(access, page)
    is_admin = access.role.at_least(Role.ADMIN)
    invitations: list[Invitation] = []
    if is_admin:
        invitations, _ = await _invitations(orgs).pending_invitations(access, PageRequest(limit=LIST_LIMIT))
    context.setdefault("values", {"role": Role.MEMBER.value})
    context.setdefault("errors", {})
    context.setdefault("member_errors", [])
    context.setdefault("notice", None)
    return render(
        request,
        "org_members.html",
        status_code=status_code,
        **(await org_context(orgs, access, "members")),
        members=[(m, Role(m.membership.role), can_manage(access, Role(m.membership.role))) for m in members],
        next_cursor=next_cursor,
        invitations=invitations,
        # Never above my own role, as the API refuses.
        role_choices=[role for role in ROLES if access.role.at_least(role)],
        **context,
    )


@router.get(MEMBERS, include_in_schema=False, response_class=HTMLResponse)
async def members_page(
    request: Request, access: OrgPage, orgs: OrgServiceDep, cursor: Cursor = None, invited: bool = False
) -> HTMLResponse:
    return await _members_page(request, access, orgs, cursor=cursor, notice="Invitation sent." if invited else None)


async def _refused(request: Request, access: OrgAccess, orgs: OrgService, error: DomainError) -> HTMLResponse:
    message = error.detail or error.title
    return await _members_page(request, access, orgs, status_code=error.status, member_errors=[message])


@router.post(
    MEMBERS + "/{user_id}/role", include_in_schema=False, response_class=HTMLResponse, max_body_size=MAX_FORM_BYTES
)
async def change_role(request: Request, user_id: uuid.UUID, access: OrgForm, orgs: OrgServiceDep) -> Response:
    access.require(Role.ADMIN)  # as PATCH /orgs/{org}/members/{user_id}
    form = await read_form(request)
    try:
        body = RoleUpdate.model_validate({"role": form.get("role", "")})
    except ValidationError as error:
        messages = [m for ms in validation_errors(error).values() for m in ms]
        return await _members_page(request, access, orgs, status_code=422, member_errors=messages)
    try:
        await orgs.change_role(access, user_id, body.role, ip_of(request))
    except (Conflict, Forbidden) as error:
        return await _refused(request, access, orgs, error)
    return redirect(org_path(access))


@router.post(
    MEMBERS + "/{user_id}/remove", include_in_schema=False, response_class=HTMLResponse, max_body_size=MAX_FORM_BYTES
)
async def remove_member(request: Request, user_id: uuid.UUID, access: OrgForm, orgs: OrgServiceDep) -> Response:
    """Remove someone (admin+), or leave (anyone, for themselves), as DELETE /orgs/{org}/members/{id}."""
    leaving = user_id == access.user.id
    if not leaving:
        access.require(Role.ADMIN)
    try:
        await orgs.remove_member(access, user_id, ip_of(request))
    except (Conflict, Forbidden) as error:
        return await _refused(request, access, orgs, error)
    return redirect(ORGS_PATH if leaving else org_path(access))


@router.post(INVITATIONS, include_in_schema=False, response_class=HTMLResponse, max_body_size=MAX_FORM_BYTES)
async def invite(request: Request, access: OrgForm, orgs: OrgServiceDep) -> Response:
    access.require(Role.ADMIN)  # as POST /orgs/{org}/invitations
    form = await read_form(request)
    values = {"email": form.get("email", ""), "role": form.get("role", Role.MEMBER.value)}
    errors: FieldErrors
    try:
        body = InvitationCreate.model_validate(values)
        await _invitations(orgs).invite(access, body.email, body.role, ip_of(request))
    except ValidationError as error:
        errors, status_code = validation_errors(error), 422
    except (Conflict, Forbidden, QuotaExceeded) as error:
        field = "role" if isinstance(error, Forbidden) else "form" if isinstance(error, QuotaExceeded) else "email"
        errors, status_code = {field: [error.detail or error.title]}, error.status
    else:
        return redirect(org_path(access) + "?invited=1")
    return await _members_page(request, access, orgs, status_code=status_code, values=values, errors=errors)


@router.post(
    INVITATIONS + "/{invitation_id}/revoke",
    include_in_schema=False,
    response_class=HTMLResponse,
    max_body_size=MAX_FORM_BYTES,
)
async def revoke_invitation(
    request: Request, invitation_id: uuid.UUID, access: OrgForm, orgs: OrgServiceDep
) -> Response:
    access.require(Role.ADMIN)  # as DELETE /orgs/{org}/invitations/{id}; 404 page when not pending
    await _invitations(orgs).revoke_invitation(access, invitation_id, ip_of(request))
    return redirect(org_path(access))
