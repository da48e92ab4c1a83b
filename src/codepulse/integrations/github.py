"""The one place codepulse talks to GitHub: the OAuth web flow (Authlib) and the user API (httpx).

Two entry points:

- `GitHubClient(settings).fetch_profile(access_token)` reads `/user` and `/user/emails` with a
  GitHub access token, whichever way it was obtained (web flow, or the CLI's device flow);
  `list_repositories` / `get_repositories` read the repositories that token reaches.
- `build_oauth(settings)` returns a `GitHubOAuth` for the browser flow, or None when
  `GITHUB_CLIENT_ID` is unset (the routes then answer 404 `oauth_not_configured`).

The device flow's two calls (for `codepulse login --github`) are in `github_device`, the app's
token check in `github_app`; both use `send` and the errors below.

Errors are this module's own (`GitHubError` and subclasses); Authlib's and httpx's exceptions do
not leak out, so callers never import Authlib. Access tokens are never logged or put in messages.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import structlog
from pydantic import BaseModel, ConfigDict, StrictInt, TypeAdapter, ValidationError
from starlette.requests import Request
from starlette.responses import RedirectResponse

from codepulse.config import Settings, SettingsError

log = structlog.get_logger("codepulse.integrations.github")

API_VERSION = "2022-11-28"
OAUTH_SCOPES = "read:user user:email"
# What every request to GitHub's REST API sends, whoever it authenticates as.
API_HEADERS = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": API_VERSION, "User-Agent": "codepulse"}
# Printable ASCII without spaces: anything else cannot be a GitHub token, and httpx would refuse
# it as a header value (a transport error that would otherwise read as "GitHub is down").
TOKEN_SHAPE = re.compile(r"[\x21-\x7e]{1,512}")
_T = TypeVar("_T")


# -- errors -----------------------------------------------------------------------------------


class GitHubError(Exception):
    """Base of every failure talking to GitHub."""


class GitHubTokenInvalid(GitHubError):
    """GitHub refused the access token (401/403 from `/user`): unknown, revoked or expired."""


class GitHubInsufficientScope(GitHubError):
    """The token is valid but cannot read `/user/emails`: it lacks the `user:email` scope
    (GitHub answers 404 there, or 403 for fine-grained tokens)."""


class GitHubUnavailable(GitHubError):
    """GitHub could not be reached or answered unusably: network error, timeout, rate limit,
    5xx, an unexpected status, or a body that is not the JSON we expect."""


class GitHubOAuthError(GitHubError):
    """The OAuth web flow failed with an OAuth `error` code (e.g. `bad_verification_code`,
    `incorrect_client_credentials`, `redirect_uri_mismatch`), from the callback or token endpoint."""

    def __init__(self, error: str, description: str | None = None) -> None:
        self.error = error
        self.description = description
        super().__init__(f"{error}: {description}" if description else error)


class GitHubOAuthStateError(GitHubOAuthError):
    """The callback's `state` is missing or is not the one this browser's session started with:
    a CSRF attempt, a replayed/stale callback, a second tab, or a lost session cookie."""

    def __init__(self) -> None:
        super().__init__("mismatching_state", "the OAuth state does not match this session")


class GitHubConsentDenied(GitHubOAuthError):
    """The user declined on GitHub's consent screen (`error=access_denied` on the callback)."""


# -- data -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GitHubProfile:
    id: int
    """GitHub's numeric user id: the only stable key (logins and emails can change)."""
    login: str
    name: str | None
    avatar_url: str | None
    email: str | None
    """The primary email, lowercased, only when GitHub says it is verified; else None."""
    verified_emails: frozenset[str]
    """Every verified email of the account, lowercased."""


@dataclass(frozen=True)
class GitHubToken:
    access_token: str = field(repr=False)  # repr=False: keeps it out of logs and tracebacks
    scopes: frozenset[str]


