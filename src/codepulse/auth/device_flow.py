"""GitHub sign-in for the codepulse CLI through GitHub's device flow (RFC 8628), driven by the server.

`POST /auth/oauth/github/device/code` asks GitHub for a device code and answers the user code to
show, GitHub's device page, the lifetime and the polling interval. The CLI then polls
`POST /auth/oauth/github/device/token`; each poll asks GitHub once, and GitHub's answers while the
person has not approved become problems with GitHub's codes. Once GitHub hands over the access
token, the GitHub account is resolved with the browser flow's rules (the link; else the account
whose verified email is GitHub's primary verified email, linked now; else a new account) and a
CLI session is answered, as `POST /auth/tokens` answers one.

The device code the CLI holds is not GitHub's: it is GitHub's sealed with this server's SecretBox
(encrypted and authenticated under SECRET_KEY) together with the client id it was issued for and
its expiry. So the GitHub token only ever exists on this server (the CLI cannot redeem the code
at GitHub itself), this server polls GitHub only for codes it issued under its current
GITHUB_CLIENT_ID, and an expired code is refused without asking GitHub. Codes and tokens are
never logged.

(`POST /auth/oauth/github/device`, in `auth.oauth`, is another contract: the Burntop CLI runs
the device flow against GitHub itself and hands the server the GitHub token.)
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import structlog
from fastapi import Request, status

from codepulse.auth.dependencies import AuthServiceDep, Limiter, device_of
from codepulse.auth.oauth import github_profile, secret_box_of
from codepulse.auth.router import cli_token_out
from codepulse.auth.schemas import CliTokenOut, GitHubDeviceCodeOut, GitHubDeviceTokenIn
from codepulse.errors import BadGateway, BadRequest, DomainError, Forbidden, NotFound, ServiceUnavailable
from codepulse.integrations.github import GitHubToken, GitHubUnavailable
from codepulse.integrations.github_device import (
    GitHubDeviceCode,
    GitHubDeviceError,
    GitHubDeviceFlow,
    GitHubDeviceFlowRefused,
)
from codepulse.ratelimit import Rule
from codepulse.routing import DomainRouter
from codepulse.security import SecretBox, SecretBoxError

log = structlog.get_logger("codepulse.auth.device_flow")

router = DomainRouter(prefix="/auth/oauth/github/device", tags=["auth"])

# A CLI polls every 5 s (12 a minute, 180 for a whole 15-minute code): room for that and a retry,
# per address; starting is rarer.
DEVICE_CODE_PER_IP = "10/minute;50/hour"
DEVICE_POLL_PER_IP = "20/minute;300/hour"
DEFAULT_TOKEN_NAME = "GitHub device sign-in"  # noqa: S105 - a label, not a secret
_SEALED_PURPOSE = "github-device"


def _device_flow(request: Request) -> GitHubDeviceFlow:
    flow: GitHubDeviceFlow | None = request.app.state.github_device
    if flow is None:
        raise NotFound("oauth", "GitHub sign-in is not configured on this server.", code="oauth_not_configured")
    return flow


def _ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


# --- the sealed device code --------------------------------------------------------------------


def seal_device_code(box: SecretBox, client_id: str, code: GitHubDeviceCode, now: datetime) -> str:
    """GitHub's device code, the client id it belongs to and its expiry, encrypted for the CLI to
    hold and hand back."""
    expires = int((now + timedelta(seconds=code.expires_in)).timestamp())
    payload = {"p": _SEALED_PURPOSE, "c": client_id, "d": code.device_code, "e": expires}
    return box.encrypt(json.dumps(payload, separators=(",", ":")))


def open_device_code(box: SecretBox, client_id: str, sealed: str, now: datetime) -> str:
    """GitHub's device code inside `sealed`. 400 `invalid_device_code` for anything this server
    did not seal for its client id; 400 `expired_token` once its time is over (GitHub not asked)."""
    try:
        payload = json.loads(box.decrypt(sealed))
    except (SecretBoxError, ValueError):
        payload = None
    if (
        not isinstance(payload, dict)
        or payload.get("p") != _SEALED_PURPOSE
        or payload.get("c") != client_id
        or not isinstance(payload.get("d"), str)
        or not isinstance(payload.get("e"), int)
    ):
        raise BadRequest(
            "This device code was not issued by this server: start the sign-in again.", code="invalid_device_code"
        )
    if now.timestamp() >= payload["e"]:
        raise _expired()
    device_code: str = payload["d"]
    return device_code


def _expired() -> BadRequest:
    return BadRequest(
        "The code expired before it was approved on GitHub: start the sign-in again.", code="expired_token"
    )


def _device_problem(error: GitHubDeviceError) -> DomainError:
    """GitHub's answer while the flow is not done, as this API's problem with GitHub's code."""
    if error.error == "authorization_pending":
        return BadRequest(
            "Waiting for the code to be entered and approved on GitHub; poll again after `interval` seconds.",
            code="authorization_pending",
        )
    if error.error == "slow_down":
        extra: dict[str, int] = {}
        headers: dict[str, str] = {}
        if error.interval is not None:
            extra, headers = {"interval": error.interval}, {"Retry-After": str(error.interval)}
        return BadRequest(
            "Polling too fast: wait `interval` seconds between polls from now on.",
            code="slow_down",
            extra=extra,
            headers=headers,
        )
    if error.error == "expired_token":
        return _expired()
    if error.error == "access_denied":
        return Forbidden("The sign-in was declined on GitHub.", code="access_denied")
    return BadRequest(
        "GitHub does not know this device code (or it was already used): start the sign-in again.",
        code="invalid_device_code",
    )


