"""Queries on the auth domain's tables, and nothing else."""

from __future__ import annotations

import uuid
from collections.abc import Collection
from datetime import datetime

from sqlalchemy import Select, delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from codepulse.auth.models import AuthSession, OAuthAccount, OneTimeToken, User
from codepulse.db import rowcount


class AuthRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, *objects: object) -> None:
        self.session.add_all(objects)
        await self.session.flush()

    # --- users ---------------------------------------------------------------------------

    async def user(self, user_id: uuid.UUID) -> User | None:
        return await self.session.get(User, user_id)

    async def users_by_ids(self, user_ids: Collection[uuid.UUID]) -> dict[uuid.UUID, User]:
        if not user_ids:
            return {}
        users = await self.session.scalars(select(User).where(User.id.in_(list(user_ids))))
        return {user.id: user for user in users}

    async def user_by_email(self, email: str) -> User | None:
        return await self.session.scalar(select(User).where(User.email == email.lower()))

    async def user_by_username(self, username: str) -> User | None:
        return await self.session.scalar(select(User).where(User.username == username.lower()))

    async def user_by_login(self, login: str) -> User | None:
        login = login.strip().lower()
        return await self.session.scalar(select(User).where(or_(User.email == login, User.username == login)))

    async def usernames_like(self, prefix: str) -> set[str]:
        rows = await self.session.scalars(
            select(User.username).where(User.username.startswith(prefix, autoescape=True))
        )
        return set(rows)

    async def delete_user(self, user: User) -> None:
        await self.session.delete(user)
        await self.session.flush()

    # --- sessions ------------------------------------------------------------------------

    async def session_with_user(self, token_hash: str) -> tuple[AuthSession, User] | None:
        row = (
            await self.session.execute(
                select(AuthSession, User)
                .join(User, User.id == AuthSession.user_id)
                .where(AuthSession.token_hash == token_hash)
            )
        ).first()
        return (row[0], row[1]) if row is not None else None

    async def session_with_user_by_id(self, session_id: uuid.UUID) -> tuple[AuthSession, User] | None:
        row = (
            await self.session.execute(
                select(AuthSession, User).join(User, User.id == AuthSession.user_id).where(AuthSession.id == session_id)
            )
        ).first()
        return (row[0], row[1]) if row is not None else None

    async def touch_session(self, session_id: uuid.UUID, *, last_used_at: datetime, expires_at: datetime) -> None:
        # Only forward: concurrent requests of one session may all find a touch due.
        await self.session.execute(
            update(AuthSession)
            .where(AuthSession.id == session_id, AuthSession.last_used_at < last_used_at)
            .values(last_used_at=last_used_at, expires_at=expires_at)
        )

    def active_sessions_query(self, user_id: uuid.UUID, now: datetime) -> Select[AuthSession]:
        return select(AuthSession).where(
            AuthSession.user_id == user_id,
            AuthSession.revoked_at.is_(None),
            AuthSession.expires_at > now,
            AuthSession.absolute_expires_at > now,
        )

    async def revoke_session(self, session_id: uuid.UUID, user_id: uuid.UUID, now: datetime) -> bool:
        result = await self.session.execute(
            update(AuthSession)
            .where(AuthSession.id == session_id, AuthSession.user_id == user_id, AuthSession.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        return rowcount(result) == 1

    async def revoke_sessions(self, user_id: uuid.UUID, now: datetime, *, keep: uuid.UUID | None = None) -> int:
        statement = update(AuthSession).where(AuthSession.user_id == user_id, AuthSession.revoked_at.is_(None))
        if keep is not None:
            statement = statement.where(AuthSession.id != keep)
        return rowcount(await self.session.execute(statement.values(revoked_at=now)))

    # --- one-time tokens -----------------------------------------------------------------

    async def one_time_token(self, token_hash: str, purpose: str) -> OneTimeToken | None:
        return await self.session.scalar(
            select(OneTimeToken).where(OneTimeToken.token_hash == token_hash, OneTimeToken.purpose == purpose)
        )

    async def use_token(self, token_id: uuid.UUID, now: datetime) -> bool:
        """Mark used; False if it already was (a concurrent use won): single use holds under races."""
        result = await self.session.execute(
            update(OneTimeToken).where(OneTimeToken.id == token_id, OneTimeToken.used_at.is_(None)).values(used_at=now)
        )
        return rowcount(result) == 1

    async def void_tokens(self, user_id: uuid.UUID, purpose: str, now: datetime) -> None:
        await self.session.execute(
            update(OneTimeToken)
            .where(OneTimeToken.user_id == user_id, OneTimeToken.purpose == purpose, OneTimeToken.used_at.is_(None))
            .values(used_at=now)
        )

    # --- OAuth accounts ------------------------------------------------------------------

    async def oauth_account(self, provider: str, provider_user_id: str) -> OAuthAccount | None:
        return await self.session.scalar(
            select(OAuthAccount).where(
                OAuthAccount.provider == provider, OAuthAccount.provider_user_id == provider_user_id
            )
        )

    async def oauth_account_of(self, user_id: uuid.UUID, provider: str) -> OAuthAccount | None:
        return await self.session.scalar(
            select(OAuthAccount).where(OAuthAccount.user_id == user_id, OAuthAccount.provider == provider)
        )

    async def oauth_providers(self, user_id: uuid.UUID) -> list[str]:
        rows = await self.session.scalars(select(OAuthAccount.provider).where(OAuthAccount.user_id == user_id))
        return sorted(rows)

    async def delete_oauth_account(self, account: OAuthAccount) -> None:
        await self.session.delete(account)
        await self.session.flush()

    # --- housekeeping --------------------------------------------------------------------

    async def purge(self, now: datetime, *, revoked_before: datetime) -> tuple[int, int]:
        sessions = await self.session.execute(
            delete(AuthSession).where(
                or_(
                    AuthSession.expires_at < now,
                    AuthSession.absolute_expires_at < now,
                    AuthSession.revoked_at < revoked_before,
                )
            )
        )
        tokens = await self.session.execute(
            delete(OneTimeToken).where(or_(OneTimeToken.expires_at < now, OneTimeToken.used_at < revoked_before))
        )
        return rowcount(sessions), rowcount(tokens)
