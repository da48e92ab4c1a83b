"""HTTP endpoints of the auth domain: /auth (sign-in, sessions, tokens) and /users (profiles)."""

from __future__ import annotations

import uuid
import weakref
from typing import cast

from fastapi import Request, Response, status
from pydantic import BaseModel

from codepulse.auth.dependencies import (
    TOKEN_SUBMIT_PER_IP,
    AuthServiceDep,
    CurrentSession,
    CurrentUser,
    Limiter,
    OptionalUser,
    current_user_scheme,
    device_of,
    login_limited,
    register_limited,
    verify_email_limited,
)
from codepulse.auth.models import User
from codepulse.auth.schemas import (
    CliTokenIn,
    CliTokenOut,
    EmailIn,
    LoginIn,
    PasswordChangeIn,
    PasswordResetIn,
    PublicProfile,
    RegisterIn,
    SessionOut,
    TokenIn,
    TokenOut,
    UserOut,
    UserUpdate,
)
from codepulse.auth.sessions import IssuedSession
from codepulse.pagination import Page, PageParams
from codepulse.ratelimit import Rule
from codepulse.routing import DomainRouter

router = DomainRouter(prefix="/auth", tags=["auth"])
users_router = DomainRouter(prefix="/users", tags=["users"])

# Per IP and per account; failures count for login, every request for the others. Sign-in and
# registration's own limits live with their flows in `codepulse.auth.dependencies` (the web's
# forms go through the same ones).
RESET_PER_IP = "5/minute;20/hour"
RESET_PER_ACCOUNT = "3/minute;10/hour"
VERIFY_MAIL_PER_USER = "3/minute;10/hour"


class Accepted(BaseModel):
    status: str = "accepted"
    detail: str


def _ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def token_out(issued: IssuedSession) -> TokenOut:
    return TokenOut(token=issued.token, expires_at=issued.session.expires_at, user=UserOut.model_validate(issued.user))


def cli_token_out(issued: IssuedSession) -> CliTokenOut:
    """A new CLI token as `POST /auth/tokens` answers it (the GitHub device sign-in too)."""
    return CliTokenOut(
        id=issued.session.id,
        name=issued.session.name,
        token=issued.token,
        expires_at=issued.session.expires_at,
        created_at=issued.session.created_at,
    )


@router.post("/register", status_code=status.HTTP_201_CREATED, summary="Create an account and sign in")
async def register(body: RegisterIn, request: Request, service: AuthServiceDep, limiter: Limiter) -> TokenOut:
    return token_out(await register_limited(request, body, service, limiter))


@router.post("/login", summary="Sign in with email or username and password")
async def login(body: LoginIn, request: Request, service: AuthServiceDep, limiter: Limiter) -> TokenOut:
    return token_out(await login_limited(request, body, service, limiter))


# A user's rendering, kept as long as the user object lives: a cached authentication's user (the
# auth cache hands out the same read-only object to every request of its token) is rendered once,
# not validated and serialised again on each of the dashboard's many `GET /auth/me`. Objects
# loaded afresh (after any change of the account) are new keys.
_RENDERED_USERS: weakref.WeakKeyDictionary[User, bytes] = weakref.WeakKeyDictionary()


# The dashboard's most frequent call authenticates inline rather than through the `CurrentUser`
# dependency (a level of FastAPI's dependency solving costs about a tenth of this request); the
# operation documents the same bearer scheme `CurrentUser` adds everywhere else.
@router.get(
    "/me",
    response_model=UserOut,
    summary="The signed-in user",
    openapi_extra={"security": [{current_user_scheme.scheme_name: []}]},
)
async def me(request: Request) -> Response:
    user = cast(User, await current_user_scheme(request))  # required: Unauthorized rather than None
    return _rendered(user)


