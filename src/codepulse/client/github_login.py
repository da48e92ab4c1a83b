"""`codepulse login --github`: sign in with GitHub's device flow, driven by the server.

The server asks GitHub for the codes and polls GitHub; this client shows the user code, waits the
interval the server gives and asks the server again, until it answers a CLI token. So the CLI
never holds a GitHub token and needs no GitHub address or client id of its own: whatever GitHub
the server is configured with is the one the user approves on.

Server contract (`/api/v1/auth/oauth/github/device/...`): `POST code` answers `device_code`
(opaque), `user_code`, `verification_uri`, `expires_in`, `interval`; `POST token` with
`device_code` answers the CLI token (201, as `POST /auth/tokens`) or a problem:
`authorization_pending`, `slow_down` (with the new `interval`), `expired_token`,
`access_denied`, `invalid_device_code`, ...
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from codepulse.client.api import Api, ApiError

START_PATH = "/api/v1/auth/oauth/github/device/code"
POLL_PATH = "/api/v1/auth/oauth/github/device/token"
DEFAULT_INTERVAL = 5
DEFAULT_EXPIRES_IN = 900
# RFC 8628: after a slow_down, poll 5 s less often (when the server does not say by how much).
SLOW_DOWN_STEP = 5


def _seconds(value: Any, default: float) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) and value > 0 else default


def _expired(status: int | None) -> ApiError:
    return ApiError(
        status,
        "expired_token",
        "The code was not approved on GitHub in time: run `codepulse login --github` again.",
    )


def _final(error: ApiError) -> ApiError:
    """The error to stop with, worded for the command line."""
    if error.code == "expired_token":
        return _expired(error.status)
    if error.code == "access_denied":
        return ApiError(error.status, error.code, "The sign-in was declined on GitHub.", error.problem)
    if error.code == "invalid_device_code":
        return ApiError(
            error.status,
            error.code,
            "The server no longer knows this sign-in: run `codepulse login --github` again.",
            error.problem,
        )
    return error


def sign_in_with_github(
    api: Api,
    show: Callable[[str, str], None],
    *,
    name: str | None = None,
    expires_in_days: int = 90,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """Start a GitHub device sign-in on `api`'s server, call `show(user_code, verification_uri)`
    once, then poll every `interval` seconds (longer after a `slow_down`) until the user approves
    on GitHub; answers the new CLI token (named `name`, valid `expires_in_days`, 1 to 365).

    Raises ApiError: `expired_token` (the code expired, also when the server never stops saying
    `authorization_pending`), `access_denied` (declined on GitHub), `oauth_not_configured` (the
    server has no GitHub sign-in), or any other error of the server. The token is never printed."""
    started = api.request("POST", START_PATH)
    interval = _seconds(started.get("interval"), DEFAULT_INTERVAL)
    expires_in = _seconds(started.get("expires_in"), DEFAULT_EXPIRES_IN)
    show(str(started["user_code"]), str(started["verification_uri"]))
    body: dict[str, Any] = {"device_code": started["device_code"], "expires_in_days": expires_in_days}
    if name is not None:
        body["name"] = name
    waited = 0.0
    while True:
        sleep(interval)
        waited += interval
        try:
            issued = api.request("POST", POLL_PATH, json=body)
        except ApiError as error:
            if error.code == "slow_down":
                interval = _seconds(error.problem.get("interval"), interval + SLOW_DOWN_STEP)
            elif error.code != "authorization_pending":
                raise _final(error) from None
            if waited >= expires_in:  # the code is over whatever the server says
                raise _expired(error.status) from None
            continue
        return str(issued["token"])
