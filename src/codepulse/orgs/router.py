"""HTTP endpoints of the orgs domain: /orgs (organizations, members, invitations, audit log)
and /invitations (mine, accept)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Query, Request, Response, status

from codepulse.auth.dependencies import CurrentUser, device_of
from codepulse.config import Settings
from codepulse.orgs.dependencies import InvitationServiceDep, OrgAdmin, OrgOwner, OrgServiceDep, OrgViewer
from codepulse.orgs.quotas import plan_id
from codepulse.orgs.schemas import (
    AcceptIn,
    AuditEventOut,
    InvitationCreate,
    InvitationOut,
    MemberOut,
    MemberUser,
    MyInvitation,
    OrgCreate,
    OrgDelete,
    OrgOut,
    OrgSummary,
    OrgUpdate,
    RoleUpdate,
)
from codepulse.orgs.service import Member, OrgAccess, Organization, Role
from codepulse.pagination import Page, PageParams
from codepulse.routing import DomainRouter

router = DomainRouter(prefix="/orgs", tags=["orgs"])
invitations_router = DomainRouter(prefix="/invitations", tags=["invitations"])


def _org_out(access: OrgAccess, settings: Settings) -> OrgOut:
    role = access.role if access.membership is not None else None
    return _org_with(access.org, role, settings)


def _org_with(org: Organization, role: Role | None, settings: Settings) -> OrgOut:
    return OrgOut(
        id=org.id,
        name=org.name,
        slug=org.slug,
        avatar_url=org.avatar_url,
        created_at=org.created_at,
        role=role,
        plan=plan_id(org, settings),
    )


def _member_out(member: Member) -> MemberOut:
    return MemberOut(
        user=MemberUser.model_validate(member.user), role=member.membership.role, joined_at=member.membership.created_at
    )


def _ip(request: Request) -> str | None:
    return device_of(request).ip


@router.post("", status_code=status.HTTP_201_CREATED, summary="Create an organization (I become its owner)")
async def create_org(body: OrgCreate, request: Request, user: CurrentUser, service: OrgServiceDep) -> OrgOut:
    return _org_out(await service.create(user, body, _ip(request)), service.settings)


@router.get("", summary="My organizations, with my role")
async def list_orgs(user: CurrentUser, service: OrgServiceDep, page: PageParams) -> Page[OrgOut]:
    rows, next_cursor = await service.list_mine(user, page)
    items = [_org_with(org, role, service.settings) for org, role in rows]
    return Page(items=items, next_cursor=next_cursor)


@router.get("/{org}", summary="One organization")
async def get_org(access: OrgViewer, request: Request) -> OrgOut:
    return _org_out(access, request.app.state.settings)


@router.patch("/{org}", summary="Update name, slug or avatar (admin+)")
async def update_org(body: OrgUpdate, request: Request, access: OrgAdmin, service: OrgServiceDep) -> OrgOut:
    """A new slug takes effect at once and the old one stops resolving (and may be taken by
    another organization): links should use the id."""
    await service.update(access, body, _ip(request))
    return _org_out(access, service.settings)


@router.delete("/{org}", status_code=status.HTTP_204_NO_CONTENT, summary="Delete the organization (owner)")
async def delete_org(body: OrgDelete, request: Request, access: OrgOwner, service: OrgServiceDep) -> Response:
    await service.delete(access, body.confirm_slug, _ip(request))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{org}/members", summary="Members with their profile and role")
async def list_members(access: OrgViewer, service: OrgServiceDep, page: PageParams) -> Page[MemberOut]:
    members, next_cursor = await service.members(access, page)
    return Page(items=[_member_out(m) for m in members], next_cursor=next_cursor)


@router.patch("/{org}/members/{user_id}", summary="Change a member's role (admin+; owners for owners)")
async def change_member_role(
    user_id: uuid.UUID, body: RoleUpdate, request: Request, access: OrgAdmin, service: OrgServiceDep
) -> MemberOut:
    return _member_out(await service.change_role(access, user_id, body.role, _ip(request)))


@router.delete("/{org}/members/{user_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Remove a member, or leave")
async def remove_member(user_id: uuid.UUID, request: Request, access: OrgViewer, service: OrgServiceDep) -> Response:
    """Anyone may remove themselves (leave); removing others needs admin."""
    await service.remove_member(access, user_id, _ip(request))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{org}/invitations", status_code=status.HTTP_201_CREATED, summary="Invite by email (admin+)")
async def create_invitation(
    body: InvitationCreate,
    request: Request,
    access: OrgAdmin,
    service: InvitationServiceDep,
) -> InvitationOut:
    return InvitationOut.model_validate(await service.invite(access, body.email, body.role, _ip(request)))


@router.get("/{org}/invitations", summary="Pending invitations (admin+)")
async def list_invitations(access: OrgAdmin, service: InvitationServiceDep, page: PageParams) -> Page[InvitationOut]:
    invitations, next_cursor = await service.pending_invitations(access, page)
    return Page(items=[InvitationOut.model_validate(i) for i in invitations], next_cursor=next_cursor)


@router.delete(
    "/{org}/invitations/{invitation_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Revoke an invitation"
)
async def revoke_invitation(
    invitation_id: uuid.UUID, request: Request, access: OrgAdmin, service: InvitationServiceDep
) -> Response:
    await service.revoke_invitation(access, invitation_id, _ip(request))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{org}/audit-log", summary="Audit events, newest first (admin+)")
async def audit_log(
    access: OrgAdmin,
    service: OrgServiceDep,
    page: PageParams,
    action: Annotated[str | None, Query(max_length=64, description="Action or prefix, e.g. `member.`")] = None,
) -> Page[AuditEventOut]:
    events, next_cursor = await service.audit_log(access, action, page)
    return Page(items=[AuditEventOut.model_validate(e) for e in events], next_cursor=next_cursor)


@invitations_router.get("", summary="Pending invitations to my email")
async def my_invitations(user: CurrentUser, service: InvitationServiceDep, page: PageParams) -> Page[MyInvitation]:
    """Each says whether I can accept it now and, if not, why (`email_not_verified`)."""
    rows, next_cursor = await service.invitations_for(user, page)
    reason = service.acceptable(user)
    items = [
        MyInvitation(
            id=invitation.id,
            org=OrgSummary.model_validate(org) if reason is None else None,
            role=invitation.role,
            expires_at=invitation.expires_at,
            can_accept=reason is None,
            reason=reason,
        )
        for invitation, org in rows
    ]
    return Page(items=items, next_cursor=next_cursor)


@invitations_router.post("/accept", summary="Accept an invitation with the mailed token")
async def accept_invitation(
    body: AcceptIn, request: Request, user: CurrentUser, service: InvitationServiceDep
) -> OrgOut:
    """My verified email must be the invited one."""
    return _org_out(await service.accept(user, body.token, _ip(request)), service.settings)


@invitations_router.post("/{invitation_id}/accept", summary="Accept one of my invitations")
async def accept_my_invitation(
    invitation_id: uuid.UUID, request: Request, user: CurrentUser, service: InvitationServiceDep
) -> OrgOut:
    """An id from `GET /invitations`. 404 `invitation_not_found` when it is not a pending invitation
    to my email; 403 `email_not_verified` before the email is verified."""
    return _org_out(await service.accept_by_id(user, invitation_id, _ip(request)), service.settings)


@invitations_router.post(
    "/{invitation_id}/decline", status_code=status.HTTP_204_NO_CONTENT, summary="Decline one of my invitations"
)
async def decline_my_invitation(
    invitation_id: uuid.UUID, request: Request, user: CurrentUser, service: InvitationServiceDep
) -> Response:
    """The organization's audit log records it (`invitation.declined`)."""
    await service.decline(user, invitation_id, _ip(request))
    return Response(status_code=status.HTTP_204_NO_CONTENT)
