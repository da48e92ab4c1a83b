"""Access to an organization's pages (`/orgs/{slug}/...`): the signed-in viewer's role there and
the organization's objects (a repository, a scan, a finding) named in the path.

The rules are the API guards' (`codepulse.orgs.dependencies.org_scoped_guard`), with the cookie's
viewer instead of a bearer token: an outsider (or a missing organization or object, or an object
of another organization) gets the 404 page, a member below the role the 403 page. A
state-changing route checks its CSRF token before any of this runs (`SessionCsrf`).
"""

from __future__ import annotations

import uuid

from codepulse.errors import NotFound
from codepulse.orgs.service import OrgAccess, OrgService, Role
from codepulse.repositories import service as repositories_service
from codepulse.repositories.service import RepositoryAccess
from codepulse.scans.service import FindingAccess, ScanAccess, ScanService
from codepulse.web.session import Viewer

SLUG_MAX_LENGTH = 60


async def org_access(orgs: OrgService, viewer: Viewer, slug: str, min_role: Role = Role.VIEWER) -> OrgAccess:
    """404 for an outsider or no such organization, 403 below `min_role`."""
    if not slug or len(slug) > SLUG_MAX_LENGTH:
        raise NotFound("organization")
    return await orgs.access(viewer.user, slug, min_role)


async def repository_access(orgs: OrgService, viewer: Viewer, slug: str, repository_id: uuid.UUID,
                            min_role: Role = Role.VIEWER) -> RepositoryAccess:  # fmt: skip
    access = await org_access(orgs, viewer, slug, min_role)
    repository = await repositories_service.get_repository(orgs.session, repository_id)
    if repository is None or repository.org_id != access.org.id:
        raise NotFound("repository")
    return RepositoryAccess(repository, access)


async def scan_access(orgs: OrgService, scans: ScanService, viewer: Viewer, slug: str, scan_id: uuid.UUID,
                      min_role: Role = Role.VIEWER) -> ScanAccess:  # fmt: skip
    access = await org_access(orgs, viewer, slug, min_role)
    try:
        target = await scans.scan_access(viewer.user, scan_id, min_role)
    except NotFound:
        raise NotFound("scan") from None
    if target.scan.org_id != access.org.id:
        raise NotFound("scan")
    return target


async def finding_access(orgs: OrgService, scans: ScanService, viewer: Viewer, slug: str, finding_id: uuid.UUID,
                         min_role: Role = Role.VIEWER) -> FindingAccess:  # fmt: skip
    access = await org_access(orgs, viewer, slug, min_role)
    try:
        target = await scans.finding_access(viewer.user, finding_id, min_role)
    except NotFound:
        raise NotFound("finding") from None
    if target.finding.org_id != access.org.id:
        raise NotFound("finding")
    return target
