"""Platform figures about repositories for the superusers' statistics (`codepulse.admin.stats`)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from codepulse.repositories.models import Repository


@dataclass(frozen=True)
class RepositoryStats:
    connected: int  # not archived
    archived: int


async def repository_stats(session: AsyncSession) -> RepositoryStats:
    row = (
        await session.execute(
            select(
                func.count(), func.coalesce(func.sum(case((Repository.archived.is_(True), 1), else_=0)), 0)
            ).select_from(Repository)
        )
    ).one()
    return RepositoryStats(connected=int(row[0]) - int(row[1]), archived=int(row[1]))
