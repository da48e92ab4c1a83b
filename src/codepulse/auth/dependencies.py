"""What the auth domain offers every router: the signed-in user, as typed `Annotated` aliases.

async def endpoint(user: CurrentUser) -> ...      # 401 problem without a valid bearer token
async def endpoint(user: OptionalUser) -> ...     # None when anonymous
async def endpoint(admin: Superuser) -> ...       # 403 unless is_superuser
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import uuid
from datetime import datetime
from typing import Annotated

from fastapi import Depends, FastAPI, Request, Response
from fastapi.security import HTTPBearer
from fastapi.security.base import SecurityBase
from fastapi.security.utils import get_authorization_scheme_param
from sqlalchemy.ext.asyncio import AsyncSession

from codepulse.auth.github_accounts import OAUTH_LINK_LIFETIME
from codepulse.auth.models import AuthSession, User
from codepulse.auth.repository import AuthRepository
from codepulse.auth.schemas import LoginIn, RegisterIn
from codepulse.auth.service import AuthService
from codepulse.auth.sessions import Authenticated, Device, IssuedSession, SessionService, authenticate_from_cache
from codepulse.config import Settings
from codepulse.db import Database, DbSession
from codepulse.db.session import RequestSessionScope, request_session_scope
from codepulse.errors import Forbidden, Unauthorized
from codepulse.logging import USER_ID_VAR
from codepulse.ratelimit import RateLimiter, Rule

_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="BearerToken",
    description="A session token (`cp_...`) from login, registration, OAuth or `POST /api/v1/auth/tokens`.",
)


# Dependencies are `async def` even when they do not await: FastAPI runs plain `def` ones in the
# threadpool, a hop that costs more than the work on hot paths like authentication.


def _sessions(request: Request, session: AsyncSession) -> SessionService:
    state = request.app.state
    return SessionService(session, state.clock, state.auth_cache)


async def _service(request: Request, session: DbSession) -> AuthService:
    state = request.app.state
    return AuthService(session, state.settings, state.password_hasher, state.clock, state.auth_cache)


AuthServiceDep = Annotated[AuthService, Depends(_service)]


async def _rate_limiter(request: Request) -> RateLimiter:
    limiter: RateLimiter = request.app.state.rate_limiter
    return limiter


Limiter = Annotated[RateLimiter, Depends(_rate_limiter)]


def device_of(request: Request) -> Device:
    return Device(ip=request.client.host if request.client else None, user_agent=request.headers.get("user-agent"))


# Sign-in and registration, rate-limited: the API's `POST /auth/login` and `/auth/register` and the
# web's forms go through these, so neither is a way around the other's limits (failures count
# for login, every request for registration).
LOGIN_PER_IP = "10/minute;50/hour"
LOGIN_PER_ACCOUNT = "5/minute;20/hour"
REGISTER_PER_IP = "5/minute;20/hour"
TOKEN_SUBMIT_PER_IP = "10/minute;100/hour"  # noqa: S105 - a rate, not a secret


def _ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def register_limited(
    request: Request, body: RegisterIn, service: AuthService, limiter: RateLimiter
) -> IssuedSession:
    """Create the account and its web session; 429 past the per-IP limit."""
    await limiter.hit([Rule("register:ip", _ip(request), REGISTER_PER_IP)])
    return await service.accounts.register(body, device_of(request))


async def verify_email_limited(request: Request, token: str, service: AuthService, limiter: RateLimiter) -> User:
    """Verify an email with its mailed token (`POST /auth/verify-email` and the web's landing
    page); 400 `invalid_token`, 429 past the per-IP limit of token submissions."""
    await limiter.hit([Rule("token-submit:ip", _ip(request), TOKEN_SUBMIT_PER_IP)])
    return await service.accounts.verify_email(token)


async def login_limited(request: Request, body: LoginIn, service: AuthService, limiter: RateLimiter) -> IssuedSession:
    """A web session for a login (email or username) and password; 401 `invalid_credentials`,
    429 past the per-IP or per-account limits."""
    per_ip = Rule("login:ip", _ip(request), LOGIN_PER_IP)
    await limiter.check([per_ip])  # before any query
    # One bucket per account, whichever of its email or username is typed; per string for
    # logins that name no account.
    user = await service.accounts.find_login(body.login)
    account = f"user:{user.id}" if user is not None else f"login:{body.login.strip().lower()}"
    rules = [per_ip, Rule("login:account", account, LOGIN_PER_ACCOUNT)]
    await limiter.check(rules)
    try:
        return await service.accounts.login_as(user, body.password, device_of(request))
    except Unauthorized:
        await limiter.hit(rules)
        raise


# GitHub sign-in's one-time code (`POST /auth/oauth/exchange` and the dashboard's callback page).
EXCHANGE_PER_IP = "10/minute;100/hour"


async def oauth_exchange_limited(
    request: Request, raw_code: str, service: AuthService, limiter: RateLimiter, *, nonce: str | None = None
) -> IssuedSession:
    """A web session for GitHub sign-in's one-time code (and the nonce of the browser the flow is
    bound to, if it is); 400 `invalid_token` (used, expired, unknown, another binding), 401
    `account_disabled`, 429 past the per-IP limit (every attempt counts)."""
    await limiter.hit([Rule("oauth-exchange:ip", _ip(request), EXCHANGE_PER_IP)])
    return await service.github.exchange_oauth_code(raw_code, nonce=nonce)


# Linking GitHub from a browser (`POST /auth/oauth/github/link` and the dashboard's settings): a
# browser cannot send a bearer token on a navigation, so a single-use link code stands for it,
# and a cookie binds the code's URL to the browser that asked (`oauth.github_authorize` checks it).
LINK_COOKIE = "codepulse_link"
GITHUB_AUTHORIZE_ROUTE = "github_authorize"


def link_binding(settings: Settings, user_id: uuid.UUID, link_code: str) -> str:
    """The link cookie's value for a link code: it names the account and the code, and only this
    server can compute it (SECRET_KEY)."""
    message = f"oauth-link\0{user_id}\0{link_code}".encode()
    return hmac.new(settings.secret_key.encode(), message, hashlib.sha256).hexdigest()


async def start_github_link(request: Request, response: Response, user: User, service: AuthService) -> str:
    """Issue `user` a 5-minute link code, set the link cookie on `response`, and answer the URL
    (GitHub sign-in's start, with the code) to open in this browser."""
    settings: Settings = request.app.state.settings
    code = await service.github.issue_oauth_link_code(user)
    authorize = request.url_for(GITHUB_AUTHORIZE_ROUTE)
    response.set_cookie(
        LINK_COOKIE,
        link_binding(settings, user.id, code),
        max_age=int(OAUTH_LINK_LIFETIME.total_seconds()),
        path=authorize.path,  # the start and the callback below it
        secure=settings.is_production,
        httponly=True,
        samesite="lax",
    )
    return str(authorize.include_query_params(link_code=code))


async def _authenticate(
    request: Request,
    token: str,
    scope: RequestSessionScope,
) -> Authenticated:
    state = request.app.state
    found = None
    if not scope.writing and not scope.opened:
        # A read answered from the cache needs no database session at all (the hot path).
        found = authenticate_from_cache(state.auth_cache, state.clock, token)
    if found is None:
        # The request's own session: a write then updates objects the endpoint will use.
        found = await _sessions(request, scope.session()).authenticate(token, use_cache=not scope.writing)
    authenticated, touch = found
    if touch is not None:
        if scope.writing:
            await _sessions(request, scope.session()).touch(authenticated.session.id, touch)
        else:
            # A read request's transaction must not turn into a writer (SQLite refuses the upgrade
            # when another writer went first), and must not wait for a second pooled connection
            # while holding one (a burst of requests would exhaust the pool): the bookkeeping runs
            # after the response, once this request's connection is back in the pool.
            scope.after_response(_touch_later, state.database, authenticated.session.id, touch)
    request.state.authenticated = authenticated
    USER_ID_VAR.set(str(authenticated.user.id))
    return authenticated


async def authenticate_request(request: Request, token: str) -> Authenticated:
    """Authenticate a session token a request carries elsewhere than in `Authorization` (the web
    dashboard's cookie), exactly as a bearer token is: the request's own session, the auth cache
    for reads, the bookkeeping after the response. Raises Unauthorized like `CurrentUser`."""
    return await _authenticate(request, token, request_session_scope(request))


async def user_for_token(app: FastAPI, session: AsyncSession, raw_token: str) -> User:
    """The user behind a bearer token, for connections without FastAPI's HTTP dependencies
    (WebSockets). Raises Unauthorized like `CurrentUser`; due bookkeeping is written in the
    background, as for read requests."""
    return (await authenticate_token(app, session, raw_token)).user


async def authenticate_token(app: FastAPI, session: AsyncSession, raw_token: str) -> Authenticated:
    """`user_for_token` with the session too (a stream re-checks it as it polls)."""
    service = SessionService(session, app.state.clock, app.state.auth_cache)
    authenticated, touch = await service.authenticate(raw_token, use_cache=True)
    if touch is not None:
        task = asyncio.create_task(_touch_later(app.state.database, authenticated.session.id, touch))
        _background_touches.add(task)
        task.add_done_callback(_background_touches.discard)
    USER_ID_VAR.set(str(authenticated.user.id))
    return authenticated


# Strong references to fire-and-forget tasks (the event loop keeps only weak ones).
_background_touches: set[asyncio.Task[None]] = set()


async def _touch_later(database: Database, session_id: uuid.UUID, values: dict[str, datetime]) -> None:
    async with database.transaction() as session:
        await AuthRepository(session).touch_session(session_id, **values)


class BearerAuthentication(SecurityBase):
    """The signed-in user, as one dependency that is also the OpenAPI `BearerToken` scheme.

    Authentication is on nearly every request, so it is one flat dependency: it reads the
    `Authorization` header and the request's session scope itself, where sub-dependencies (the
    `HTTPBearer` scheme, the session scope) would each cost a level of FastAPI's dependency
    solving. Being a `SecurityBase`, it still documents the bearer scheme on every operation
    that uses it, exactly as an `HTTPBearer` dependency does.
    """

    def __init__(self, *, required: bool, superuser: bool = False) -> None:
        self.model = _bearer.model
        self.scheme_name = _bearer.scheme_name
        self.required = required
        self.superuser = superuser

    async def __call__(self, request: Request) -> User | None:
        # One authentication per request, whichever of these dependencies asks first.
        authenticated: Authenticated | None = getattr(request.state, "authenticated", None)
        if authenticated is None:
            # HTTPBearer's reading of the header, without its pydantic credentials model.
            scheme, token = get_authorization_scheme_param(request.headers.get("authorization"))
            if not token or scheme.lower() != "bearer":
                if self.required:
                    raise Unauthorized("Sign in: send `Authorization: Bearer <token>`.", code="not_authenticated")
                return None
            authenticated = await _authenticate(request, token, request_session_scope(request))
        user = authenticated.user
        if self.superuser and not user.is_superuser:
            raise Forbidden("Only administrators may do this.", code="superuser_required")
        return user


_current_user = BearerAuthentication(required=True)
# For an endpoint that authenticates inline (`await current_user_scheme(request)`).
current_user_scheme = _current_user
_optional_user = BearerAuthentication(required=False)
# The same, for an endpoint that reads an optional bearer token inline.
optional_user_scheme = _optional_user
_superuser = BearerAuthentication(required=True, superuser=True)


async def _current_session(request: Request, _user: Annotated[User, Depends(_current_user)]) -> AuthSession:
    authenticated: Authenticated = request.state.authenticated
    return authenticated.session


CurrentUser = Annotated[User, Depends(_current_user)]
CurrentSession = Annotated[AuthSession, Depends(_current_session)]
OptionalUser = Annotated[User | None, Depends(_optional_user)]
Superuser = Annotated[User, Depends(_superuser)]
