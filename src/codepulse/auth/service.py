"""Accounts, bearer sessions, one-time tokens and external identities.

The auth domain's public interface: other domains call `AuthService` (or the module functions)
and use `codepulse.auth.dependencies` for the signed-in user. Nothing here commits.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from codepulse.auth.cache import AuthCache, CachedAuth
from codepulse.auth.models import AuthSession, OAuthAccount, OneTimeToken, SessionKind, TokenPurpose, User
from codepulse.auth.repository import AuthRepository
from codepulse.auth.schemas import RESERVED_USERNAMES, USERNAME_PATTERN, RegisterIn, UserUpdate
from codepulse.clock import ClockFunc
from codepulse.config import Settings
from codepulse.db import Database
from codepulse.errors import BadRequest, Conflict, FieldError, NotFound, Unauthorized, ValidationFailed
from codepulse.integrations.github import GitHubProfile, GitHubToken
from codepulse.integrations.mailer import MailMessage
from codepulse.pagination import PageRequest, SortKey, paginate
from codepulse.security import (
    SESSION_TOKEN_PREFIX,
    PasswordHasher,
    SecretBox,
    SecretBoxError,
    hash_token,
    new_one_time_token,
    new_session_token,
    password_problems,
)

log = structlog.get_logger("codepulse.auth")

WEB_IDLE_LIFETIME = timedelta(days=30)
WEB_ABSOLUTE_LIFETIME = timedelta(days=90)
TOUCH_INTERVAL = timedelta(minutes=1)
VERIFY_EMAIL_LIFETIME = timedelta(hours=24)
PASSWORD_RESET_LIFETIME = timedelta(hours=1)
OAUTH_EXCHANGE_LIFETIME = timedelta(seconds=60)
OAUTH_LINK_LIFETIME = timedelta(minutes=5)
GITHUB = "github"
# Revoked sessions and used tokens are kept a while for the sessions list and audit, then purged.
PURGE_GRACE = timedelta(days=7)

INVALID_CREDENTIALS = "The login or password is wrong."


@dataclass(frozen=True)
class Device:
    ip: str | None
    user_agent: str | None

    @property
    def label(self) -> str:
        agent = (self.user_agent or "unknown device").strip()
        return agent[:100] or "unknown device"


@dataclass(frozen=True)
class IssuedSession:
    """A session and its raw token: the only moment the token exists in clear."""

    token: str
    session: AuthSession
    user: User


@dataclass(frozen=True)
class Authenticated:
    session: AuthSession
    user: User


def _token_hash(raw_token: str) -> str:
    if not raw_token.startswith(SESSION_TOKEN_PREFIX) or len(raw_token) > 200:
        raise Unauthorized("The bearer token is not valid.", code="invalid_token")
    return hash_token(raw_token)


def _touch_due(entry: CachedAuth, now: datetime) -> dict[str, datetime] | None:
    """last_used_at at most once a minute; a web session's expiry slides once half its idle
    lifetime has passed."""
    expires = entry.expires_at
    if entry.session.kind == SessionKind.WEB.value and expires - now < WEB_IDLE_LIFETIME / 2:
        expires = min(now + WEB_IDLE_LIFETIME, entry.session.absolute_expires_at)
    if expires == entry.expires_at and now - entry.last_used_at < TOUCH_INTERVAL:
        return None
    return {"last_used_at": now, "expires_at": expires}


def _admit(entry: CachedAuth, now: datetime) -> tuple[Authenticated, dict[str, datetime] | None]:
    if entry.session.revoked_at is not None:
        raise Unauthorized("This session was signed out.", code="session_revoked")
    if now >= entry.expires_at or now >= entry.session.absolute_expires_at:
        raise Unauthorized("This session has expired; sign in again.", code="session_expired")
    touch = _touch_due(entry, now)
    if touch is not None:
        entry.last_used_at, entry.expires_at = touch["last_used_at"], touch["expires_at"]
    return Authenticated(entry.session, entry.user), touch


def authenticate_from_cache(
    cache: AuthCache, clock: ClockFunc, raw_token: str
) -> tuple[Authenticated, dict[str, datetime] | None] | None:
    """`AuthService.authenticate(..., use_cache=True)` answered from the cache alone, without a
    database session; None on a miss. Raises Unauthorized like it."""
    cached = cache.get(_token_hash(raw_token))
    return None if cached is None else _admit(cached, clock())


class AuthService:
    def __init__(
        self,
        session: AsyncSession,
        settings: Settings,
        hasher: PasswordHasher,
        clock: ClockFunc,
        cache: AuthCache | None = None,
    ) -> None:
        self.repo = AuthRepository(session)
        self.settings = settings
        self.hasher = hasher
        self.clock = clock
        self.cache = cache

    def _forget(self, user: User | uuid.UUID) -> None:
        """Drop cached authentications of a user whose account or sessions just changed."""
        if self.cache is not None:
            self.cache.invalidate_user(user if isinstance(user, uuid.UUID) else user.id)

    # --- accounts ------------------------------------------------------------------------

    async def register(self, data: RegisterIn, device: Device) -> IssuedSession:
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
        return await self.create_session(user, SessionKind.WEB, device)

    async def login(self, login: str, password: str, device: Device) -> IssuedSession:
        user = await self.repo.user_by_login(login)
        if user is None or user.password_hash is None:
            await self.hasher.verify_nothing(password)
            raise Unauthorized(INVALID_CREDENTIALS, code="invalid_credentials")
        matches, upgraded = await self.hasher.verify(password, user.password_hash)
        if not matches:
            raise Unauthorized(INVALID_CREDENTIALS, code="invalid_credentials")
        if upgraded is not None:
            user.password_hash = upgraded
            log.info("user.password_rehashed", user_id=str(user.id))
        return await self.create_session(user, SessionKind.WEB, device)

    async def update_profile(self, user: User, changes: UserUpdate) -> User:
        # Only avatar_url may be cleared with null; for the other fields null means "unchanged".
        values = {k: v for k, v in changes.model_dump(exclude_unset=True).items() if v is not None or k == "avatar_url"}
        username = values.get("username")
        if username not in (None, user.username) and await self.repo.user_by_username(username) is not None:
            raise Conflict("This username is taken.", code="username_taken")
        for field, value in values.items():
            setattr(user, field, value)
        await self.repo.session.flush()
        self._forget(user)
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
        await self.repo.revoke_sessions(user.id, self.clock(), keep=keep.id)
        self._forget(user)

    async def delete_account(self, user: User) -> None:
        # Imported here: orgs builds on auth, so auth reaches it only at call time.
        from codepulse.orgs.service import OrgService

        await OrgService(self.repo.session, self.settings, self.clock).ensure_user_can_be_deleted(user)
        # Sessions, OAuth links, tokens and memberships go with the user (ON DELETE CASCADE).
        await self.repo.delete_user(user)
        self._forget(user)
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

    # --- sessions ------------------------------------------------------------------------

    async def create_session(
        self,
        user: User,
        kind: SessionKind,
        device: Device,
        *,
        name: str | None = None,
        lifetime: timedelta | None = None,
    ) -> IssuedSession:
        now = self.clock()
        token = new_session_token()
        if kind is SessionKind.WEB:
            expires, absolute = now + WEB_IDLE_LIFETIME, now + WEB_ABSOLUTE_LIFETIME
        else:
            expires = absolute = now + (lifetime or timedelta(days=90))
        auth_session = AuthSession(
            user_id=user.id,
            token_hash=hash_token(token),
            kind=kind.value,
            name=name or device.label,
            created_at=now,
            last_used_at=now,
            expires_at=expires,
            absolute_expires_at=absolute,
            ip=device.ip,
            user_agent=(device.user_agent or None) and device.user_agent[:512],
        )
        await self.repo.add(auth_session)
        return IssuedSession(token=token, session=auth_session, user=user)

    async def authenticate(
        self, raw_token: str, *, use_cache: bool = False
    ) -> tuple[Authenticated, dict[str, datetime] | None]:
        """The session and user behind a bearer token, plus the bookkeeping to write if due.

        Raises Unauthorized for a malformed, unknown, expired or revoked token. With `use_cache`
        (read requests) a recent result may be reused; see codepulse.auth.cache.
        """
        token_hash = _token_hash(raw_token)
        cached = self.cache.get(token_hash) if use_cache and self.cache is not None else None
        if cached is not None:
            return _admit(cached, self.clock())
        found = await self.repo.session_with_user(token_hash)
        if found is None:
            raise Unauthorized("The bearer token is not valid.", code="invalid_token")
        auth_session, user = found
        entry = CachedAuth(auth_session, user, auth_session.last_used_at, auth_session.expires_at)
        admitted = _admit(entry, self.clock())
        if use_cache and self.cache is not None:
            self.cache.put(token_hash, entry)
        return admitted

    async def touch(self, session_id: uuid.UUID, values: dict[str, datetime]) -> None:
        await self.repo.touch_session(session_id, **values)

    async def list_sessions(self, user: User, page: PageRequest) -> tuple[list[AuthSession], str | None]:
        query = self.repo.active_sessions_query(user.id, self.clock())
        return await paginate(self.repo.session, query, order=[SortKey(AuthSession.created_at, "desc")], params=page)

    async def revoke_session(self, user: User, session_id: uuid.UUID) -> None:
        if not await self.repo.revoke_session(session_id, user.id, self.clock()):
            raise NotFound("session")
        self._forget(user)

    async def revoke_all_sessions(self, user: User) -> int:
        self._forget(user)
        return await self.repo.revoke_sessions(user.id, self.clock())

    async def create_cli_token(self, user: User, name: str, days: int, device: Device) -> IssuedSession:
        return await self.create_session(user, SessionKind.CLI, device, name=name, lifetime=timedelta(days=days))

    # --- email verification and password reset -----------------------------------------

    async def request_email_verification(self, user: User) -> MailMessage | None:
        if user.email_verified:
            return None
        token = await self._issue_token(user, TokenPurpose.VERIFY_EMAIL, VERIFY_EMAIL_LIFETIME, email=user.email)
        link = f"{self.settings.FRONTEND_URL}/verify-email?token={token}"
        return MailMessage(
            to=user.email,
            subject="Confirm your email for codepulse",
            text=f"Hello {user.name},\n\nconfirm your email address by opening this link within 24 hours:\n\n"
            f"{link}\n\nIf you did not create a codepulse account, ignore this message.\n",
        )

    async def verify_email(self, raw_token: str) -> User:
        token = await self._consume(raw_token, TokenPurpose.VERIFY_EMAIL)
        user = await self.repo.user(token.user_id)
        if user is None or token.email != user.email:
            raise BadRequest("This link is no longer valid; ask for a new one.", code="invalid_token")
        user.email_verified_at = user.email_verified_at or self.clock()
        await self.repo.session.flush()
        self._forget(user)
        return user

    async def request_password_reset(self, email: str) -> MailMessage | None:
        """A message for the account with this email, or None; callers answer 202 either way."""
        user = await self.repo.user_by_email(email)
        if user is None:
            return None
        token = await self._issue_token(user, TokenPurpose.PASSWORD_RESET, PASSWORD_RESET_LIFETIME)
        link = f"{self.settings.FRONTEND_URL}/reset-password?token={token}"
        return MailMessage(
            to=user.email,
            subject="Reset your codepulse password",
            text=f"Hello {user.name},\n\nset a new password by opening this link within one hour:\n\n{link}\n\n"
            "If you did not ask for this, ignore this message: your password stays as it is.\n",
        )

    async def reset_password(self, raw_token: str, new_password: str) -> User:
        token = await self._consume(raw_token, TokenPurpose.PASSWORD_RESET)
        user = await self.repo.user(token.user_id)
        if user is None:
            raise BadRequest("This link is no longer valid; ask for a new one.", code="invalid_token")
        await self._set_password(user, new_password, field="body.new_password")
        now = self.clock()
        # Receiving the mail proves the address; every session (possibly an attacker's) ends.
        user.email_verified_at = user.email_verified_at or now
        await self.repo.void_tokens(user.id, TokenPurpose.PASSWORD_RESET.value, now)
        await self.repo.revoke_sessions(user.id, now)
        self._forget(user)
        return user

    async def _issue_token(
        self,
        user: User,
        purpose: TokenPurpose,
        lifetime: timedelta,
        *,
        email: str | None = None,
        device: Device | None = None,
    ) -> str:
        now = self.clock()
        raw = new_one_time_token()
        await self.repo.add(
            OneTimeToken(
                user_id=user.id,
                purpose=purpose.value,
                token_hash=hash_token(raw),
                email=email,
                created_at=now,
                expires_at=now + lifetime,
                ip=device.ip if device else None,
                user_agent=device.user_agent[:512] if device and device.user_agent else None,
            )
        )
        return raw

    async def _consume(self, raw_token: str, purpose: TokenPurpose) -> OneTimeToken:
        token = await self.repo.one_time_token(hash_token(raw_token), purpose.value)
        now = self.clock()
        if token is None or token.used_at is not None or now >= token.expires_at:
            raise BadRequest("This link is invalid, expired or already used; ask for a new one.", code="invalid_token")
        if not await self.repo.use_token(token.id, now):
            raise BadRequest("This link was already used.", code="invalid_token")
        return token

    # --- GitHub --------------------------------------------------------------------------

    async def sign_in_with_github(self, profile: GitHubProfile, token: GitHubToken, box: SecretBox) -> User:
        """The account for a GitHub identity: its existing link; else the account whose verified
        email is GitHub's primary verified email (linked now); else a new account.

        The link is keyed on GitHub's numeric id; an unverified email never links anything.
        """
        account = await self.repo.oauth_account(GITHUB, str(profile.id))
        if account is not None:
            user = await self.repo.user(account.user_id)
            if user is None:  # pragma: no cover - the FK cascades; kept for type narrowing
                raise NotFound("user")
            self._refresh_account(account, profile, token, box)
            return user
        if profile.email is None:
            raise Conflict(
                "Your GitHub account has no verified primary email; verify it on GitHub and try again.",
                code="github_email_unverified",
            )
        user = await self.repo.user_by_email(profile.email)
        if user is not None and not user.email_verified:
            raise Conflict(
                "An account with this email exists but its email is not verified: sign in with your password, "
                "verify your email, then link GitHub.",
                code="account_email_unverified",
            )
        if user is None:
            user = User(
                email=profile.email,
                username=await self.unique_username(profile.login),
                name=(profile.name or profile.login)[:100],
                avatar_url=profile.avatar_url if profile.avatar_url and len(profile.avatar_url) <= 2048 else None,
                email_verified_at=self.clock(),
            )
            await self.repo.add(user)
            log.info("user.registered", user_id=str(user.id), via=GITHUB)
        await self._link(user, profile, token, box)
        return user

    async def link_github(self, user: User, profile: GitHubProfile, token: GitHubToken, box: SecretBox) -> None:
        account = await self.repo.oauth_account(GITHUB, str(profile.id))
        if account is not None:
            if account.user_id != user.id:
                raise Conflict("This GitHub account is linked to another user.", code="github_already_linked")
            self._refresh_account(account, profile, token, box)
            return
        if await self.repo.oauth_account_of(user.id, GITHUB) is not None:
            raise Conflict("Another GitHub account is linked to you; unlink it first.", code="github_already_linked")
        await self._link(user, profile, token, box)

    async def _link(self, user: User, profile: GitHubProfile, token: GitHubToken, box: SecretBox) -> None:
        account = OAuthAccount(user_id=user.id, provider=GITHUB, provider_user_id=str(profile.id), login="")
        self._refresh_account(account, profile, token, box)
        await self.repo.add(account)
        log.info("oauth.linked", user_id=str(user.id), provider=GITHUB)

    @staticmethod
    def _refresh_account(account: OAuthAccount, profile: GitHubProfile, token: GitHubToken, box: SecretBox) -> None:
        account.login = profile.login[:100]
        account.email = profile.email
        account.access_token_encrypted = box.encrypt(token.access_token)
        account.scopes = ",".join(sorted(token.scopes))[:500] or None

    async def issue_oauth_link_code(self, user: User) -> str:
        return await self._issue_token(user, TokenPurpose.OAUTH_LINK, OAUTH_LINK_LIFETIME)

    async def consume_oauth_link_code(self, raw_code: str) -> User:
        token = await self._consume(raw_code, TokenPurpose.OAUTH_LINK)
        user = await self.repo.user(token.user_id)
        if user is None:
            raise BadRequest("This link code is no longer valid.", code="invalid_token")
        return user

    # --- OAuth ---------------------------------------------------------------------------

    async def issue_oauth_exchange_code(self, user: User, device: Device) -> str:
        return await self._issue_token(user, TokenPurpose.OAUTH_EXCHANGE, OAUTH_EXCHANGE_LIFETIME, device=device)

    async def exchange_oauth_code(self, raw_code: str) -> IssuedSession:
        token = await self._consume(raw_code, TokenPurpose.OAUTH_EXCHANGE)
        user = await self.repo.user(token.user_id)
        if user is None:
            raise BadRequest("This sign-in code is no longer valid.", code="invalid_token")
        return await self.create_session(user, SessionKind.WEB, Device(token.ip, token.user_agent))

    async def oauth_account(self, provider: str, provider_user_id: str) -> OAuthAccount | None:
        return await self.repo.oauth_account(provider, provider_user_id)

    async def oauth_account_of(self, user: User, provider: str) -> OAuthAccount | None:
        return await self.repo.oauth_account_of(user.id, provider)

    async def oauth_providers(self, user: User) -> list[str]:
        return await self.repo.oauth_providers(user.id)

    async def user(self, user_id: uuid.UUID) -> User | None:
        return await self.repo.user(user_id)

    async def user_by_email(self, email: str) -> User | None:
        return await self.repo.user_by_email(email)

    async def add(self, *objects: object) -> None:
        await self.repo.add(*objects)

    async def unlink_oauth(self, user: User, provider: str) -> None:
        account = await self.repo.oauth_account_of(user.id, provider)
        if account is None:
            raise NotFound("oauth_account")
        others = [p for p in await self.repo.oauth_providers(user.id) if p != provider]
        if user.password_hash is None and not others:
            raise Conflict(f"{provider} is your only way to sign in; set a password first.", code="last_sign_in_method")
        await self.repo.delete_oauth_account(account)

    async def unique_username(self, wanted: str) -> str:
        """`wanted` made valid and free: invalid characters dropped, a number added if taken."""
        base = re.sub(r"[^a-z0-9_-]", "", wanted.lower())[:26] or "user"
        base = base if len(base) >= 3 else (base + "user")[:26]
        taken = await self.repo.usernames_like(base) | RESERVED_USERNAMES
        if base not in taken and USERNAME_PATTERN.match(base):
            return base
        for n in range(2, 10_000):
            candidate = f"{base}-{n}"
            if candidate not in taken:
                return candidate
        return f"{base[:20]}-{uuid.uuid4().hex[:8]}"

    # --- housekeeping --------------------------------------------------------------------

    async def purge_expired(self) -> tuple[int, int]:
        now = self.clock()
        return await self.repo.purge(now, revoked_before=now - PURGE_GRACE)


async def ensure_first_superuser(
    database: Database, settings: Settings, hasher: PasswordHasher, clock: ClockFunc
) -> None:
    """Create (or promote) FIRST_SUPERUSER_EMAIL at start-up; a no-op when it already is one."""
    email, password = settings.FIRST_SUPERUSER_EMAIL, settings.FIRST_SUPERUSER_PASSWORD
    if not email or password is None:
        return
    async with database.transaction() as session:
        service = AuthService(session, settings, hasher, clock)
        user = await service.user_by_email(email)
        if user is None:
            username = await service.unique_username(email.split("@")[0])
            user = User(
                email=email.lower(),
                username=username,
                name="Administrator",
                password_hash=await hasher.hash(password.get_secret_value()),
                email_verified_at=clock(),
                is_superuser=True,
            )
            await service.add(user)
            log.info("superuser.created", user_id=str(user.id))
        elif not user.is_superuser:
            user.is_superuser = True
            log.info("superuser.promoted", user_id=str(user.id))


# --- for other domains: reads that need no settings ----------------------------------------


async def users_by_ids(session: AsyncSession, user_ids: Collection[uuid.UUID]) -> dict[uuid.UUID, User]:
    return await AuthRepository(session).users_by_ids(user_ids)


async def user_by_id(session: AsyncSession, user_id: uuid.UUID) -> User | None:
    return await AuthRepository(session).user(user_id)


async def user_by_email(session: AsyncSession, email: str) -> User | None:
    return await AuthRepository(session).user_by_email(email)


async def user_by_username(session: AsyncSession, username: str) -> User | None:
    return await AuthRepository(session).user_by_username(username)


@dataclass(frozen=True, repr=False)
class GitHubLink:
    """A user's linked GitHub account, as other domains may see it."""

    login: str
    scopes: frozenset[str]
    access_token: str | None
    """The token in clear, or None when none is stored or it cannot be opened (SECRET_KEY
    changed): the user must link GitHub again. Never log it or put it in a URL."""

    def __repr__(self) -> str:  # keeps the token out of logs and tracebacks
        return f"GitHubLink(login={self.login!r}, scopes={sorted(self.scopes)!r})"


async def github_link(session: AsyncSession, user_id: uuid.UUID, box: SecretBox) -> GitHubLink | None:
    """The user's linked GitHub account with its access token, or None when GitHub is not linked."""
    account = await AuthRepository(session).oauth_account_of(user_id, GITHUB)
    if account is None:
        return None
    token = None
    if account.access_token_encrypted:
        try:
            token = box.decrypt(account.access_token_encrypted)
        except SecretBoxError:
            log.warning("oauth.token_undecryptable", user_id=str(user_id), provider=GITHUB)
    scopes = frozenset(scope for scope in (account.scopes or "").split(",") if scope)
    return GitHubLink(login=account.login, scopes=scopes, access_token=token)
