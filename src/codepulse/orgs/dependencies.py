"""The dependency family every org-scoped route uses, in every domain:

    @router.get("/orgs/{org}/things")
    async def list_things(access: OrgViewer) -> ...          # any member
    async def create_thing(access: OrgAdmin) -> ...          # admin or owner
    async def custom(access: Annotated[OrgAccess, OrgMember(Role.MEMBER)]) -> ...

`{org}` is the organization's id or slug. An outsider (or a missing organization) gets 404, a
member below the role 403 `insufficient_role`; superusers pass. The membership is loaded once.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Path, Request

from codepulse.auth.dependencies import CurrentUser
from codepulse.db import DbSession
from codepulse.orgs.models import Role
from codepulse.orgs.service import OrgAccess, OrgService

OrgRef = Annotated[str, Path(description="The organization's id or slug.", min_length=1, max_length=60)]


async def org_service(request: Request, session: DbSession) -> OrgService:
    return OrgService(session, request.app.state.settings, request.app.state.clock)


OrgServiceDep = Annotated[OrgService, Depends(org_service)]


def OrgMember(min_role: Role = Role.VIEWER) -> Any:
    async def dependency(org: OrgRef, user: CurrentUser, service: OrgServiceDep) -> OrgAccess:
        return await service.access(user, org, min_role)

    dependency.__name__ = f"org_{min_role.value}"
    return Depends(dependency)


OrgViewer = Annotated[OrgAccess, OrgMember(Role.VIEWER)]
OrgMemberAccess = Annotated[OrgAccess, OrgMember(Role.MEMBER)]
OrgAdmin = Annotated[OrgAccess, OrgMember(Role.ADMIN)]
OrgOwner = Annotated[OrgAccess, OrgMember(Role.OWNER)]
