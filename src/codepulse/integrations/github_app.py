"""Our GitHub OAuth app's own API: is an access token one GitHub issued to this app?

A GitHub access token alone proves only that someone holds it; a personal access token or a
token issued to another OAuth app reads `/user` just as well. GitHub's "check a token" endpoint,
`POST /applications/{client_id}/token` authenticated with the app's client id and secret (HTTP
Basic) and the token in a JSON body, answers 200 with the token's `app` and `user` for a live
token of this app, and 404 (or 422) for anything else. Tokens are never logged.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

import httpx
import structlog
from pydantic import BaseModel, ConfigDict, StrictInt, ValidationError

from codepulse.config import Settings, SettingsError
from codepulse.integrations.github import API_HEADERS, TOKEN_SHAPE, GitHubTokenInvalid, GitHubUnavailable, send

log = structlog.get_logger("codepulse.integrations.github")

_LABEL = "/applications/{client_id}/token"


@dataclass(frozen=True)
class GitHubAppToken:
    """What GitHub says about a token of our app."""

    user_id: int
    """GitHub's numeric id of the user who authorized it."""
    scopes: frozenset[str]


class _App(BaseModel):
    model_config = ConfigDict(extra="ignore")

    client_id: str


class _User(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: StrictInt


class _Check(BaseModel):
    model_config = ConfigDict(extra="ignore")

    app: _App
    user: _User
    scopes: list[str] | None = None


class GitHubApp:
    """`check_token(access_token)`: the token's user when GitHub issued it to this OAuth app
    (asked at `GITHUB_API_URL`)."""

    def __init__(self, settings: Settings) -> None:
        if settings.GITHUB_CLIENT_ID is None or settings.GITHUB_CLIENT_SECRET is None:
            raise SettingsError("GITHUB_CLIENT_ID and GITHUB_CLIENT_SECRET are required to check GitHub tokens")
        self._client_id = settings.GITHUB_CLIENT_ID
        self._secret = settings.GITHUB_CLIENT_SECRET.get_secret_value()
        self._api_url = settings.GITHUB_API_URL
        self._timeout = settings.GITHUB_TIMEOUT_SECONDS

    async def check_token(self, access_token: str) -> GitHubAppToken:
        """Raises GitHubTokenInvalid when the token is not a live token of this app (unknown,
        revoked, a personal access token, another app's), GitHubUnavailable when GitHub cannot
        say (down, rate limiting, or refusing our app's credentials)."""
        if not TOKEN_SHAPE.fullmatch(access_token):
            raise GitHubTokenInvalid("not a GitHub access token")
        response = await self._post(access_token)
        status = response.status_code
        if status in (404, 422):
            log.info("github.token_not_ours", status=status)
            raise GitHubTokenInvalid(f"GitHub {_LABEL}: not a token of this app ({status})")
        if status != 200:
            # 401: GitHub refuses the app's own credentials (a misconfiguration, not the caller's).
            log.warning("github.unavailable", path=_LABEL, reason="status", status=status)
            raise GitHubUnavailable(f"GitHub {_LABEL}: unexpected status {status}")
        try:
            checked = _Check.model_validate_json(response.content)
        except ValidationError as error:
            log.warning("github.unavailable", path=_LABEL, reason="unexpected_shape")
            raise GitHubUnavailable(f"GitHub {_LABEL}: unexpected response shape") from error
        if checked.app.client_id != self._client_id:
            raise GitHubTokenInvalid(f"GitHub {_LABEL}: the token belongs to another app")
        return GitHubAppToken(user_id=checked.user.id, scopes=frozenset(checked.scopes or ()))

    async def _post(self, access_token: str) -> httpx.Response:
        async with httpx.AsyncClient(
            base_url=self._api_url,
            auth=httpx.BasicAuth(self._client_id, self._secret),
            headers=API_HEADERS,
            timeout=self._timeout,
            follow_redirects=False,
        ) as client:
            path = f"/applications/{quote(self._client_id, safe='')}/token"
            return await send(client, "POST", path, _LABEL, json={"access_token": access_token})


def build_github_app(settings: Settings) -> GitHubApp | None:
    """The token checker, or None when GitHub sign-in is not configured."""
    if settings.GITHUB_CLIENT_ID is None or settings.GITHUB_CLIENT_SECRET is None:
        return None
    return GitHubApp(settings)
