"""The repositories slice's reactions to events of the slices below it (see `codepulse.hooks`)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from codepulse.orgs import service as orgs_service
from codepulse.orgs.service import Organization
from codepulse.repositories.deleting import DeletingRepositories, delete_hooks
from codepulse.repositories.repository import RepositoryRepository


async def delete_org_repositories(session: AsyncSession, org: Organization) -> None:
    """An organization is being deleted: its repositories go (after the `on_repositories_delete`
    hooks), and with them (their foreign keys cascade) their scans and findings."""
    await delete_hooks.run(session, DeletingRepositories(org.id))
    await RepositoryRepository(session).delete_for_org(org.id)


def register_hooks() -> None:
    """Called by `create_app` at start-up; registering again is a no-op."""
    orgs_service.on_org_delete(delete_org_repositories)
