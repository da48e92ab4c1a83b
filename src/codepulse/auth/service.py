"""The auth slice's interface: what other slices and the auth routers use.

The rules live in three services named for what they do:

- `codepulse.auth.sessions` — `SessionService`: bearer sessions and one-time tokens;
- `codepulse.auth.accounts` — `AccountService`: registration, sign-in, profile, passwords, email
  verification, account deletion (and its `on_user_delete` hooks);
- `codepulse.auth.github_accounts` — `GitHubAccountService`: GitHub sign-in, linking, OAuth codes.

Other slices import from here (or those modules), never `auth.models` or `auth.repository`: the
reads below, the types they are handed (`User`, `SessionKind`), `github_link` and the hook
registries `on_user_delete` and `on_user_update`;
`user_stats` for the superusers' platform statistics. Nothing here commits.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from codepulse.auth.accounts import AccountService
from codepulse.auth.accounts import on_user_delete as on_user_delete
from codepulse.auth.accounts import on_user_update as on_user_update
from codepulse.auth.cache import AuthCache
from codepulse.auth.github_accounts import GitHubAccountService
from codepulse.auth.github_accounts import GitHubLink as GitHubLink
from codepulse.auth.github_accounts import browser_binding as browser_binding
from codepulse.auth.github_accounts import github_link as github_link
from codepulse.auth.models import SessionKind as SessionKind
from codepulse.auth.models import User as User
from codepulse.auth.repository import AuthRepository
from codepulse.auth.sessions import SessionService
from codepulse.auth.stats import UserStats as UserStats
from codepulse.auth.stats import user_stats as user_stats
from codepulse.clock import ClockFunc
from codepulse.config import Settings
from codepulse.security import PasswordHasher


class AuthService:
    """The auth routers' one dependency (`AuthServiceDep`): the slice's three services over one
    request session — `service.sessions`, `service.accounts`, `service.github`."""

    def __init__(
        self,
        session: AsyncSession,
        settings: Settings,
        hasher: PasswordHasher,
        clock: ClockFunc,
        cache: AuthCache | None = None,
    ) -> None:
        self.accounts = AccountService(session, settings, hasher, clock, cache)
        self.sessions = self.accounts.sessions
        self.github = GitHubAccountService(session, clock, cache)


# --- for other slices: reads that need no settings ------------------------------------------


async def users_by_ids(session: AsyncSession, user_ids: Collection[uuid.UUID]) -> dict[uuid.UUID, User]:
    return await AuthRepository(session).users_by_ids(user_ids)


async def user_by_id(session: AsyncSession, user_id: uuid.UUID) -> User | None:
    return await AuthRepository(session).user(user_id)


async def user_by_email(session: AsyncSession, email: str) -> User | None:
    return await AuthRepository(session).user_by_email(email)


async def user_by_username(session: AsyncSession, username: str) -> User | None:
    return await AuthRepository(session).user_by_username(username)


async def ensure_session_active(session: AsyncSession, clock: ClockFunc, auth_session_id: uuid.UUID) -> None:
    """Raise 401 (`account_disabled`, `session_revoked`, `session_expired`) unless the session
    still authenticates, read afresh: long-lived streams ask as they poll, and end when it fails."""
    await SessionService(session, clock).ensure_active(auth_session_id)


async def user_timezones(session: AsyncSession) -> list[str]:
    """The distinct time zones users have set (one entry per zone, not per user)."""
    return list(await session.scalars(select(User.timezone).distinct()))


def user_profiles() -> Select[Any, Any, Any, Any, Any, Any]:
    """Users' public-facing columns (`id`, `username`, `name`, `avatar_url`, `timezone`,
    `profile_public`), for upper slices to join in their own set-based SQL."""
    return select(User.id, User.username, User.name, User.avatar_url, User.timezone, User.profile_public)
