"""Accounts a superuser keeps off every board (abuse, test accounts): `leaderboard_exclusions`,
read by the recompute, which ranks nobody listed there.

Every exclusion and removal writes a platform audit event (`leaderboard.user_excluded`,
`leaderboard.user_included`; no organization's audit log shows them) in the request's
transaction, and clears this process's board page cache once that transaction commits, so the
next read of a board here no longer serves a page computed with the account's old standing
(other replicas' caches expire within LEADERBOARD_CACHE_SECONDS; the boards themselves change at
the next recompute).

Excluding is idempotent: excluding an excluded account again keeps its one row (and when it was
first excluded), and replaces the reason and `excluded_by` when the reason changes. Repeating it
unchanged writes nothing, so it is not audited again.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import cast

import structlog
from sqlalchemy import Table, delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from codepulse.auth import service as auth_service
from codepulse.auth.service import User
from codepulse.clock import ClockFunc
from codepulse.db import after_commit, upsert
from codepulse.errors import NotFound
from codepulse.leaderboard.cache import board_cache
from codepulse.leaderboard.models import LeaderboardExclusion
from codepulse.orgs.service import audit_platform_event
from codepulse.pagination import PageRequest, SortKey, paginate

log = structlog.get_logger("codepulse.leaderboard")

EXCLUSIONS = cast(Table, LeaderboardExclusion.__table__)
USER_EXCLUDED = "leaderboard.user_excluded"
USER_INCLUDED = "leaderboard.user_included"


@dataclass(frozen=True)
class Exclusion:
    exclusion: LeaderboardExclusion
    user: User


@dataclass(frozen=True)
class ExclusionResult:
    exclusion: Exclusion
    created: bool  # False: the account was already excluded


class ExclusionService:
    def __init__(self, session: AsyncSession, clock: ClockFunc) -> None:
        self.session = session
        self.clock = clock

    async def exclude(self, admin: User, user_id: uuid.UUID, reason: str | None, ip: str | None) -> ExclusionResult:
        """Keep `user_id` off every board; 404 `user_not_found` for an unknown account."""
        user = await self._user(user_id)
        row = await self._row(user_id)
        created = False
        if row is None:
            # ON CONFLICT DO NOTHING: of two concurrent first exclusions one inserts, the other
            # finds the row below and updates it, instead of failing on the primary key.
            statement = upsert(self.session, EXCLUSIONS, conflict=["user_id"]).returning(EXCLUSIONS.c.user_id)
            values = {"user_id": user_id, "reason": reason, "excluded_by": admin.id, "created_at": self.clock()}
            created = (await self.session.execute(statement, values)).first() is not None
            row = await self._row(user_id)
            if row is None:  # pragma: no cover - inserted just now, and rows go only with their user
                raise NotFound("user")
        if created:
            await self._audit(admin, USER_EXCLUDED, user, {"reason": reason}, ip)
        elif row.reason != reason:
            previous = row.reason
            row.reason, row.excluded_by = reason, admin.id
            await self.session.flush()
            await self._audit(admin, USER_EXCLUDED, user, {"reason": reason, "previous_reason": previous}, ip)
        return ExclusionResult(Exclusion(row, user), created)

    async def include(self, admin: User, user_id: uuid.UUID, ip: str | None) -> None:
        """Let `user_id` back onto the boards; 404 `user_not_found` for an unknown account,
        404 `leaderboard_exclusion_not_found` when it is not excluded."""
        user = await self._user(user_id)
        removed = await self.session.execute(
            delete(LeaderboardExclusion)
            .where(LeaderboardExclusion.user_id == user_id)
            .returning(LeaderboardExclusion.reason)
        )
        found = removed.first()
        if found is None:
            raise NotFound("leaderboard_exclusion", f"{user.username} is not excluded from the leaderboards.")
        await self._audit(admin, USER_INCLUDED, user, {"previous_reason": found.reason}, ip)

    async def exclusions(self, page: PageRequest) -> tuple[list[Exclusion], str | None]:
        """Excluded accounts, most recently excluded first."""
        rows, next_cursor = await paginate(
            self.session,
            select(LeaderboardExclusion),
            order=[SortKey(LeaderboardExclusion.created_at, "desc")],
            params=page,
        )
        users = await auth_service.users_by_ids(self.session, {row.user_id for row in rows})
        # Rows go with their user (ON DELETE CASCADE); one deleted between the two reads is skipped.
        return [Exclusion(row, users[row.user_id]) for row in rows if row.user_id in users], next_cursor

    async def _user(self, user_id: uuid.UUID) -> User:
        user = await auth_service.user_by_id(self.session, user_id)
        if user is None:
            raise NotFound("user")
        return user

    async def _row(self, user_id: uuid.UUID) -> LeaderboardExclusion | None:
        # FOR UPDATE (PostgreSQL; SQLite writers are serialised anyway): a concurrent change of
        # the same exclusion waits, so the audited previous reason is the one replaced.
        statement = (
            select(LeaderboardExclusion)
            .where(LeaderboardExclusion.user_id == user_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        row: LeaderboardExclusion | None = await self.session.scalar(statement)
        return row

    async def _audit(
        self, admin: User, action: str, user: User, details: dict[str, str | None], ip: str | None
    ) -> None:
        await audit_platform_event(self.session, self.clock, admin, action, "user", user.id, details, ip)
        log.info(action, user_id=str(user.id), admin_id=str(admin.id))
        after_commit(self.session, board_cache.clear)
