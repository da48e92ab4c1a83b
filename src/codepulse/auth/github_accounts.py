"""GitHub identities: sign in with GitHub, link and unlink it, and the short-lived codes of the
OAuth flow; `github_link` gives other slices a user's GitHub token (repository imports).

The link is keyed on GitHub's numeric user id; an unverified email never links anything. The
access token is stored encrypted (`SecretBox`) and never logged. Nothing here commits.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import timedelta

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from codepulse.auth.accounts import unique_username
from codepulse.auth.cache import AuthCache
from codepulse.auth.models import OAuthAccount, SessionKind, TokenPurpose, User
from codepulse.auth.repository import AuthRepository
from codepulse.auth.sessions import Device, IssuedSession, SessionService, ensure_enabled
from codepulse.clock import ClockFunc
from codepulse.errors import BadRequest, Conflict, NotFound
from codepulse.integrations.github import GitHubProfile, GitHubToken
from codepulse.security import SecretBox, SecretBoxError

log = structlog.get_logger("codepulse.auth")

GITHUB = "github"
OAUTH_EXCHANGE_LIFETIME = timedelta(seconds=60)
OAUTH_LINK_LIFETIME = timedelta(minutes=5)


def browser_binding(nonce: str) -> str:
    """What a sign-in flow is bound to: the SHA-256 (hex) of a random nonce the browser that
    started it keeps (the dashboard's HttpOnly cookie). The hash travels through URLs and the
    OAuth state; the nonce itself never leaves that browser and this server."""
    return hashlib.sha256(nonce.encode()).hexdigest()


class GitHubAccountService:
    def __init__(self, session: AsyncSession, clock: ClockFunc, cache: AuthCache | None = None) -> None:
        self.repo = AuthRepository(session)
        self.sessions = SessionService(session, clock, cache)
        self.clock = clock

    async def sign_in_with_github(
        self, profile: GitHubProfile, token: GitHubToken, box: SecretBox, *, replace_token: bool = True
    ) -> User:
        """The account for a GitHub identity: its existing link; else the account whose verified
        email is GitHub's primary verified email (linked now); else a new account.

        `token` is stored for the account's GitHub features. `replace_token=False` (a CLI's
        device-flow token) stores it only where none is stored yet: a device token never replaces
        what the user granted in the browser."""
        account = await self.repo.oauth_account(GITHUB, str(profile.id))
        if account is not None:
            user = await self.repo.user(account.user_id)
            if user is None:  # pragma: no cover - the FK cascades; kept for type narrowing
                raise NotFound("user")
            ensure_enabled(user)  # before any write: a refused sign-in changes nothing
            keep = not replace_token and account.access_token_encrypted is not None
            _refresh_account(account, profile, None if keep else token, box)
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
        if user is not None:
            ensure_enabled(user)
        if user is None:
            user = User(
                email=profile.email,
                username=await unique_username(self.repo.session, profile.login),
                name=(profile.name or profile.login)[:100],
                avatar_url=profile.avatar_url if profile.avatar_url and len(profile.avatar_url) <= 2048 else None,
                email_verified_at=self.clock(),
            )
            await self.repo.add(user)
            log.info("user.registered", user_id=str(user.id), via=GITHUB)
        await self._link(user, profile, token, box)
        return user

    async def link_github(self, user: User, profile: GitHubProfile, token: GitHubToken, box: SecretBox) -> None:
        ensure_enabled(user)  # a link flow started before the account was disabled
        account = await self.repo.oauth_account(GITHUB, str(profile.id))
        if account is not None:
            if account.user_id != user.id:
                raise Conflict("This GitHub account is linked to another user.", code="github_already_linked")
            _refresh_account(account, profile, token, box)
            return
        if await self.repo.oauth_account_of(user.id, GITHUB) is not None:
            raise Conflict("Another GitHub account is linked to you; unlink it first.", code="github_already_linked")
        await self._link(user, profile, token, box)

    async def _link(self, user: User, profile: GitHubProfile, token: GitHubToken, box: SecretBox) -> None:
        account = OAuthAccount(user_id=user.id, provider=GITHUB, provider_user_id=str(profile.id), login="")
        _refresh_account(account, profile, token, box)
        await self.repo.add(account)
        log.info("oauth.linked", user_id=str(user.id), provider=GITHUB)

    async def unlink_oauth(self, user: User, provider: str) -> None:
        account = await self.repo.oauth_account_of(user.id, provider)
        if account is None:
            raise NotFound("oauth_account")
        others = [p for p in await self.repo.oauth_providers(user.id) if p != provider]
        if user.password_hash is None and not others:
            raise Conflict(f"{provider} is your only way to sign in; set a password first.", code="last_sign_in_method")
        await self.repo.delete_oauth_account(account)

    # --- the OAuth flow's one-time codes -------------------------------------------------

    async def issue_oauth_link_code(self, user: User) -> str:
        return await self.sessions.issue_token(user, TokenPurpose.OAUTH_LINK, OAUTH_LINK_LIFETIME)

    async def consume_oauth_link_code(self, raw_code: str) -> User:
        token = await self.sessions.consume_token(raw_code, TokenPurpose.OAUTH_LINK)
        user = await self.repo.user(token.user_id)
        if user is None:
            raise BadRequest("This link code is no longer valid.", code="invalid_token")
        return user

    async def issue_oauth_exchange_code(self, user: User, device: Device, *, binding: str | None = None) -> str:
        """The callback's one-time code. With a `binding` (`browser_binding` of a nonce) only the
        holder of that nonce can exchange it: a code sent to someone else (login CSRF) is useless."""
        return await self.sessions.issue_token(
            user, TokenPurpose.OAUTH_EXCHANGE, OAUTH_EXCHANGE_LIFETIME, device=device, binding=binding
        )

    async def exchange_oauth_code(self, raw_code: str, *, nonce: str | None = None) -> IssuedSession:
        """A web session for the code; a code issued with a binding needs its `nonce`, one issued
        without needs none (400 `invalid_token` otherwise, as for an unknown code)."""
        binding = browser_binding(nonce) if nonce is not None else None
        token = await self.sessions.consume_token(raw_code, TokenPurpose.OAUTH_EXCHANGE, binding=binding)
        user = await self.repo.user(token.user_id)
        if user is None:
            raise BadRequest("This sign-in code is no longer valid.", code="invalid_token")
        return await self.sessions.create_session(user, SessionKind.WEB, Device(token.ip, token.user_agent))


def _refresh_account(account: OAuthAccount, profile: GitHubProfile, token: GitHubToken | None, box: SecretBox) -> None:
    account.login = profile.login[:100]
    account.email = profile.email
    if token is not None:
        account.access_token_encrypted = box.encrypt(token.access_token)
        account.scopes = ",".join(sorted(token.scopes))[:500] or None


@dataclass(frozen=True, repr=False)
class GitHubLink:
    """A user's linked GitHub account, as other slices may see it."""

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
