"""The scans slice's reactions to events of the slices below it (see `codepulse.hooks`).

Deleting an organization (a soft delete: its row stays for the audit trail, so no foreign key
cascades) removes its repositories through the repositories slice's hook, and with them their
scans and findings; the cached engine results are keyed by organization, not repository, so
scans removes them here.
"""

from __future__ import annotations

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession

from codepulse.orgs import service as orgs_service
from codepulse.orgs.service import Organization
from codepulse.scans.models import ScanResultCache


async def forget_cached_results(session: AsyncSession, org: Organization) -> None:
    """An organization is being deleted: its cached scan results go."""
    await session.execute(delete(ScanResultCache).where(ScanResultCache.org_id == org.id))


def register_hooks() -> None:
    """Called by `create_app` at start-up; registering again is a no-op."""
    orgs_service.on_org_delete(forget_cached_results)
