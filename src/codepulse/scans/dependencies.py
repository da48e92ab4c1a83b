"""Dependencies of the scans routes, offered to other modules too (the live progress stream):

    @router.get("/scans/{scan_id}")
    async def get_scan(target: ScanViewer) -> ...             # any member of its organization
    async def cancel_scan(target: ScanMemberAccess) -> ...    # member+

The guards come from `codepulse.orgs.dependencies.org_scoped_guard`: an outsider (or a missing
scan or finding) gets 404 `scan_not_found` / `finding_not_found`, a member below the role 403
`insufficient_role`; superusers pass.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Depends, Path, Request

from codepulse.db import DbSession
from codepulse.orgs.dependencies import org_scoped_guard
from codepulse.orgs.service import Role
from codepulse.scans.models import Finding, Scan
from codepulse.scans.repository import ScanRepository
from codepulse.scans.service import FindingAccess, ScanAccess, ScanService

ScanId = Annotated[uuid.UUID, Path(description="The scan's id.")]
FindingId = Annotated[uuid.UUID, Path(description="The finding's id.")]


async def scan_service(request: Request, session: DbSession) -> ScanService:
    state = request.app.state
    return ScanService(session, state.settings, state.clock)


ScanServiceDep = Annotated[ScanService, Depends(scan_service)]


async def find_scan(scan_id: ScanId, session: DbSession) -> Scan | None:
    return await ScanRepository(session).get_scan(scan_id)


async def find_finding(finding_id: FindingId, session: DbSession) -> Finding | None:
    return await ScanRepository(session).get_finding(finding_id)


def _org_of(obj: Scan | Finding) -> uuid.UUID:
    return obj.org_id


ScanMember = org_scoped_guard("scan", find_scan, org_of=_org_of, grant=ScanAccess)
FindingMember = org_scoped_guard("finding", find_finding, org_of=_org_of, grant=FindingAccess)

ScanViewer = Annotated[ScanAccess, ScanMember(Role.VIEWER)]
ScanMemberAccess = Annotated[ScanAccess, ScanMember(Role.MEMBER)]
FindingMemberAccess = Annotated[FindingAccess, FindingMember(Role.MEMBER)]
