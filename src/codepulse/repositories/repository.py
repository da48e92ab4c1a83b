"""Queries on the repositories domain's tables, and nothing else."""

from __future__ import annotations

import uuid
from collections.abc import Collection
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, delete, func, literal, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from codepulse.db import UTCDateTime, rowcount
from codepulse.pagination import SortKey
from codepulse.repositories.models import Provider, Repository
from codepulse.repositories.schemas import RepositorySort

# Sorts never-scanned repositories after every scanned one in "most recent scan first".
_NEVER = datetime(1970, 1, 1, tzinfo=UTC)


class RepositoryRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, *objects: object) -> None:
        self.session.add_all(objects)
        await self.session.flush()

    async def get(self, repository_id: uuid.UUID) -> Repository | None:
        return await self.session.get(Repository, repository_id)

    async def by_canonical_url(self, org_id: uuid.UUID, canonical_url: str) -> Repository | None:
        return await self.session.scalar(
            select(Repository).where(Repository.org_id == org_id, Repository.canonical_url == canonical_url)
        )

    async def matching(
        self, org_id: uuid.UUID, *, github_ids: Collection[str], canonical_urls: Collection[str]
    ) -> list[Repository]:
        """Repositories of the organization that are one of these GitHub repositories (by id) or
        URLs (by canonical form)."""
        conditions: list[ColumnElement[bool]] = []
        if github_ids:
            conditions.append(
                (Repository.provider == Provider.GITHUB.value) & Repository.external_id.in_(list(github_ids))
            )
        if canonical_urls:
            conditions.append(Repository.canonical_url.in_(list(canonical_urls)))
        if not conditions:
            return []
        rows = await self.session.scalars(select(Repository).where(Repository.org_id == org_id, or_(*conditions)))
        return list(rows)

    async def count_active(self, org_id: uuid.UUID) -> int:
        return int(
            await self.session.scalar(
                select(func.count()).where(Repository.org_id == org_id, Repository.archived.is_(False))
            )
            or 0
        )

    async def delete(self, repository: Repository) -> None:
        await self.session.delete(repository)
        await self.session.flush()

    def list_query(
        self, org_id: uuid.UUID, *, q: str | None, provider: Provider | None, archived: bool | None
    ) -> Select[Repository]:
        query = select(Repository).where(Repository.org_id == org_id)
        if q:
            needle = q.lower()
            query = query.where(
                or_(
                    func.lower(Repository.name).contains(needle, autoescape=True),
                    func.lower(Repository.canonical_url).contains(needle, autoescape=True),
                )
            )
        if provider is not None:
            query = query.where(Repository.provider == provider.value)
        if archived is not None:
            query = query.where(Repository.archived.is_(archived))
        return query

    @staticmethod
    def order(sort: RepositorySort) -> list[SortKey]:
        """The list's keys; ties fall back to the name (A-Z), then the id."""
        by_name = SortKey(func.lower(Repository.name), type=str, nullable=False)
        if sort is RepositorySort.LAST_SCAN:
            last = func.coalesce(Repository.last_scan_finished_at, literal(_NEVER, UTCDateTime()))
            return [SortKey(last, "desc", type=datetime, nullable=False), by_name]
        if sort is RepositorySort.OPEN_FINDINGS:
            # Most severe first: critical, then high, medium and low break ties.
            return [
                SortKey(Repository.open_critical, "desc"),
                SortKey(Repository.open_high, "desc"),
                SortKey(Repository.open_medium, "desc"),
                SortKey(Repository.open_low, "desc"),
                by_name,
            ]
        return [by_name]

    async def set_scan_summary(
        self, repository_id: uuid.UUID, values: dict[str, Any], *, finished_at: datetime
    ) -> bool:
        """Write the summary unless a later finished scan is already recorded; True if written."""
        stmt = (
            update(Repository)
            .where(
                Repository.id == repository_id,
                or_(Repository.last_scan_finished_at.is_(None), Repository.last_scan_finished_at <= finished_at),
            )
            .values(**values)
        )
        result = await self.session.execute(stmt)
        return rowcount(result) == 1

    async def with_schedule(self, schedules: Collection[str]) -> list[Repository]:
        rows = await self.session.scalars(
            select(Repository)
            .where(Repository.scan_schedule.in_(list(schedules)), Repository.archived.is_(False))
            .order_by(Repository.id)
        )
        return list(rows)

    async def delete_for_org(self, org_id: uuid.UUID) -> int:
        result = await self.session.execute(delete(Repository).where(Repository.org_id == org_id))
        return rowcount(result)
