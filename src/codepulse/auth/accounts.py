"""Accounts: registration, password sign-in, profile, passwords, email verification, deletion.

`AccountService` holds the rules about a user's own account; the sessions it opens come from
`codepulse.auth.sessions`. Deleting an account runs the `on_user_delete` hooks first, in the same
transaction: upper slices register their rules there at start-up (orgs refuses to delete the last
owner of an organization), because auth may not import them (see `codepulse.hooks`).
Nothing here commits.
"""

from __future__ import annotations

import re
import uuid
from datetime import timedelta

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from codepulse.auth.cache import AuthCache
from codepulse.auth.models import AuthSession, SessionKind, TokenPurpose, User
from codepulse.auth.repository import AuthRepository
from codepulse.auth.schemas import RESERVED_USERNAMES, USERNAME_PATTERN, RegisterIn, UserUpdate
from codepulse.auth.sessions import Device, IssuedSession, SessionService, ensure_enabled
from codepulse.clock import ClockFunc
from codepulse.config import Settings
from codepulse.db import Database
from codepulse.errors import BadRequest, Conflict, FieldError, NotFound, Unauthorized, ValidationFailed
from codepulse.hooks import HookRegistry
from codepulse.integrations.mailer import MailMessage
from codepulse.mail.outbox import queue_mail
from codepulse.security import PasswordHasher, password_problems

log = structlog.get_logger("codepulse.auth")

VERIFY_EMAIL_LIFETIME = timedelta(hours=24)
PASSWORD_RESET_LIFETIME = timedelta(hours=1)
INVALID_CREDENTIALS = "The login or password is wrong."

user_delete_hooks: HookRegistry[User] = HookRegistry("user.delete")
on_user_delete = user_delete_hooks.register
"""Register `async (session, user) -> None`, run before an account is deleted, in the deletion's
transaction; raising a domain error refuses the deletion."""

user_update_hooks: HookRegistry[User] = HookRegistry("user.update")
on_user_update = user_update_hooks.register
"""Register `async (session, user) -> None`, run after a profile change is flushed, in its
transaction (upper slices drop what they cache of the profile, e.g. the leaderboard's pages)."""


async def unique_username(session: AsyncSession, wanted: str) -> str:
    """`wanted` made valid and free: invalid characters dropped, a number added if taken."""
    base = re.sub(r"[^a-z0-9_-]", "", wanted.lower())[:26] or "user"
    base = base if len(base) >= 3 else (base + "user")[:26]
    taken = await AuthRepository(session).usernames_like(base) | RESERVED_USERNAMES
    if base not in taken and USERNAME_PATTERN.match(base):
        return base
    for n in range(2, 10_000):
        candidate = f"{base}-{n}"
        if candidate not in taken:
            return candidate
    return f"{base[:20]}-{uuid.uuid4().hex[:8]}"


