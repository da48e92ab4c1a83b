"""Bearer sessions and one-time tokens: issue, authenticate, list, revoke, purge.

`SessionService` is what every sign-in path ends in (registration, login, OAuth, CLI tokens) and
what authentication asks; one-time tokens (email verification, password reset, OAuth codes) are
issued and consumed here too. Nothing here commits.
"""

from __future__ import annotations

import uuid
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from codepulse.auth.cache import AuthCache, CachedAuth
from codepulse.auth.models import AuthSession, OneTimeToken, SessionKind, TokenPurpose, User
from codepulse.auth.repository import AuthRepository
from codepulse.clock import ClockFunc
from codepulse.db import after_commit
from codepulse.errors import BadRequest, NotFound, Unauthorized
from codepulse.hooks import HookRegistry
from codepulse.pagination import PageRequest, SortKey, paginate
from codepulse.security import SESSION_TOKEN_PREFIX, hash_token, new_one_time_token, new_session_token

WEB_IDLE_LIFETIME = timedelta(days=30)
WEB_ABSOLUTE_LIFETIME = timedelta(days=90)
TOUCH_INTERVAL = timedelta(minutes=1)
# Revoked sessions and used tokens are kept a while for the sessions list and audit, then purged.
PURGE_GRACE = timedelta(days=7)


@dataclass(frozen=True)
class SessionsEnded:
    """Some of the user's sessions were signed out (one, or all but one, or all)."""

    user_id: uuid.UUID


# Run in the signing-out transaction: notifications wakes the user's open streams, which find
# their session ended and close at once rather than at their next keep-alive.
sessions_ended_hooks: HookRegistry[SessionsEnded] = HookRegistry("auth.sessions_ended")
on_sessions_ended = sessions_ended_hooks.register


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


def account_disabled() -> Unauthorized:
    """The one answer of every sign-in path and of every session of a disabled account."""
    return Unauthorized("This account is disabled; contact an administrator.", code="account_disabled")


def ensure_enabled(user: User) -> None:
    """Raise 401 `account_disabled` for a disabled account."""
    if user.disabled_at is not None:
        raise account_disabled()


def _token_hash(raw_token: str) -> str:
    if not raw_token.startswith(SESSION_TOKEN_PREFIX) or len(raw_token) > 200:
        raise Unauthorized("The bearer token is not valid.", code="invalid_token")
    return hash_token(raw_token)


def _one_time_hash(raw_token: str, binding: str | None) -> str:
    # NUL cannot occur in a token or a binding (both URL-safe text), so no two pairs collide.
    return hash_token(raw_token if binding is None else f"{raw_token}\0{binding}")


def _touch_due(entry: CachedAuth, now: datetime) -> dict[str, datetime] | None:
    """last_used_at at most once a minute; a web session's expiry slides once half its idle
    lifetime has passed."""
    expires = entry.expires_at
    if entry.session.kind == SessionKind.WEB.value and expires - now < WEB_IDLE_LIFETIME / 2:
        expires = min(now + WEB_IDLE_LIFETIME, entry.session.absolute_expires_at)
    if expires == entry.expires_at and now - entry.last_used_at < TOUCH_INTERVAL:
        return None
    return {"last_used_at": now, "expires_at": expires}


def _refuse_ended(auth_session: AuthSession, user: User, expires_at: datetime, now: datetime) -> None:
    """401 for a session that no longer authenticates: its account disabled, signed out, expired."""
    ensure_enabled(user)
    if auth_session.revoked_at is not None:
        raise Unauthorized("This session was signed out.", code="session_revoked")
    if now >= expires_at or now >= auth_session.absolute_expires_at:
        raise Unauthorized("This session has expired; sign in again.", code="session_expired")


def _admit(entry: CachedAuth, now: datetime) -> tuple[Authenticated, dict[str, datetime] | None]:
    _refuse_ended(entry.session, entry.user, entry.expires_at, now)
    touch = _touch_due(entry, now)
    if touch is not None:
        entry.last_used_at, entry.expires_at = touch["last_used_at"], touch["expires_at"]
    return Authenticated(entry.session, entry.user), touch


def authenticate_from_cache(
    cache: AuthCache, clock: ClockFunc, raw_token: str
) -> tuple[Authenticated, dict[str, datetime] | None] | None:
    """`SessionService.authenticate(..., use_cache=True)` answered from the cache alone, without a
    database session; None on a miss. Raises Unauthorized like it."""
    cached = cache.get(_token_hash(raw_token))
    return None if cached is None else _admit(cached, clock())