class _UserPayload(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: StrictInt
    login: str
    name: str | None = None
    avatar_url: str | None = None


class _EmailPayload(BaseModel):
    model_config = ConfigDict(extra="ignore")

    email: str
    primary: bool = False
    verified: bool = False


@dataclass(frozen=True)
class GitHubRepository:
    id: int
    """GitHub's numeric repository id: stable across renames and transfers."""
    full_name: str
    name: str
    owner: str
    private: bool
    clone_url: str
    ssh_url: str
    html_url: str
    default_branch: str | None
    archived: bool
    description: str | None


@dataclass(frozen=True)
class GitHubRepositoryPage:
    items: list[GitHubRepository]
    next_page: int | None
    """From the `Link` header's rel="next"; None on the last page."""
    scopes: frozenset[str] | None
    """The token's OAuth scopes (`X-OAuth-Scopes`); None when GitHub does not say (fine-grained
    tokens). Without `repo`, GitHub lists public repositories only."""


class _OwnerPayload(BaseModel):
    model_config = ConfigDict(extra="ignore")

    login: str


class _RepositoryPayload(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: StrictInt
    name: str
    full_name: str
    owner: _OwnerPayload
    private: bool
    html_url: str
    clone_url: str
    ssh_url: str
    default_branch: str | None = None
    archived: bool = False
    description: str | None = None

    def to_repository(self) -> GitHubRepository:
        return GitHubRepository(
            id=self.id,
            full_name=self.full_name,
            name=self.name,
            owner=self.owner.login,
            private=self.private,
            clone_url=self.clone_url,
            ssh_url=self.ssh_url,
            html_url=self.html_url,
            default_branch=self.default_branch or None,
            archived=self.archived,
            description=self.description or None,
        )


_USER = TypeAdapter(_UserPayload)
_EMAILS = TypeAdapter(list[_EmailPayload])
_REPOSITORY = TypeAdapter(_RepositoryPayload)
_REPOSITORIES = TypeAdapter(list[_RepositoryPayload])
_LINK = re.compile(r'<([^>]*)>\s*;\s*rel="([^"]*)"')


def parse_scopes(value: object) -> frozenset[str]:
    # GitHub separates granted scopes with commas; requested ones with spaces.
    if not isinstance(value, str):
        return frozenset()
    return frozenset(scope for scope in re.split(r"[,\s]+", value) if scope)


def _next_page(link: str | None) -> int | None:
    """The `page` of the rel="next" URL in a `Link` header (GitHub's pagination), or None."""
    for url, rels in _LINK.findall(link or ""):
        if "next" in rels.split():
            pages = parse_qs(urlsplit(url).query).get("page")
            if pages and pages[0].isdigit():
                return int(pages[0])
    return None


# -- REST API ---------------------------------------------------------------------------------


class _BorrowedTransport(httpx.AsyncBaseTransport):
    """Lends an injected transport to one short-lived client without letting it close it."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self._inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        pass  # the owner of the transport closes it


async def send(client: httpx.AsyncClient, method: str, path: str, shown: str, **options: Any) -> httpx.Response:
    """One request to GitHub; a transport failure (timeout, refused, reset) is GitHubUnavailable,
    logged and worded with `shown` (the path's template: paths can hold names)."""
    try:
        return await client.request(method, path, **options)
    except httpx.TimeoutException as error:
        log.warning("github.unavailable", path=shown, reason="timeout")
        raise GitHubUnavailable(f"GitHub {shown}: timed out") from error
    except httpx.HTTPError as error:
        log.warning("github.unavailable", path=shown, reason=type(error).__name__)
        raise GitHubUnavailable(f"GitHub {shown}: {type(error).__name__}") from error


class GitHubClient:
    """Reads the signed-in user's profile from GitHub's REST API.

    `transport` replaces the network (tests); by default requests go to `GITHUB_API_URL`.
    A client per call keeps this object free of lifecycle: sign-ins are rare, and the two
    requests of one call share a connection.
    """

    def __init__(self, settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._api_url = settings.GITHUB_API_URL
        self._timeout = settings.GITHUB_TIMEOUT_SECONDS
        self._transport = transport

    def _client(self, access_token: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self._api_url,
            headers={**API_HEADERS, "Authorization": f"Bearer {access_token}"},
            timeout=self._timeout,
            transport=_BorrowedTransport(self._transport) if self._transport is not None else None,
            follow_redirects=False,
        )

    async def fetch_profile(self, access_token: str) -> GitHubProfile:
        """The token owner's profile. Raises GitHubTokenInvalid, GitHubInsufficientScope or
        GitHubUnavailable."""
        if not TOKEN_SHAPE.fullmatch(access_token):
            raise GitHubTokenInvalid("not a GitHub access token")
        async with self._client(access_token) as client:
            user = self._validate(_USER, await self._get_json(client, "/user"), "/user")
            emails = self._validate(_EMAILS, await self._get_json(client, "/user/emails"), "/user/emails")
        verified = frozenset(item.email.lower() for item in emails if item.verified)
        primary = next((item for item in emails if item.primary), None)
        return GitHubProfile(
            id=user.id,
            login=user.login,
            name=user.name or None,
            avatar_url=user.avatar_url or None,
            email=primary.email.lower() if primary is not None and primary.verified else None,
            verified_emails=verified,
        )

    async def list_repositories(self, access_token: str, *, page: int = 1, per_page: int = 30) -> GitHubRepositoryPage:
        """One page of `GET /user/repos`: repositories the token's owner owns, collaborates on or
        reaches through an organization (private ones only with the `repo` scope). Raises
        GitHubTokenInvalid or GitHubUnavailable."""
        if not TOKEN_SHAPE.fullmatch(access_token):
            raise GitHubTokenInvalid("not a GitHub access token")
        if page < 1 or not 1 <= per_page <= 100:
            raise ValueError("page must be >= 1 and per_page within 1..100")
        path = "/user/repos"
        async with self._client(access_token) as client:
            response = await self._get(client, path, params={"page": page, "per_page": per_page})
        repositories = self._validate(_REPOSITORIES, self._json(response, path), path)
        scopes = response.headers.get("x-oauth-scopes")
        return GitHubRepositoryPage(
            items=[repository.to_repository() for repository in repositories],
            next_page=_next_page(response.headers.get("link")),
            scopes=parse_scopes(scopes) if scopes is not None else None,
        )

    async def get_repositories(
        self, access_token: str, full_names: Sequence[str]
    ) -> dict[str, GitHubRepository | None]:
        """`GET /repos/{owner}/{repo}` for each `owner/repo`, one after the other over one
        connection (GitHub asks clients not to fan out): None for a repository that does not
        exist or that the token cannot see (GitHub answers 404, or 403 e.g. for an organization
        enforcing SAML), or that was renamed (301 to its new id: callers use current names).
        Raises GitHubTokenInvalid or GitHubUnavailable."""
        if not TOKEN_SHAPE.fullmatch(access_token):
            raise GitHubTokenInvalid("not a GitHub access token")
        found: dict[str, GitHubRepository | None] = {}
        async with self._client(access_token) as client:
            for full_name in full_names:
                owner, _, name = full_name.partition("/")
                path = f"/repos/{quote(owner, safe='')}/{quote(name, safe='')}"
                response = await self._get(client, path, absent=(301, 403, 404), label="/repos/{owner}/{repo}")
                if response.status_code != 200:
                    found[full_name] = None
                    continue
                payload = self._json(response, "/repos/{owner}/{repo}")
                found[full_name] = self._validate(_REPOSITORY, payload, "/repos/{owner}/{repo}").to_repository()
        return found

    async def _get_json(self, client: httpx.AsyncClient, path: str) -> Any:
        emails = path == "/user/emails"
        response = await self._get(client, path, absent=(403, 404) if emails else ())
        if response.status_code != 200:
            log.info("github.scope_missing", path=path, status=response.status_code)
            raise GitHubInsufficientScope("the GitHub token cannot read /user/emails (scope user:email)")
        return self._json(response, path)

    async def _get(
        self,
        client: httpx.AsyncClient,
        path: str,
        *,
        params: Mapping[str, str | int] | None = None,
        absent: tuple[int, ...] = (),
        label: str | None = None,
    ) -> httpx.Response:
        """A 200 response, or one whose status is in `absent` (for the caller to interpret);
        every other outcome raises. `label` replaces `path` in logs and messages."""
        shown = label or path
        response = await send(client, "GET", path, shown, params=params)
        status = response.status_code
        if status == 200:
            return response
        # A 403 or 429 with an exhausted rate limit is GitHub throttling us, not refusing the token.
        if status == 429 or (status == 403 and response.headers.get("x-ratelimit-remaining") == "0"):
            log.warning("github.unavailable", path=shown, reason="rate_limited", status=status)
            raise GitHubUnavailable(f"GitHub {shown}: rate limited ({status})")
        if status == 401 or (status == 403 and path == "/user"):
            log.info("github.token_rejected", path=shown, status=status)
            raise GitHubTokenInvalid(f"GitHub {shown}: token refused ({status})")
        if status in absent:
            return response
        log.warning("github.unavailable", path=shown, reason="status", status=status)
        raise GitHubUnavailable(f"GitHub {shown}: unexpected status {status}")

    @staticmethod
    def _json(response: httpx.Response, path: str) -> Any:
        try:
            return response.json()
        except ValueError as error:
            log.warning("github.unavailable", path=path, reason="malformed_json")
            raise GitHubUnavailable(f"GitHub {path}: response is not JSON") from error

    @staticmethod
    def _validate(adapter: TypeAdapter[_T], payload: Any, path: str) -> _T:
        try:
            return adapter.validate_python(payload)
        except ValidationError as error:
            log.warning("github.unavailable", path=path, reason="unexpected_shape")
            raise GitHubUnavailable(f"GitHub {path}: unexpected response shape") from error


# -- OAuth web flow ---------------------------------------------------------------------------

# Authlib 1.9 drives httpx (it warns that it prefers `httpx2`; if that package is ever installed,
# Authlib switches to it and its error classes must be added here).
_OAUTH_TRANSPORT_ERRORS: tuple[type[Exception], ...] = (httpx.HTTPError,)


class GitHubOAuth:
    """GitHub's authorization-code flow with PKCE (S256), on Authlib's Starlette client.

    What the router needs:

    - `SessionMiddleware` (Starlette, itsdangerous-signed cookie) on the app: Authlib keeps the
      flow in `request.session` (without it, touching `request.session` raises AssertionError).
      `same_site="lax"` (the default) is required: the callback is a top-level navigation from
      github.com, and a `strict` cookie would not come back, so every callback would fail the
      state check. Prefer a dedicated cookie name and a short `max_age` (see below).
    - Start: `return await oauth.authorize_redirect(request, redirect_uri)` - a 302 to
      `{GITHUB_URL}/login/oauth/authorize?response_type=code&client_id&redirect_uri&scope&state
      &code_challenge&code_challenge_method=S256`. `redirect_uri` must be absolute and equal (or,
      for GitHub OAuth apps, be under) the callback URL registered at GitHub, e.g.
      `str(request.url_for(...))` with the proxy headers trusted (FORWARDED_ALLOW_IPS).
      Keep `?next=` in `request.session` under your own key: extra keyword arguments of Authlib's
      `authorize_redirect` become query parameters of GitHub's URL, not session data.
    - Callback: `token = await oauth.authorize_access_token(request)` returns a `GitHubToken`;
      then `GitHubClient.fetch_profile(token.access_token)`.
    - Errors, translated here from Authlib's:
      `GitHubOAuthStateError` (Authlib's `MismatchingStateError`: state missing, unknown, already
      used, or from another browser) -> 400; `GitHubConsentDenied` (Authlib's `OAuthError` with
      `error == "access_denied"`) -> redirect to the dashboard with an error; other
      `GitHubOAuthError` (Authlib's `OAuthError`: another `error=` on the callback, or the token
      endpoint's `bad_verification_code`, `incorrect_client_credentials`,
      `redirect_uri_mismatch`, which GitHub sends with status 200) -> 400;
      `GitHubUnavailable` (network error, timeout, 5xx, non-JSON token response) -> 502/503.

    How Authlib keeps the flow (authlib 1.9, starlette_client + base_client):

    - `authorize_redirect` stores `request.session["_state_github_<state>"] =
      {"data": {"redirect_uri", "code_verifier", "url"}, "exp": now + 3600}`. The PKCE
      `code_verifier` therefore lives in the session cookie, which is signed but not encrypted
      (readable by the browser that owns it, never sent to GitHub until the token exchange).
    - Starting a flow deletes every other `_state_github_*` entry: one flow per browser session;
      a login started in a second tab makes the first tab's callback fail the state check.
    - `authorize_access_token` checks `error=` on the callback first (raising `OAuthError` before
      looking at the state, and leaving the state entry in place), then pops the state entry
      (single use, even when the exchange then fails), then raises `MismatchingStateError` if it
      was absent, then POSTs code + redirect_uri + code_verifier to the token endpoint.
    - The entry's `exp` is only checked when entries are cleared, never when one is read: a state
      stays usable as long as the session cookie does, so give that cookie a short `max_age`.
    - Authlib logs the generated `code_verifier` at DEBUG on the `authlib` logger: keep that
      logger at INFO or above.
    """

    def __init__(self, settings: Settings) -> None:
        if settings.GITHUB_CLIENT_ID is None:
            raise SettingsError("GITHUB_CLIENT_ID: is required for GitHub sign-in")
        if settings.GITHUB_CLIENT_SECRET is None:
            raise SettingsError("GITHUB_CLIENT_SECRET: is required when GITHUB_CLIENT_ID is set")
        # Imported here: Authlib (and the JOSE stack under it) costs start-up time that an
        # instance without GitHub sign-in should not pay.
        from codepulse.integrations._authlib import OAuth

        registry = OAuth()
        registry.register(
            name="github",
            client_id=settings.GITHUB_CLIENT_ID,
            client_secret=settings.GITHUB_CLIENT_SECRET.get_secret_value(),
            authorize_url=f"{settings.GITHUB_URL}/login/oauth/authorize",
            access_token_url=f"{settings.GITHUB_URL}/login/oauth/access_token",
            api_base_url=f"{settings.GITHUB_API_URL}/",
            client_kwargs={
                "scope": OAUTH_SCOPES,
                "code_challenge_method": "S256",
                # GitHub documents client_id/client_secret as form parameters.
                "token_endpoint_auth_method": "client_secret_post",
                "timeout": settings.GITHUB_TIMEOUT_SECONDS,
            },
        )
        self._registry = registry
        self._app: Any = registry.create_client("github")

    async def authorize_redirect(self, request: Request, redirect_uri: str) -> RedirectResponse:
        """A 302 to GitHub's consent page; records state and PKCE verifier in `request.session`."""
        # No network here: the endpoints are configured, so no discovery document is fetched.
        return cast(RedirectResponse, await self._app.authorize_redirect(request, redirect_uri))

    async def authorize_access_token(self, request: Request) -> GitHubToken:
        """Exchanges the callback's code (with the session's state and PKCE verifier)."""
        from codepulse.integrations._authlib import MismatchingStateError, OAuthError

        try:
            token = await self._app.authorize_access_token(request)
        except MismatchingStateError:
            log.info("github.oauth_failed", error="mismatching_state")
            raise GitHubOAuthStateError() from None
        except OAuthError as error:
            code = str(error.error or "oauth_error")
            log.info("github.oauth_failed", error=code)
            if code == "access_denied":
                raise GitHubConsentDenied(code, error.description) from None
            raise GitHubOAuthError(code, error.description) from None
        except _OAUTH_TRANSPORT_ERRORS as error:
            log.warning("github.unavailable", path="/login/oauth/access_token", reason=type(error).__name__)
            raise GitHubUnavailable("GitHub token endpoint: unreachable or failing") from error
        except ValueError as error:  # Authlib: the token response is not a JSON object
            log.warning("github.unavailable", path="/login/oauth/access_token", reason="malformed_json")
            raise GitHubUnavailable("GitHub token endpoint: unexpected response") from error
        access_token = token.get("access_token")
        if not isinstance(access_token, str) or not access_token:
            raise GitHubOAuthError("invalid_token_response", "GitHub returned no access token")
        return GitHubToken(access_token=access_token, scopes=parse_scopes(token.get("scope")))


def build_oauth(settings: Settings) -> GitHubOAuth | None:
    """The GitHub OAuth client, or None when GitHub sign-in is not configured."""
    if settings.GITHUB_CLIENT_ID is None:
        return None
    return GitHubOAuth(settings)