class AccountService:
    def __init__(
        self,
        session: AsyncSession,
        settings: Settings,
        hasher: PasswordHasher,
        clock: ClockFunc,
        cache: AuthCache | None = None,
    ) -> None:
        self.repo = AuthRepository(session)
        self.sessions = SessionService(session, clock, cache)
        self.settings = settings
        self.hasher = hasher
        self.clock = clock

    # --- sign-up and sign-in -------------------------------------------------------------

    async def register(self, data: RegisterIn, device: Device, *, mail_verification: bool = True) -> IssuedSession:
        """Create the account and a web session; the verification link is mailed at once unless
        the caller verifies the address itself (`confirm_email`: the demo seed)."""
        problems = password_problems(data.password, email=data.email, username=data.username)
        if problems:
            raise ValidationFailed(problems)
        # Registration answers with a session, so a taken email cannot be hidden; the per-IP
        # rate limit bounds how fast anyone can probe addresses this way.
        if await self.repo.user_by_email(data.email) is not None:
            raise Conflict("An account with this email already exists; sign in instead.", code="email_taken")
        if await self.repo.user_by_username(data.username) is not None:
            raise Conflict("This username is taken.", code="username_taken")
        user = User(
            email=data.email,
            username=data.username,
            name=data.name,
            password_hash=await self.hasher.hash(data.password),
        )
        await self.repo.add(user)
        log.info("user.registered", user_id=str(user.id))
        if mail_verification:  # at once: an invitee cannot accept an invitation before it is verified
            await self.request_email_verification(user)
        return await self.sessions.create_session(user, SessionKind.WEB, device)

    async def find_login(self, login: str) -> User | None:
        """The account a login string (email or username) names, or None."""
        return await self.repo.user_by_login(login)

    async def login(self, login: str, password: str, device: Device) -> IssuedSession:
        return await self.login_as(await self.find_login(login), password, device)

    async def login_as(self, user: User | None, password: str, device: Device) -> IssuedSession:
        """Sign in to `user` (from `find_login`; None for an unknown login) with a password."""
        if user is None or user.password_hash is None:
            await self.hasher.verify_nothing(password)
            raise Unauthorized(INVALID_CREDENTIALS, code="invalid_credentials")
        matches, upgraded = await self.hasher.verify(password, user.password_hash)
        if not matches:
            raise Unauthorized(INVALID_CREDENTIALS, code="invalid_credentials")
        ensure_enabled(user)  # only once the password is right: no probing which accounts are disabled
        if upgraded is not None:
            user.password_hash = upgraded
            log.info("user.password_rehashed", user_id=str(user.id))
        return await self.sessions.create_session(user, SessionKind.WEB, device)

    # --- the account ---------------------------------------------------------------------

    async def user(self, user_id: uuid.UUID) -> User | None:
        return await self.repo.user(user_id)

    async def update_profile(self, user: User, changes: UserUpdate) -> User:
        # Only avatar_url may be cleared with null; for the other fields null means "unchanged".
        values = {k: v for k, v in changes.model_dump(exclude_unset=True).items() if v is not None or k == "avatar_url"}
        username = values.get("username")
        if username not in (None, user.username) and await self.repo.user_by_username(username) is not None:
            raise Conflict("This username is taken.", code="username_taken")
        for field, value in values.items():
            setattr(user, field, value)
        await self.repo.session.flush()
        self.sessions.forget(user)
        await user_update_hooks.run(self.repo.session, user)
        return user

    async def change_password(self, user: User, current: str | None, new: str, keep: AuthSession) -> None:
        if user.password_hash is not None:
            matches = current is not None and (await self.hasher.verify(current, user.password_hash))[0]
            if not matches:
                raise ValidationFailed(
                    [
                        FieldError(
                            field="body.current_password", code="wrong_password", message="This is not your password."
                        )
                    ]
                )
        await self._set_password(user, new, field="body.new_password")
        await self.sessions.revoke_all_sessions(user, keep=keep)

    async def delete_account(self, user: User) -> None:
        """Delete the account, after the `on_user_delete` hooks (which may refuse it)."""
        await user_delete_hooks.run(self.repo.session, user)
        # Sessions, OAuth links, tokens and memberships go with the user (ON DELETE CASCADE).
        await self.repo.delete_user(user)
        self.sessions.forget(user)
        log.info("user.deleted", user_id=str(user.id))

    async def public_profile(self, username: str, viewer: User | None) -> User:
        user = await self.repo.user_by_username(username)
        if user is None or (not user.profile_public and (viewer is None or viewer.id != user.id)):
            raise NotFound("user")
        return user

    async def _set_password(self, user: User, password: str, *, field: str) -> None:
        problems = password_problems(password, email=user.email, username=user.username, field=field)
        if problems:
            raise ValidationFailed(problems)
        user.password_hash = await self.hasher.hash(password)

    # --- email verification and password reset -----------------------------------------

    async def _queue_mail(self, message: MailMessage, category: str) -> None:
        # In this transaction: a request that rolls back mails nothing.
        await queue_mail(self.repo.session, message, settings=self.settings, now=self.clock(), category=category)

    async def request_email_verification(self, user: User) -> bool:
        """Queue a verification mail; False when the email is verified already."""
        if user.email_verified:
            return False
        token = await self.sessions.issue_token(
            user, TokenPurpose.VERIFY_EMAIL, VERIFY_EMAIL_LIFETIME, email=user.email
        )
        link = f"{self.settings.FRONTEND_URL}/verify-email?token={token}"
        message = MailMessage(
            to=user.email,
            subject="Confirm your email for codepulse",
            text=f"Hello {user.name},\n\nconfirm your email address by opening this link within 24 hours:\n\n"
            f"{link}\n\nIf you did not create a codepulse account, ignore this message.\n",
        )
        await self._queue_mail(message, "auth.verify_email")
        return True

    async def verify_email(self, raw_token: str) -> User:
        token = await self.sessions.consume_token(raw_token, TokenPurpose.VERIFY_EMAIL)
        user = await self.repo.user(token.user_id)
        if user is None or token.email != user.email:
            raise BadRequest("This link is no longer valid; ask for a new one.", code="invalid_token")
        user.email_verified_at = user.email_verified_at or self.clock()
        await self.repo.session.flush()
        self.sessions.forget(user)
        return user

    async def confirm_email(self, user: User) -> User:
        """Mark the email verified without a mailed link: for addresses an operator vouches for
        (`codepulse seed`'s demo accounts at example.com, which no mail reaches)."""
        if user.email_verified_at is None:
            user.email_verified_at = self.clock()
            await self.repo.session.flush()
            self.sessions.forget(user)
        return user

    async def request_password_reset(self, email: str) -> None:
        """Queue a reset mail for the account with this email, if there is one; callers answer 202
        either way."""
        user = await self.repo.user_by_email(email)
        if user is None:
            return
        token = await self.sessions.issue_token(user, TokenPurpose.PASSWORD_RESET, PASSWORD_RESET_LIFETIME)
        link = f"{self.settings.FRONTEND_URL}/reset-password?token={token}"
        message = MailMessage(
            to=user.email,
            subject="Reset your codepulse password",
            text=f"Hello {user.name},\n\nset a new password by opening this link within one hour:\n\n{link}\n\n"
            "If you did not ask for this, ignore this message: your password stays as it is.\n",
        )
        await self._queue_mail(message, "auth.password_reset")

    async def reset_password(self, raw_token: str, new_password: str) -> User:
        token = await self.sessions.consume_token(raw_token, TokenPurpose.PASSWORD_RESET)
        user = await self.repo.user(token.user_id)
        if user is None:
            raise BadRequest("This link is no longer valid; ask for a new one.", code="invalid_token")
        await self._set_password(user, new_password, field="body.new_password")
        # Receiving the mail proves the address; every session (possibly an attacker's) ends.
        user.email_verified_at = user.email_verified_at or self.clock()
        await self.sessions.void_tokens(user, TokenPurpose.PASSWORD_RESET)
        await self.sessions.revoke_all_sessions(user)
        return user


async def ensure_first_superuser(
    database: Database, settings: Settings, hasher: PasswordHasher, clock: ClockFunc
) -> None:
    """Create (or promote) FIRST_SUPERUSER_EMAIL at start-up; a no-op when it already is one."""
    email, password = settings.FIRST_SUPERUSER_EMAIL, settings.FIRST_SUPERUSER_PASSWORD
    if not email or password is None:
        return
    async with database.transaction() as session:
        repo = AuthRepository(session)
        user = await repo.user_by_email(email)
        if user is None:
            user = User(
                email=email.lower(),
                username=await unique_username(session, email.split("@")[0]),
                name="Administrator",
                password_hash=await hasher.hash(password.get_secret_value()),
                email_verified_at=clock(),
                is_superuser=True,
            )
            await repo.add(user)
            log.info("superuser.created", user_id=str(user.id))
        elif not user.is_superuser:
            user.is_superuser = True
            log.info("superuser.promoted", user_id=str(user.id))