class SessionService:
    def __init__(self, session: AsyncSession, clock: ClockFunc, cache: AuthCache | None = None) -> None:
        self.repo = AuthRepository(session)
        self.clock = clock
        self.cache = cache

    def forget(self, user: User | uuid.UUID) -> None:
        """Drop cached authentications of a user whose account or sessions just changed: now, and
        again once the change has committed (a concurrent read may have cached the old rows in
        between; the cache refuses entries read before an invalidation)."""
        cache = self.cache
        if cache is None:
            return
        user_id = user if isinstance(user, uuid.UUID) else user.id
        cache.invalidate_user(user_id)
        after_commit(self.repo.session, lambda: cache.invalidate_user(user_id))

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
        ensure_enabled(user)  # every sign-in path ends here: one refusal for them all
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

    async def create_cli_token(self, user: User, name: str, days: int, device: Device) -> IssuedSession:
        return await self.create_session(user, SessionKind.CLI, device, name=name, lifetime=timedelta(days=days))

    async def authenticate(
        self, raw_token: str, *, use_cache: bool = False
    ) -> tuple[Authenticated, dict[str, datetime] | None]:
        """The session and user behind a bearer token, plus the bookkeeping to write if due.

        Raises Unauthorized for a malformed, unknown, expired or revoked token. With `use_cache`
        (read requests) a recent result may be reused; see codepulse.auth.cache.
        """
        token_hash = _token_hash(raw_token)
        reading_cache = self.cache if use_cache else None
        if reading_cache is not None:
            cached = reading_cache.get(token_hash)
            if cached is None and await reading_cache.wait_for_load(token_hash):
                # Another request just read it; None if it found nothing to cache: read ourselves.
                cached = reading_cache.get(token_hash)
            if cached is not None:
                return _admit(cached, self.clock())
        stamp = self.cache.stamp() if self.cache is not None else 0
        with reading_cache.loading(token_hash) if reading_cache is not None else nullcontext():
            found = await self.repo.session_with_user(token_hash)
            if found is None:
                raise Unauthorized("The bearer token is not valid.", code="invalid_token")
            auth_session, user = found
            entry = CachedAuth(auth_session, user, auth_session.last_used_at, auth_session.expires_at, stamp)
            admitted = _admit(entry, self.clock())
            if reading_cache is not None:
                reading_cache.put(token_hash, entry)
        return admitted

    async def ensure_active(self, session_id: uuid.UUID) -> None:
        """Raise 401 unless the session still authenticates (read afresh, never from the cache):
        long-lived streams ask this as they poll, so a signed-out or disabled account's stream ends."""
        found = await self.repo.session_with_user_by_id(session_id)
        if found is None:
            raise Unauthorized("This session was signed out.", code="session_revoked")
        auth_session, user = found
        _refuse_ended(auth_session, user, auth_session.expires_at, self.clock())

    async def touch(self, session_id: uuid.UUID, values: dict[str, datetime]) -> None:
        await self.repo.touch_session(session_id, **values)

    async def list_sessions(self, user: User, page: PageRequest) -> tuple[list[AuthSession], str | None]:
        query = self.repo.active_sessions_query(user.id, self.clock())
        return await paginate(self.repo.session, query, order=[SortKey(AuthSession.created_at, "desc")], params=page)

    async def revoke_session(self, user: User, session_id: uuid.UUID) -> None:
        if not await self.repo.revoke_session(session_id, user.id, self.clock()):
            raise NotFound("session")
        self.forget(user)
        await sessions_ended_hooks.run(self.repo.session, SessionsEnded(user.id))

    async def revoke_all_sessions(self, user: User, *, keep: AuthSession | None = None) -> int:
        """Sign the user out everywhere (but `keep`); answers how many sessions ended."""
        self.forget(user)
        ended = await self.repo.revoke_sessions(user.id, self.clock(), keep=keep.id if keep else None)
        if ended:
            await sessions_ended_hooks.run(self.repo.session, SessionsEnded(user.id))
        return ended

    # --- one-time tokens -----------------------------------------------------------------

    async def issue_token(
        self,
        user: User,
        purpose: TokenPurpose,
        lifetime: timedelta,
        *,
        email: str | None = None,
        device: Device | None = None,
        binding: str | None = None,
    ) -> str:
        """A new one-time token for `purpose`, stored hashed; answers it in clear. A `binding`
        (e.g. the hash of a browser's nonce) is folded into the stored hash: the token is then
        accepted only when consumed with the same binding, and never without one."""
        now = self.clock()
        raw = new_one_time_token()
        await self.repo.add(
            OneTimeToken(
                user_id=user.id,
                purpose=purpose.value,
                token_hash=_one_time_hash(raw, binding),
                email=email,
                created_at=now,
                expires_at=now + lifetime,
                ip=device.ip if device else None,
                user_agent=device.user_agent[:512] if device and device.user_agent else None,
            )
        )
        return raw

    async def consume_token(self, raw_token: str, purpose: TokenPurpose, *, binding: str | None = None) -> OneTimeToken:
        """Use a one-time token (once); 400 `invalid_token` when unknown, expired or used, or
        issued with another `binding` (a bound token looks unknown without its binding)."""
        token = await self.repo.one_time_token(_one_time_hash(raw_token, binding), purpose.value)
        now = self.clock()
        if token is None or token.used_at is not None or now >= token.expires_at:
            raise BadRequest("This link is invalid, expired or already used; ask for a new one.", code="invalid_token")
        if not await self.repo.use_token(token.id, now):
            raise BadRequest("This link was already used.", code="invalid_token")
        return token

    async def void_tokens(self, user: User, purpose: TokenPurpose) -> None:
        await self.repo.void_tokens(user.id, purpose.value, self.clock())

    # --- housekeeping --------------------------------------------------------------------

    async def purge_expired(self) -> tuple[int, int]:
        """Delete expired and long-revoked sessions, and expired or used one-time tokens."""
        now = self.clock()
        return await self.repo.purge(now, revoked_before=now - PURGE_GRACE)
