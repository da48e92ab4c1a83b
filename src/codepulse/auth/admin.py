"""Superusers' administration of accounts: find them, look at one, disable it, grant or revoke
superuser.

Disabling an account ends every session and CLI token at once (revoked, and forgotten by the auth
cache of this process after the commit) and refuses every sign-in from then on with 401
`account_disabled` (`codepulse.auth.sessions.ensure_enabled`). Two rules hold under concurrency,
behind one advisory lock: the last enabled superuser can be neither demoted nor disabled (409
`last_superuser`), and no superuser disables themselves (409 `cannot_disable_self`).

Each change runs the `on_user_admin_change` hooks in its transaction: orgs records it as a platform
audit event with the acting superuser, notifications wakes the account's open streams so they end
now. Nothing here commits.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import structlog
from sqlalchemy import Select, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from codepulse.auth.admin_schemas import AdminUserUpdate
from codepulse.auth.cache import AuthCache
from codepulse.auth.models import AuthSession, User
from codepulse.auth.repository import AuthRepository
from codepulse.auth.sessions import SessionService
from codepulse.clock import ClockFunc
from codepulse.db import advisory_xact_lock
from codepulse.errors import Conflict, NotFound
from codepulse.hooks import HookRegistry
from codepulse.pagination import PageRequest, SortKey, paginate

log = structlog.get_logger("codepulse.auth.admin")

SUPERUSERS_LOCK = "auth:superusers"

# The audit actions of a change, in this order.
USER_DISABLED = "user.disabled"
USER_ENABLED = "user.enabled"
SUPERUSER_GRANTED = "user.superuser_granted"
SUPERUSER_REVOKED = "user.superuser_revoked"


@dataclass(frozen=True)
class UserAdminChange:
    """What a superuser changed on an account, for the `on_user_admin_change` hooks."""

    actor: User
    user: User
    actions: tuple[str, ...]
    at: datetime
    ip: str | None
    sessions_revoked: int = 0


user_admin_hooks: HookRegistry[UserAdminChange] = HookRegistry("user.admin_change")
on_user_admin_change = user_admin_hooks.register
"""Register `async (session, change) -> None`, run after a superuser's change of an account is
flushed, in its transaction (orgs audits it; notifications ends the account's streams)."""


@dataclass(frozen=True)
class UserActivity:
    """An account's sessions as a superuser sees them."""

    sessions_count: int
    """Sessions and CLI tokens that still authenticate."""
    last_activity_at: datetime | None
    """The last request of any of its sessions (revoked ones included), at a minute's precision."""


def _search(query: Select[User], q: str | None) -> Select[User]:
    text = (q or "").strip().lower()
    if not text:
        return query
    return query.where(
        or_(
            User.email.contains(text, autoescape=True),
            User.username.contains(text, autoescape=True),
            func.lower(User.name).contains(text, autoescape=True),
        )
    )


class UserAdminService:
    def __init__(self, session: AsyncSession, clock: ClockFunc, cache: AuthCache | None = None) -> None:
        self.session = session
        self.repo = AuthRepository(session)
        self.sessions = SessionService(session, clock, cache)
        self.clock = clock

    async def users(
        self, page: PageRequest, *, q: str | None = None, superuser: bool | None = None, disabled: bool | None = None
    ) -> tuple[list[User], str | None]:
        """Accounts, newest first; `q` matches part of the email, username or name (any case)."""
        query = _search(select(User), q)
        if superuser is not None:
            query = query.where(User.is_superuser.is_(superuser))
        if disabled is not None:
            query = query.where(User.disabled_at.is_not(None) if disabled else User.disabled_at.is_(None))
        return await paginate(self.session, query, order=[SortKey(User.created_at, "desc")], params=page)

    async def user(self, user_id: uuid.UUID) -> User:
        user = await self.repo.user(user_id)
        if user is None:
            raise NotFound("user")
        return user

    async def activity(self, user: User) -> UserActivity:
        count = await self.session.scalar(
            select(func.count()).select_from(self.repo.active_sessions_query(user.id, self.clock()).subquery())
        )
        last = await self.session.scalar(
            select(func.max(AuthSession.last_used_at)).where(AuthSession.user_id == user.id)
        )
        return UserActivity(sessions_count=count or 0, last_activity_at=last)

    async def update(self, actor: User, user_id: uuid.UUID, changes: AdminUserUpdate, ip: str | None) -> User:
        """Apply `changes` (`disabled`, `is_superuser`; unset fields stay) under the superusers' lock."""
        # Every change of superusers waits for the others: two superusers disabling each other
        # at once cannot both pass the last-superuser check.
        await advisory_xact_lock(self.session, SUPERUSERS_LOCK)
        user = await self.session.get(User, user_id, populate_existing=True)
        if user is None:
            raise NotFound("user")
        disable = changes.disabled is True and user.disabled_at is None
        enable = changes.disabled is False and user.disabled_at is not None
        grant = changes.is_superuser is True and not user.is_superuser
        revoke = changes.is_superuser is False and user.is_superuser
        if disable and user.id == actor.id:
            raise Conflict("You cannot disable your own account.", code="cannot_disable_self")
        if (disable or revoke) and user.is_superuser and user.disabled_at is None:
            await self._ensure_other_superuser(user)
        if not (disable or enable or grant or revoke):
            return user
        now = self.clock()
        revoked = 0
        if disable:
            user.disabled_at = now
            revoked = await self.sessions.revoke_all_sessions(user)
        if enable:
            user.disabled_at = None
        if grant or revoke:
            user.is_superuser = grant
        await self.session.flush()
        self.sessions.forget(user)
        flags = {USER_DISABLED: disable, USER_ENABLED: enable, SUPERUSER_GRANTED: grant, SUPERUSER_REVOKED: revoke}
        actions = tuple(action for action, done in flags.items() if done)
        await user_admin_hooks.run(self.session, UserAdminChange(actor, user, actions, now, ip, revoked))
        log.info("user.admin_change", user_id=str(user.id), actor_id=str(actor.id), actions=list(actions))
        return user

    async def _ensure_other_superuser(self, user: User) -> None:
        others = await self.session.scalar(
            select(func.count())
            .select_from(User)
            .where(User.is_superuser.is_(True), User.disabled_at.is_(None), User.id != user.id)
        )
        if not others:
            raise Conflict("This is the last superuser: make another account a superuser first.", code="last_superuser")