def _refused(error: GitHubDeviceFlowRefused) -> BadGateway:
    log.warning("auth.github_device_refused", error=error.error[:100])
    return BadGateway(
        "GitHub refuses this server the device flow: enable Device Flow in the settings of the GitHub OAuth "
        "app (GITHUB_CLIENT_ID).",
        code="github_device_flow_refused",
    )


def _unavailable() -> ServiceUnavailable:
    return ServiceUnavailable("GitHub did not answer; try again shortly.", code="github_unavailable")


# --- the routes --------------------------------------------------------------------------------


@router.post("/code", summary="Start a GitHub sign-in for a CLI (GitHub's device flow)")
async def github_device_code(request: Request, limiter: Limiter) -> GitHubDeviceCodeOut:
    """Asks GitHub for a device code for this server's OAuth app (scopes `read:user user:email`).
    Show `user_code` and `verification_uri` to the user, then poll `POST .../device/token` with
    `device_code` every `interval` seconds. `device_code` is opaque (sealed by this server).

    Problems: 404 `oauth_not_configured` (GitHub sign-in is not set up on this server), 429
    `rate_limited` (per address), 502 `github_device_flow_refused` (the OAuth app does not have
    Device Flow enabled), 503 `github_unavailable`."""
    flow = _device_flow(request)
    await limiter.hit([Rule("oauth-device-code:ip", _ip(request), DEVICE_CODE_PER_IP)])
    try:
        code = await flow.request_code()
    except GitHubDeviceFlowRefused as refused:
        raise _refused(refused) from None
    except GitHubUnavailable:
        raise _unavailable() from None
    sealed = seal_device_code(secret_box_of(request), flow.client_id, code, request.app.state.clock())
    log.info("auth.github_device_started", expires_in=code.expires_in, interval=code.interval)
    return GitHubDeviceCodeOut(
        device_code=sealed,
        user_code=code.user_code,
        verification_uri=code.verification_uri,
        expires_in=code.expires_in,
        interval=code.interval,
    )


@router.post(
    "/token",
    status_code=status.HTTP_201_CREATED,
    summary="Poll a GitHub device sign-in; a CLI token once approved (shown once)",
)
async def github_device_token(
    body: GitHubDeviceTokenIn, request: Request, service: AuthServiceDep, limiter: Limiter
) -> CliTokenOut:
    """Asks GitHub once whether the user has approved `device_code`. Once approved, the GitHub
    account signs in with the browser flow's rules: the account it is linked to; else the account
    whose verified email is GitHub's primary verified email (linked now); else a new account. A
    new CLI session is answered, as `POST /auth/tokens` answers one (`name`, `expires_in_days`).
    GitHub's token is stored for the account's GitHub features only when none is stored yet.

    While the sign-in is not done, problems carry GitHub's codes (RFC 8628):
    - 400 `authorization_pending`: not approved yet; poll again after `interval` seconds.
    - 400 `slow_down`: polled too fast; the problem's `interval` (and `Retry-After`) is the new
      interval, to keep from now on.
    - 400 `expired_token`: the code expired; start again.
    - 403 `access_denied`: the user declined on GitHub; start again.
    - 400 `invalid_device_code`: not a code this server issued (or already used); start again.

    Other problems: 404 `oauth_not_configured`; 409 `github_email_unverified` (the GitHub account
    has no verified primary email) or `account_email_unverified` (the account with that email has
    not verified it); 429 `rate_limited` (per address); 502 `github_device_flow_refused`; 503
    `github_unavailable`."""
    flow = _device_flow(request)
    await limiter.hit([Rule("oauth-device-token:ip", _ip(request), DEVICE_POLL_PER_IP)])
    box = secret_box_of(request)
    device_code = open_device_code(box, flow.client_id, body.device_code, request.app.state.clock())
    token = await _redeem(flow, device_code)
    # GitHub first, the database after: no transaction is open while GitHub is asked.
    profile = await github_profile(request, token)
    user = await service.github.sign_in_with_github(profile, token, box, replace_token=False)
    issued = await service.sessions.create_cli_token(
        user, body.name or DEFAULT_TOKEN_NAME, body.expires_in_days, device_of(request)
    )
    log.info("auth.github_device_signed_in", user_id=str(user.id), session_id=str(issued.session.id))
    return cli_token_out(issued)


async def _redeem(flow: GitHubDeviceFlow, device_code: str) -> GitHubToken:
    try:
        return await flow.poll(device_code)
    except GitHubDeviceError as pending:
        raise _device_problem(pending) from None
    except GitHubDeviceFlowRefused as refused:
        raise _refused(refused) from None
    except GitHubUnavailable:
        raise _unavailable() from None
