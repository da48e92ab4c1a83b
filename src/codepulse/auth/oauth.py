"""GitHub sign-in: the browser flow (authorize -> callback -> one-time code -> exchange), linking,
and the Burntop CLI's device-flow token hand-over (`POST /auth/oauth/github/device`: that CLI
runs GitHub's device flow itself). The codepulse CLI's device flow, driven by the server, is in
`auth.device_flow`.

Once the callback has verified the OAuth `state`, the browser always goes back to the dashboard
(`FRONTEND_URL/auth/callback`) with `?code=` on success or `?error=&error_description=` on
failure; a missing or foreign `state` is a 400 problem (there is no flow to return to). The
session token never appears in a URL: the dashboard trades the 60-second code at
`POST /auth/oauth/exchange`.

Login CSRF: anyone can finish a flow of their own and send someone else the resulting
`/auth/callback?code=` link, which would sign that person into their account. So a browser
starts with `?binding=` (`browser_binding` of a random nonce it keeps, e.g. the dashboard's
HttpOnly cookie); the binding rides in this flow's cookie session beside the OAuth state, and
the code issued at the end can only be exchanged with the nonce. A flow started without one
(an API client that keeps the code to itself) gets an unbound code, which the dashboard refuses.
"""

from __future__ import annotations

import hmac
import unicodedata
import uuid
from datetime import timedelta
from typing import Annotated
from urllib.parse import unquote, urlencode, urlsplit

import structlog
from fastapi import Query, Request, Response, status
from fastapi.responses import RedirectResponse
from pydantic import BaseModel, Field

from codepulse.auth.dependencies import (
    GITHUB_AUTHORIZE_ROUTE,
    AuthServiceDep,
    CurrentUser,
    Limiter,
    OptionalUser,
    device_of,
    link_binding,
    oauth_exchange_limited,
    start_github_link,
)
from codepulse.auth.dependencies import LINK_COOKIE as LINK_COOKIE  # set by `POST /github/link`
from codepulse.auth.github_accounts import GITHUB
from codepulse.auth.models import SessionKind
from codepulse.auth.router import token_out
from codepulse.auth.schemas import OAuthExchangeIn, TokenOut
from codepulse.auth.service import AuthService
from codepulse.config import Settings
from codepulse.db import writes
from codepulse.errors import BadRequest, Conflict, DomainError, NotFound, ServiceUnavailable, Unauthorized
from codepulse.integrations.github import (
    GitHubClient,
    GitHubConsentDenied,
    GitHubError,
    GitHubInsufficientScope,
    GitHubOAuth,
    GitHubOAuthError,
    GitHubOAuthStateError,
    GitHubProfile,
    GitHubToken,
    GitHubTokenInvalid,
    GitHubUnavailable,
)
from codepulse.integrations.github_app import GitHubApp, GitHubAppToken
from codepulse.ratelimit import Rule
from codepulse.routing import DomainRouter
from codepulse.security import SecretBox
from codepulse.text import Line

log = structlog.get_logger("codepulse.auth.oauth")

router = DomainRouter(prefix="/auth/oauth", tags=["auth"])

NEXT_KEY = "codepulse.next"
LINK_USER_KEY = "codepulse.link_user"
LINK_BINDING_KEY = "codepulse.link_binding"
BROWSER_BINDING_KEY = "codepulse.browser_binding"
DEVICE_PER_IP = "10/minute;100/hour"
DEVICE_SESSION_LIFETIME = timedelta(days=90)


def _github(request: Request) -> GitHubOAuth:
    oauth: GitHubOAuth | None = request.app.state.github_oauth
    if oauth is None:
        raise NotFound("oauth", "GitHub sign-in is not configured on this server.", code="oauth_not_configured")
    return oauth


def secret_box_of(request: Request) -> SecretBox:
    """The app's SecretBox: GitHub tokens are stored sealed with it."""
    box: SecretBox = request.app.state.secret_box
    return box