def _rendered(user: User) -> Response:
    rendered = _RENDERED_USERS.get(user)
    if rendered is None:
        rendered = _RENDERED_USERS[user] = UserOut.model_validate(user).model_dump_json().encode()
    return Response(rendered, media_type="application/json")


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT, summary="Sign out this session")
async def logout(user: CurrentUser, current: CurrentSession, service: AuthServiceDep) -> Response:
    await service.sessions.revoke_session(user, current.id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/logout-all", status_code=status.HTTP_204_NO_CONTENT, summary="Sign out every session")
async def logout_all(user: CurrentUser, service: AuthServiceDep) -> Response:
    await service.sessions.revoke_all_sessions(user)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/sessions", summary="My active sessions and CLI tokens, newest first")
async def list_sessions(
    user: CurrentUser, current: CurrentSession, service: AuthServiceDep, page: PageParams
) -> Page[SessionOut]:
    sessions, next_cursor = await service.sessions.list_sessions(user, page)
    items = [SessionOut.model_validate(s).model_copy(update={"current": s.id == current.id}) for s in sessions]
    return Page(items=items, next_cursor=next_cursor)


@router.delete("/sessions/{session_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Revoke one session")
async def revoke_session(session_id: uuid.UUID, user: CurrentUser, service: AuthServiceDep) -> Response:
    await service.sessions.revoke_session(user, session_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/tokens", status_code=status.HTTP_201_CREATED, summary="Create a CLI token (shown once)")
async def create_cli_token(
    body: CliTokenIn, request: Request, user: CurrentUser, service: AuthServiceDep
) -> CliTokenOut:
    issued = await service.sessions.create_cli_token(user, body.name, body.expires_in_days, device_of(request))
    return cli_token_out(issued)


@router.post("/password", status_code=status.HTTP_204_NO_CONTENT, summary="Change my password")
async def change_password(
    body: PasswordChangeIn, user: CurrentUser, current: CurrentSession, service: AuthServiceDep
) -> Response:
    """Every other session is signed out; this one stays."""
    await service.accounts.change_password(user, body.current_password, body.new_password, keep=current)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/verify-email/request", status_code=status.HTTP_202_ACCEPTED, summary="Mail me a link to verify my email")
async def request_email_verification(user: CurrentUser, service: AuthServiceDep, limiter: Limiter) -> Accepted:
    await limiter.hit([Rule("verify-mail:user", str(user.id), VERIFY_MAIL_PER_USER)])
    queued = await service.accounts.request_email_verification(user)
    detail = "A verification link is on its way." if queued else "Your email is already verified."
    return Accepted(detail=detail)


@router.post("/verify-email", summary="Verify my email with the mailed token")
async def verify_email(body: TokenIn, request: Request, service: AuthServiceDep, limiter: Limiter) -> UserOut:
    return UserOut.model_validate(await verify_email_limited(request, body.token, service, limiter))


@router.post(
    "/password-reset/request",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Mail a password reset link (always 202: no account enumeration)",
)
async def request_password_reset(
    body: EmailIn, request: Request, service: AuthServiceDep, limiter: Limiter
) -> Accepted:
    await limiter.hit(
        [Rule("reset:ip", _ip(request), RESET_PER_IP), Rule("reset:account", body.email, RESET_PER_ACCOUNT)]
    )
    await service.accounts.request_password_reset(body.email)
    return Accepted(detail="If an account uses this email, a reset link is on its way.")


@router.post(
    "/password-reset", status_code=status.HTTP_204_NO_CONTENT, summary="Set a new password with the mailed token"
)
async def reset_password(
    body: PasswordResetIn, request: Request, service: AuthServiceDep, limiter: Limiter
) -> Response:
    """Signs out every session of the account."""
    await limiter.hit([Rule("token-submit:ip", _ip(request), TOKEN_SUBMIT_PER_IP)])
    await service.accounts.reset_password(body.token, body.new_password)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@users_router.get("/me", response_model=UserOut, summary="My own profile (the same as `GET /auth/me`)")
async def my_profile(user: CurrentUser) -> Response:
    return _rendered(user)


@users_router.patch("/me", summary="Update my profile")
async def update_me(body: UserUpdate, user: CurrentUser, service: AuthServiceDep) -> UserOut:
    return UserOut.model_validate(await service.accounts.update_profile(user, body))


@users_router.delete("/me", status_code=status.HTTP_204_NO_CONTENT, summary="Delete my account and personal data")
async def delete_me(user: CurrentUser, service: AuthServiceDep) -> Response:
    await service.accounts.delete_account(user)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@users_router.get("/{username}", summary="A public profile (404 when private, unless it is mine)")
async def public_profile(username: str, viewer: OptionalUser, service: AuthServiceDep) -> PublicProfile:
    return PublicProfile.model_validate(await service.accounts.public_profile(username, viewer))
