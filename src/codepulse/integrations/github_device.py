"""GitHub's device flow (RFC 8628) for our OAuth app: the two calls behind `codepulse login --github`.

- `request_code()`: `POST {GITHUB_URL}/login/device/code` with `client_id` and `scope` answers a
  device code (40 characters, secret: it redeems the token), the user code the person types at
  `verification_uri`, `expires_in` (900 s) and the polling `interval` (5 s).
- `poll(device_code)`: `POST {GITHUB_URL}/login/oauth/access_token` with `client_id`,
  `device_code` and `grant_type=urn:ietf:params:oauth:grant-type:device_code` answers the access
  token once the person has approved. Until then GitHub answers **HTTP 200** with an `error`:
  `authorization_pending`, `slow_down` (with the new `interval`, 5 s more), `expired_token`
  (documented also as `token_expired`), `access_denied`, `incorrect_device_code` - raised here as
  `GitHubDeviceError`; `device_flow_disabled`, `incorrect_client_credentials`,
  `unsupported_grant_type` mean GitHub refuses our app the flow (`GitHubDeviceFlowRefused`).

No client secret is sent: GitHub's device flow does not take one. Requests ask for JSON
(`Accept: application/json`; GitHub's default answer is form-encoded). Device codes and tokens
are never logged or put in messages.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx
import structlog
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError

from codepulse.config import Settings, SettingsError
from codepulse.integrations.github import (
    OAUTH_SCOPES,
    TOKEN_SHAPE,
    GitHubOAuthError,
    GitHubToken,
    GitHubUnavailable,
    parse_scopes,
    send,
)

log = structlog.get_logger("codepulse.integrations.github")

DEVICE_GRANT_TYPE = "urn:ietf:params:oauth:grant-type:device_code"
CODE_PATH = "/login/device/code"
TOKEN_PATH = "/login/oauth/access_token"  # noqa: S105 - a path, not a secret
# The answers while the flow is not done, for the caller to relay (GitHub's codes).
DEVICE_FLOW_ERRORS = frozenset(
    {"authorization_pending", "slow_down", "expired_token", "access_denied", "incorrect_device_code"}
)
_HEADERS = {"Accept": "application/json", "User-Agent": "codepulse"}


class GitHubDeviceError(GitHubOAuthError):
    """The device flow is not done: `error` is one of DEVICE_FLOW_ERRORS; `interval` is the new
    polling interval of a `slow_down` (None when GitHub did not say)."""

    def __init__(self, error: str, description: str | None = None, *, interval: int | None = None) -> None:
        super().__init__(error, description)
        self.interval = interval


class GitHubDeviceFlowRefused(GitHubOAuthError):
    """GitHub refuses our app the device flow: `device_flow_disabled` (not enabled in the OAuth
    app's settings), an unknown client id, `incorrect_client_credentials`,
    `unsupported_grant_type`. A misconfiguration of this server, not the user's doing."""


@dataclass(frozen=True)
class GitHubDeviceCode:
    device_code: str = field(repr=False)  # a credential: kept out of logs and tracebacks
    user_code: str
    verification_uri: str
    expires_in: int
    """Seconds until both codes expire."""
    interval: int
    """The minimum number of seconds between two polls."""


class _DeviceCodePayload(BaseModel):
    model_config = ConfigDict(extra="ignore")

    device_code: str = Field(min_length=1, max_length=512, pattern=r"^[\x21-\x7e]+$")
    user_code: str = Field(min_length=1, max_length=100)
    verification_uri: str = Field(min_length=1, max_length=2048)
    expires_in: StrictInt = Field(gt=0)
    interval: StrictInt = Field(default=5, ge=0)


class GitHubDeviceFlow:
    """`request_code()` then `poll(device_code)` until it answers a token, for this server's
    OAuth app (`GITHUB_CLIENT_ID`), at `GITHUB_URL`."""

    def __init__(self, settings: Settings) -> None:
        if settings.GITHUB_CLIENT_ID is None:
            raise SettingsError("GITHUB_CLIENT_ID: is required for GitHub sign-in")
        self.client_id = settings.GITHUB_CLIENT_ID
        self._url = settings.GITHUB_URL
        self._timeout = settings.GITHUB_TIMEOUT_SECONDS

    async def request_code(self, scopes: str = OAUTH_SCOPES) -> GitHubDeviceCode:
        """A new device code. Raises GitHubDeviceFlowRefused or GitHubUnavailable."""
        response = await self._post(CODE_PATH, {"client_id": self.client_id, "scope": scopes})
        status = response.status_code
        if status in (401, 403, 404, 422):  # GitHub's answers to a client id it does not know
            log.warning("github.device_flow_refused", path=CODE_PATH, status=status)
            raise GitHubDeviceFlowRefused(f"http_{status}", "GitHub does not know this OAuth app")
        if status not in (200, 400):
            raise _unavailable(CODE_PATH, "status", status)
        body = _json_object(response, CODE_PATH)
        if "error" in body:
            error = str(body["error"])
            log.warning("github.device_flow_refused", path=CODE_PATH, error=error)
            raise GitHubDeviceFlowRefused(error, _description(body))
        try:
            code = _DeviceCodePayload.model_validate(body)
        except ValidationError as failed:
            raise _unavailable(CODE_PATH, "unexpected_shape") from failed
        return GitHubDeviceCode(
            device_code=code.device_code,
            user_code=code.user_code,
            verification_uri=code.verification_uri,
            expires_in=code.expires_in,
            interval=code.interval,
        )

    async def poll(self, device_code: str) -> GitHubToken:
        """The access token once the user has approved. Raises GitHubDeviceError while the flow is
        not done (or is over without a token), GitHubDeviceFlowRefused, GitHubUnavailable."""
        if not TOKEN_SHAPE.fullmatch(device_code):
            raise GitHubDeviceError("incorrect_device_code", "not a GitHub device code")
        fields = {"client_id": self.client_id, "device_code": device_code, "grant_type": DEVICE_GRANT_TYPE}
        response = await self._post(TOKEN_PATH, fields)
        # GitHub answers 200 with an `error`; RFC 8628 says 400: both are read.
        if response.status_code not in (200, 400):
            raise _unavailable(TOKEN_PATH, "status", response.status_code)
        body = _json_object(response, TOKEN_PATH)
        if "error" in body:
            raise _token_error(body)
        access_token = body.get("access_token")
        if not isinstance(access_token, str) or not TOKEN_SHAPE.fullmatch(access_token):
            raise _unavailable(TOKEN_PATH, "unexpected_shape")
        return GitHubToken(access_token=access_token, scopes=parse_scopes(body.get("scope")))

    async def _post(self, path: str, fields: dict[str, str]) -> httpx.Response:
        async with httpx.AsyncClient(
            base_url=self._url, headers=_HEADERS, timeout=self._timeout, follow_redirects=False
        ) as client:
            response = await send(client, "POST", path, path, data=fields)
        if response.status_code == 429 or response.status_code >= 500:
            raise _unavailable(path, "status", response.status_code)
        return response


def _token_error(body: dict[str, Any]) -> GitHubOAuthError:
    error = str(body["error"])
    if error == "token_expired":  # GitHub's documentation names it both ways
        error = "expired_token"
    if error not in DEVICE_FLOW_ERRORS:
        log.warning("github.device_flow_refused", path=TOKEN_PATH, error=error[:100])
        return GitHubDeviceFlowRefused(error, _description(body))
    interval = body.get("interval")
    if isinstance(interval, str) and interval.isdigit():  # a form-encoded answer
        interval = int(interval)
    return GitHubDeviceError(
        error, _description(body), interval=interval if isinstance(interval, int) and interval > 0 else None
    )


def _description(body: dict[str, Any]) -> str | None:
    description = body.get("error_description")
    return str(description)[:300] if description else None


def _json_object(response: httpx.Response, path: str) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise _unavailable(path, "malformed_json")
    return body


def _unavailable(path: str, reason: str, status: int | None = None) -> GitHubUnavailable:
    log.warning("github.unavailable", path=path, reason=reason, status=status)
    return GitHubUnavailable(f"GitHub {path}: {reason}" + (f" ({status})" if status is not None else ""))


def build_github_device(settings: Settings) -> GitHubDeviceFlow | None:
    """The device flow, or None when GitHub sign-in is not configured (the same condition as the
    browser flow's `build_oauth`)."""
    if settings.GITHUB_CLIENT_ID is None:
        return None
    return GitHubDeviceFlow(settings)
