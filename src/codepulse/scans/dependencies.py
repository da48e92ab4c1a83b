"""Dependencies of the scans routes, offered to other modules too (the live progress stream):

    @router.get("/scans/{scan_id}")
    async def get_scan(target: ScanViewer) -> ...             # any member of its organization
    async def cancel_scan(target: ScanMemberAccess) -> ...    # member+

An outsider (or a missing scan or finding) gets 404 `scan_not_found` / `finding_not_found`, a
member below the role 403 `insufficient_role`; superusers pass.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import Depends, Path, Request

from codepulse.auth.dependencies import CurrentUser
from codepulse.db import DbSession
from codepulse.orgs.models import Role
from codepulse.scans.service import FindingAccess, ScanAccess, ScanService

ScanId = Annotated[uuid.UUID, Path(description="The scan's id.")]
FindingId = Annotated[uuid.UUID, Path(description="The finding's id.")]


async def scan_service(request: Request, session: DbSession) -> ScanService:
    state = request.app.state
    return ScanService(session, state.settings, state.clock)


ScanServiceDep = Annotated[ScanService, Depends(scan_service)]


def ScanMember(min_role: Role = Role.VIEWER) -> Any:
    async def dependency(scan_id: ScanId, user: CurrentUser, service: ScanServiceDep) -> ScanAccess:
        return await service.scan_access(user, scan_id, min_role)

    dependency.__name__ = f"scan_{min_role.value}"
    return Depends(dependency)


def FindingMember(min_role: Role = Role.VIEWER) -> Any:
    async def dependency(finding_id: FindingId, user: CurrentUser, service: ScanServiceDep) -> FindingAccess:
        return await service.finding_access(user, finding_id, min_role)

    dependency.__name__ = f"finding_{min_role.value}"
    return Depends(dependency)


ScanViewer = Annotated[ScanAccess, ScanMember(Role.VIEWER)]
ScanMemberAccess = Annotated[ScanAccess, ScanMember(Role.MEMBER)]
FindingMemberAccess = Annotated[FindingAccess, FindingMember(Role.MEMBER)]