def _unsafe_character(text: str) -> bool:
    # Control and format characters: browsers drop tab and newline inside URLs and strip other
    # C0 characters at their edges, so `/\t/evil.example` would become `//evil.example`.
    return any(unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp") for char in text)


def _relative_path(candidate: str) -> bool:
    return candidate.startswith("/") and not candidate.startswith("//") and "\\" not in candidate


def safe_next(settings: Settings, candidate: str | None) -> str | None:
    """A path on the dashboard to return to, or None. Only same-origin targets: a relative path,
    or an absolute URL on FRONTEND_URL (no open redirect). Control characters are refused, also
    percent-encoded, and so is a path that reads as another host once decoded."""
    if not candidate:
        return None
    refused = BadRequest("`next` must be a path on the dashboard.", code="invalid_next")
    decoded = unquote(candidate)
    if _unsafe_character(candidate) or _unsafe_character(decoded) or candidate != candidate.strip():
        raise refused
    if candidate.startswith("/"):
        path = candidate
    else:
        target, frontend = urlsplit(candidate), urlsplit(settings.FRONTEND_URL)
        if (target.scheme, target.netloc) != (frontend.scheme, frontend.netloc):
            raise refused
        path = (target.path or "/") + (f"?{target.query}" if target.query else "")
    if not _relative_path(path) or not _relative_path(unquote(path)):
        raise refused
    return path


def _to_dashboard(settings: Settings, **params: str | None) -> RedirectResponse:
    query = urlencode({key: value for key, value in params.items() if value is not None})
    return RedirectResponse(f"{settings.FRONTEND_URL}/auth/callback?{query}", status_code=status.HTTP_302_FOUND)


class LinkStart(BaseModel):
    authorize_url: str = Field(description="Open this URL in the browser (top-level) within 5 minutes.")


class DeviceTokenIn(BaseModel):
    access_token: Line = Field(min_length=1, max_length=512, description="A GitHub access token the CLI obtained.")


class DeviceSessionOut(BaseModel):
    """The Burntop CLI's wire contract for a device sign-in."""

    id: uuid.UUID
    user_id: uuid.UUID
    token: str
    expires_at: str
    created_at: str


@router.get(
    "/github",
    status_code=status.HTTP_302_FOUND,
    response_class=RedirectResponse,
    summary="Start GitHub sign-in (302 to GitHub)",
    responses={302: {"description": "Redirect to GitHub's consent page"}},
)
@writes  # a link code is consumed here
async def github_authorize(
    request: Request,
    service: AuthServiceDep,
    user: OptionalUser,
    next_path: Annotated[
        str | None, Query(alias="next", max_length=2000, description="Dashboard path to return to.")
    ] = None,
    link: Annotated[bool, Query(description="Link GitHub to the signed-in user (bearer token required).")] = False,
    link_code: Annotated[str | None, Query(max_length=200, description="From `POST .../github/link`.")] = None,
    binding: Annotated[
        str | None,
        Query(
            pattern="^[0-9a-f]{64}$",
            description="SHA-256 (hex) of a nonce this browser keeps: the code the flow ends with can "
            "then be exchanged only with that nonce (`POST .../exchange` `nonce`).",
        ),
    ] = None,
) -> RedirectResponse:
    github = _github(request)
    settings: Settings = request.app.state.settings
    request.session[NEXT_KEY] = safe_next(settings, next_path)
    request.session.pop(LINK_BINDING_KEY, None)
    # Replaced or dropped with every new start: one flow per browser, as Authlib keeps its state.
    request.session[BROWSER_BINDING_KEY] = binding
    if link_code is not None:
        linking = await service.github.consume_oauth_link_code(link_code)
        bound_to = link_binding(settings, linking.id, link_code)
        if not hmac.compare_digest(request.cookies.get(LINK_COOKIE, ""), bound_to):
            # Another browser's link URL (sent to this one): refused, and the code stays unused.
            raise _link_not_bound()
        request.session[LINK_USER_KEY] = str(linking.id)
        request.session[LINK_BINDING_KEY] = bound_to
    elif link:
        if user is None:
            raise Unauthorized("Sign in before linking GitHub.", code="not_authenticated")
        request.session[LINK_USER_KEY] = str(user.id)
    else:
        request.session.pop(LINK_USER_KEY, None)
    return await github.authorize_redirect(request, str(request.url_for("github_callback")))


def _link_not_bound() -> BadRequest:
    return BadRequest(
        "This link to connect GitHub was made for another browser or has expired: start linking again "
        "from your account settings.",
        code="oauth_link_not_bound",
    )


@router.post("/github/link", summary="Start linking GitHub to my account (for browsers)")
async def github_link_start(
    request: Request, response: Response, user: CurrentUser, service: AuthServiceDep
) -> LinkStart:
    """Browsers cannot send a bearer token on a navigation: this returns a URL with a
    single-use 5-minute code that stands for it, and sets a cookie (`codepulse_link`) that binds
    the URL to this browser: opened anywhere else, it is refused (400 `oauth_link_not_bound`).
    Call it with credentials (`fetch(..., {credentials: "include"})`) so the cookie is kept."""
    _github(request)
    return LinkStart(authorize_url=await start_github_link(request, response, user, service))


@router.get(
    "/github/callback",
    status_code=status.HTTP_302_FOUND,
    response_class=RedirectResponse,
    summary="GitHub's redirect back (302 to the dashboard with a one-time code)",
    responses={302: {"description": "Redirect to FRONTEND_URL/auth/callback"}},
)
@writes
async def github_callback(request: Request, service: AuthServiceDep) -> RedirectResponse:
    github = _github(request)
    settings: Settings = request.app.state.settings
    next_path = request.session.pop(NEXT_KEY, None)
    link_user_id = request.session.pop(LINK_USER_KEY, None)
    link_bound_to = request.session.pop(LINK_BINDING_KEY, None)
    browser_binding = request.session.pop(BROWSER_BINDING_KEY, None)
    try:
        token = await github.authorize_access_token(request)
    except GitHubOAuthStateError:
        raise BadRequest(
            "The sign-in could not be matched to this browser; start again.", code="oauth_state_mismatch"
        ) from None
    except GitHubConsentDenied as denied:
        return _to_dashboard(settings, error="access_denied", error_description=denied.description)
    except GitHubOAuthError as failed:
        return _to_dashboard(settings, error="oauth_failed", error_description=failed.error)
    except GitHubUnavailable:
        return _to_dashboard(settings, error="github_unavailable", error_description="GitHub did not answer")
    try:
        if link_user_id is not None:
            return await _link_callback(request, service, link_user_id, link_bound_to, token, next_path)
        profile = await github_profile(request, token)
        user = await service.github.sign_in_with_github(profile, token, secret_box_of(request))
        code = await service.github.issue_oauth_exchange_code(user, device_of(request), binding=browser_binding)
    except DomainError as refused:
        # Refusals happen before any write, so the committed transaction holds nothing of them.
        return _to_dashboard(settings, error=refused.instance_code, error_description=refused.detail)
    return _to_dashboard(settings, code=code, next=next_path)


async def _link_callback(
    request: Request,
    service: AuthService,
    link_user_id: str,
    binding: str | None,
    token: GitHubToken,
    next_path: str | None,
) -> RedirectResponse:
    """Link the GitHub account to the account this flow was started for. A flow started from a
    link URL must end in the browser holding that URL's cookie, which names the same account;
    the dashboard is told which account and GitHub login were linked, to show them."""
    settings: Settings = request.app.state.settings
    if binding is not None and not hmac.compare_digest(request.cookies.get(LINK_COOKIE, ""), binding):
        raise _link_not_bound()
    user = await service.accounts.user(uuid.UUID(link_user_id))
    if user is None:
        raise Unauthorized("Sign in again before linking GitHub.", code="not_authenticated")
    profile = await github_profile(request, token)
    await service.github.link_github(user, profile, token, secret_box_of(request))
    response = _to_dashboard(settings, linked=GITHUB, account=user.username, login=profile.login, next=next_path)
    if binding is not None:
        response.delete_cookie(LINK_COOKIE, path=request.url_for(GITHUB_AUTHORIZE_ROUTE).path)
    return response


@router.post("/exchange", summary="Trade the callback's one-time code for a session")
async def exchange_code(body: OAuthExchangeIn, request: Request, service: AuthServiceDep, limiter: Limiter) -> TokenOut:
    """A code of a flow started with `binding` needs the `nonce` it is the hash of."""
    return token_out(await oauth_exchange_limited(request, body.token, service, limiter, nonce=body.nonce))


@router.post(
    "/github/device",
    status_code=status.HTTP_201_CREATED,
    summary="CLI sign-in with a GitHub token from GitHub's device flow",
)
async def github_device(
    body: DeviceTokenIn, request: Request, service: AuthServiceDep, limiter: Limiter
) -> DeviceSessionOut:
    """Only a token GitHub issued to this server's OAuth app is accepted (GitHub's token check
    with the app's credentials): a personal access token or another app's token is a 401. Then
    the GitHub account is resolved exactly as the browser flow does, and a new CLI session is
    answered. The device token is stored only when no GitHub token is: a browser-granted one
    stays. Errors carry OAuth-style `error` and `error_description` beside the problem fields."""
    try:
        _github(request)
        await limiter.hit([Rule("oauth-device:ip", request.client.host if request.client else "?", DEVICE_PER_IP)])
        checked = await _check_app_token(request, body.access_token)
        token = GitHubToken(access_token=body.access_token, scopes=checked.scopes)
        profile = await github_profile(request, token)
        if profile.id != checked.user_id:  # pragma: no cover - GitHub answers both for one token
            raise Unauthorized("GitHub did not accept this token.", code="github_token_invalid")
        user = await service.github.sign_in_with_github(profile, token, secret_box_of(request), replace_token=False)
        issued = await service.sessions.create_session(
            user, SessionKind.CLI, device_of(request), name="GitHub device sign-in", lifetime=DEVICE_SESSION_LIFETIME
        )
    except DomainError as error:
        error.extra.setdefault("error", _OAUTH_ERRORS.get(error.status, "invalid_request"))
        error.extra.setdefault("error_description", error.detail)
        raise
    return DeviceSessionOut(
        id=issued.session.id,
        user_id=user.id,
        token=issued.token,
        expires_at=issued.session.expires_at.isoformat(),
        created_at=issued.session.created_at.isoformat(),
    )


@router.delete("/github", status_code=status.HTTP_204_NO_CONTENT, summary="Unlink GitHub from my account")
async def github_unlink(user: CurrentUser, service: AuthServiceDep) -> Response:
    await service.github.unlink_oauth(user, GITHUB)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


_OAUTH_ERRORS = {401: "invalid_token", 403: "access_denied", 404: "invalid_request", 409: "access_denied"}


async def _check_app_token(request: Request, access_token: str) -> GitHubAppToken:
    app: GitHubApp | None = request.app.state.github_app
    if app is None:
        raise NotFound("oauth", "GitHub sign-in is not configured on this server.", code="oauth_not_configured")
    try:
        return await app.check_token(access_token)
    except GitHubTokenInvalid:
        raise Unauthorized(
            "GitHub did not confirm this token as one issued to this server's GitHub app: sign in with "
            "this server's GitHub client id (GITHUB_CLIENT_ID).",
            code="github_token_invalid",
        ) from None
    except GitHubUnavailable:
        raise ServiceUnavailable("GitHub did not answer; try again shortly.", code="github_unavailable") from None


async def github_profile(request: Request, token: GitHubToken) -> GitHubProfile:
    """The token owner's GitHub profile (with the verified emails), GitHub's refusals as problems;
    every GitHub sign-in path reads it here."""
    client: GitHubClient = request.app.state.github_client
    try:
        return await client.fetch_profile(token.access_token)
    except GitHubTokenInvalid:
        raise Unauthorized("GitHub did not accept this token.", code="github_token_invalid") from None
    except GitHubInsufficientScope:
        raise BadRequest("The GitHub token needs the user:email scope.", code="github_insufficient_scope") from None
    except GitHubUnavailable:
        raise ServiceUnavailable("GitHub did not answer; try again shortly.", code="github_unavailable") from None
    except GitHubError:
        raise Conflict("GitHub answered unexpectedly.", code="github_error") from None
