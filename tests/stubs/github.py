"""A stub GitHub that speaks GitHub's real OAuth and REST protocol over loopback HTTP.

`GitHubStub` is a Starlette app served by uvicorn on 127.0.0.1:<free port>. The web side
(`/login/oauth/authorize`, `/login/oauth/access_token`) is at `.url`, the REST API at
`.api_url` (`.url + "/api/v3"`, GitHub Enterprise's layout), so code that builds an API URL
from GITHUB_URL instead of GITHUB_API_URL gets a 404. Tests drive it through `.state`
(a `GitHubStubState`): register users, choose who is "signed in" on GitHub for the next
authorize, deny consent, mint or revoke tokens, inject API faults, and read what was sent.

Protocol details mirrored from GitHub:
- authorize: unknown client_id -> 404 page; a redirect_uri outside the registered callback URL
  -> redirect to the callback URL with `error=redirect_uri_mismatch`; denied consent -> redirect
  with `error=access_denied`; otherwise `?code=<20 hex>&state=...`. PKCE is optional, S256 only.
- access_token: errors are **HTTP 200** with `{"error", "error_description", "error_uri"}`
  (`incorrect_client_credentials`, `redirect_uri_mismatch`, `bad_verification_code`); JSON only
  with `Accept: application/json`, form-encoded otherwise. Client credentials in the form body or
  HTTP Basic. Codes are single use: any redemption attempt with valid client credentials burns
  the code. A PKCE verifier that does not match answers `bad_verification_code` (GitHub does not
  document a PKCE-specific error code; the stub assumes this one).
- REST: `Authorization: Bearer <t>` or `token <t>`; 401 `Bad credentials` for unknown or revoked
  tokens, 401 `Requires authentication` without one; `/user/emails` is 404 without the
  `user:email` (or `user`) scope, as GitHub hides resources a token cannot see.
- Device flow (RFC 8628): `POST /login/device/code` (`client_id`, `scope`; form or JSON body)
  answers a 40-hex `device_code`, a `user_code` like `WDJB-MJHT`, `verification_uri`
  (`.url + "/login/device"`), `expires_in` (900) and `interval` (5); form-encoded unless
  `Accept: application/json`. An unknown client id is a 404 (assumed: GitHub does not document
  it); `state.device_flow_enabled = False` answers 400 `device_flow_disabled`. Polls go to
  `/login/oauth/access_token` with `grant_type=urn:ietf:params:oauth:grant-type:device_code`,
  `client_id` and `device_code` (no secret), answered **HTTP 200** like the web flow's errors:
  `incorrect_client_credentials`, `incorrect_device_code` (unknown, another app's, or already
  redeemed), `expired_token`, `slow_down` (a poll sooner than `interval` after the previous
  request, or one the test asked for with `slow_down_device`; the interval grows by 5 s and the
  answer carries it), `access_denied` (declined, and for every later poll), `authorization_pending`;
  then, once `approve_device(user_code, user)`, the access token (single use), issued to the app
  and usable on the REST endpoints. The flow's clock is `state.device_time`, in seconds: it moves
  only with `state.pass_time(seconds)`, so tests never wait.
- Token check (`POST /applications/{client_id}/token`, HTTP Basic with the app's client id and
  secret, JSON `{"access_token"}`): 200 with the token's `app` and `user` when the token is live
  and was issued to that app; 404 for wrong app credentials and for unknown, revoked, personal or
  other apps' tokens; 422 without `access_token`.
- Repositories: `/user/repos` lists what the token's owner reaches (owned, or as a member of
  the repository), sorted by full name, `per_page` (default 30, at most 100) and `page`, with
  GitHub's `Link` header (`rel="next"`, `"last"`, `"first"`, `"prev"`); private repositories
  only with the `repo` scope (GitHub's rule for OAuth tokens). `/repos/{owner}/{repo}` answers
  a public repository to any token, a private one only to a member with `repo`; 404 otherwise.
  URLs in repository bodies use `state.repo_host` (github.com), as GitHub's do.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import json
import re
import secrets
import string
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qsl, urlencode, urlsplit

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

DEFAULT_SCOPES: tuple[str, ...] = ("read:user", "user:email")
API_PREFIX = "/api/v3"
_DOCS = "https://docs.github.com"
_TOKEN_ERRORS_DOC = f"{_DOCS}/apps/managing-oauth-apps/troubleshooting-oauth-app-access-token-request-errors/"
_AUTHORIZE_ERRORS_DOC = f"{_DOCS}/apps/managing-oauth-apps/troubleshooting-authorization-request-errors/"
_DEVICE_ERRORS_DOC = f"{_DOCS}/developers/apps/authorizing-oauth-apps#error-codes-for-the-device-flow"
DEVICE_GRANT_TYPE = "urn:ietf:params:oauth:grant-type:device_code"
_USER_CODE_ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"  # GitHub's user codes: no vowels, no digits
_TOKEN_ALPHABET = string.ascii_letters + string.digits


@dataclass
class StubEmail:
    email: str
    primary: bool = False
    verified: bool = True
    # GitHub: "public" or "private" on the primary address, null on the others.
    visibility: str | None = None


@dataclass
class StubUser:
    id: int
    login: str
    name: str | None = None
    avatar_url: str | None = None
    emails: list[StubEmail] = field(default_factory=list)
    # What `/user` shows as `email`: only an address the user chose to make public, often null.
    public_email: str | None = None


@dataclass
class StubRepo:
    id: int
    owner: str
    name: str
    private: bool = False
    default_branch: str | None = "main"
    archived: bool = False
    description: str | None = None
    # GitHub users (ids) who reach it besides the owner: collaborators, organization members.
    members: set[int] = field(default_factory=set)

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"


@dataclass
class IssuedCode:
    user_id: int
    redirect_uri: str
    scopes: frozenset[str]
    code_challenge: str | None


@dataclass
class IssuedToken:
    user_id: int
    scopes: frozenset[str]
    # The OAuth app the token was issued to; None for a personal access token.
    client_id: str | None = None


@dataclass
class IssuedDeviceCode:
    device_code: str
    user_code: str
    client_id: str
    scopes: frozenset[str]
    expires_at: float
    interval: int
    last_request_at: float
    # Who approved it on GitHub's device page; None while pending.
    user_id: int | None = None
    denied: bool = False
    slow_down_next: bool = False


class ApiFault(StrEnum):
    """A failure every REST endpoint answers with while `state.api_fault` is set."""

    SERVER_ERROR = "server_error"  # 502 with an HTML body, like GitHub's edge when it is down
    MALFORMED_JSON = "malformed_json"  # 200 with a body that is not JSON
    RATE_LIMITED = "rate_limited"  # 403 with X-RateLimit-Remaining: 0


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names


@dataclass
class GitHubStubState:
    client_id: str = "stub-github-client-id"
    client_secret: str = "stub-github-client-secret"
    # The OAuth app's registered callback URL; None accepts any redirect_uri.
    callback_url: str | None = None
    users: dict[int, StubUser] = field(default_factory=dict)
    # The user signed in to GitHub in "the browser": who the next authorize grants a code for.
    signed_in_user_id: int | None = None
    deny_consent: bool = False
    codes: dict[str, IssuedCode] = field(default_factory=dict)
    tokens: dict[str, IssuedToken] = field(default_factory=dict)
    revoked: set[str] = field(default_factory=set)
    api_fault: ApiFault | None = None
    api_requests: list[RecordedRequest] = field(default_factory=list)
    repos: dict[int, StubRepo] = field(default_factory=dict)
    # The web host in repository URLs (clone_url, ssh_url, html_url).
    repo_host: str = "github.com"
    # Device flow: "Enable Device Flow" in the OAuth app's settings; the codes by device_code; the
    # flow's clock in seconds (moved by pass_time); the form fields of every device-flow request.
    device_flow_enabled: bool = True
    device_codes: dict[str, IssuedDeviceCode] = field(default_factory=dict)
    device_time: float = 0.0
    device_requests: list[dict[str, str]] = field(default_factory=list)
    _next_user_id: int = 583_231  # octocat's id; later users count up from there
    _next_repo_id: int = 1_296_269  # Hello-World's id

    def add_repo(
        self,
        owner: StubUser | str,
        name: str,
        *,
        private: bool = False,
        members: Sequence[StubUser] = (),
        default_branch: str | None = "main",
        archived: bool = False,
        description: str | None = None,
    ) -> StubRepo:
        """A repository of `owner` (a user, or an organization's login), reached by its owner (when
        a user) and by `members`."""
        login = owner.login if isinstance(owner, StubUser) else owner
        repo = StubRepo(
            id=self._next_repo_id,
            owner=login,
            name=name,
            private=private,
            default_branch=default_branch,
            archived=archived,
            description=description,
            members={user.id for user in members} | ({owner.id} if isinstance(owner, StubUser) else set()),
        )
        self._next_repo_id += 1
        self.repos[repo.id] = repo
        return repo

    def add_user(
        self,
        login: str,
        *,
        emails: Sequence[StubEmail] | None = None,
        name: str | None = None,
        avatar_url: str | None = None,
        user_id: int | None = None,
        public_email: str | None = None,
        sign_in: bool = False,
    ) -> StubUser:
        """Register a GitHub account. Without `emails` it gets one primary verified address,
        `<login>@users.example.com`; pass `emails=[]` for an account with none."""
        if user_id is None:
            user_id = self._next_user_id
            self._next_user_id += 1
        if user_id in self.users:
            raise ValueError(f"GitHub user id {user_id} is already registered")
        if emails is None:
            emails = [StubEmail(f"{login.lower()}@users.example.com", primary=True, visibility="private")]
        user = StubUser(
            id=user_id,
            login=login,
            name=name,
            avatar_url=avatar_url if avatar_url is not None else f"https://avatars.example.com/u/{user_id}?v=4",
            emails=list(emails),
            public_email=public_email,
        )
        self.users[user_id] = user
        if sign_in:
            self.sign_in(user)
        return user

    def sign_in(self, user: StubUser | None) -> None:
        self.signed_in_user_id = None if user is None else user.id

    def issue_token(
        self, user: StubUser, scopes: Sequence[str] = DEFAULT_SCOPES, *, client_id: str | None = None
    ) -> str:
        """Mint an access token directly, as GitHub's device flow would hand one to the CLI:
        issued to this stub's OAuth app, or to the app `client_id` names (another one)."""
        token = "gho_" + "".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(36))
        self.tokens[token] = IssuedToken(
            user_id=user.id, scopes=frozenset(scopes), client_id=client_id or self.client_id
        )
        return token

    def issue_personal_token(self, user: StubUser, scopes: Sequence[str] = DEFAULT_SCOPES) -> str:
        """A personal access token (classic): it reads the API like an OAuth token, but belongs
        to no OAuth app."""
        token = "ghp_" + "".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(36))
        self.tokens[token] = IssuedToken(user_id=user.id, scopes=frozenset(scopes), client_id=None)
        return token

    def revoke(self, token: str) -> None:
        self.revoked.add(token)

    # -- the device flow, as the person at GitHub's device page and as time passing ------------

    def pass_time(self, seconds: float) -> None:
        self.device_time += seconds

    def device_code_for(self, user_code: str) -> IssuedDeviceCode:
        """The live device code a user code belongs to (typed in any case, with or without the hyphen)."""
        wanted = user_code.upper().replace("-", "")
        for issued in self.device_codes.values():
            if issued.user_code.replace("-", "") == wanted:
                return issued
        raise KeyError(f"no device code with the user code {user_code!r}")

    def approve_device(self, user_code: str, user: StubUser) -> None:
        """`user`, signed in to GitHub, enters the code and authorizes the app."""
        self.device_code_for(user_code).user_id = user.id

    def deny_device(self, user_code: str) -> None:
        """The person clicks Cancel on GitHub's authorization page."""
        self.device_code_for(user_code).denied = True

    def expire_device(self, user_code: str) -> None:
        self.device_code_for(user_code).expires_at = self.device_time

    def slow_down_device(self, user_code: str) -> None:
        """GitHub throttles the next poll of this code with `slow_down`, however long it waited."""
        self.device_code_for(user_code).slow_down_next = True

    def token_owner(self, token: str) -> tuple[StubUser, IssuedToken] | None:
        issued = self.tokens.get(token)
        if issued is None or token in self.revoked:
            return None
        return self.users[issued.user_id], issued


# -- protocol helpers -------------------------------------------------------------------------


def _with_params(url: str, params: dict[str, str]) -> str:
    return url + ("&" if "?" in url else "?") + urlencode(params)


def _under_callback(redirect_uri: str, callback_url: str) -> bool:
    # GitHub OAuth apps: same scheme, host and port; the path may be a subdirectory.
    given, registered = urlsplit(redirect_uri), urlsplit(callback_url)
    if (given.scheme, given.netloc) != (registered.scheme, registered.netloc):
        return False
    base = registered.path.rstrip("/")
    return given.path == registered.path or given.path.startswith(base + "/")


def _s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _split_scopes(value: str | None) -> frozenset[str]:
    return frozenset(scope for scope in re.split(r"[,\s]+", value or "") if scope)


def _basic_credentials(request: Request) -> tuple[str, str] | None:
    header = request.headers.get("authorization", "")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        client_id, _, secret = base64.b64decode(encoded).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return client_id, secret


async def _oauth_fields(request: Request) -> dict[str, str]:
    """The parameters of a POST to GitHub's OAuth endpoints: a form (parsed by hand: Starlette's
    request.form() needs python-multipart, not a dependency here) or a JSON object."""
    body = await request.body()
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            parsed = json.loads(body)
        except ValueError:
            return {}
        return {str(k): str(v) for k, v in parsed.items()} if isinstance(parsed, dict) else {}
    return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))


def _oauth_answer(request: Request, body: dict[str, str | int], status: int = 200) -> Response:
    """GitHub's OAuth answers: form-encoded, or JSON with `Accept: application/json`."""
    if "application/json" in request.headers.get("accept", ""):
        return JSONResponse(body, status_code=status)
    return Response(urlencode(body), status_code=status, media_type="application/x-www-form-urlencoded; charset=utf-8")


def _api_error(status: int, message: str, doc: str = f"{_DOCS}/rest") -> JSONResponse:
    return JSONResponse({"message": message, "documentation_url": doc, "status": str(status)}, status_code=status)


def _user_json(user: StubUser) -> dict[str, Any]:
    api = f"https://api.github.example/users/{user.login}"
    return {
        "login": user.login,
        "id": user.id,
        "node_id": base64.b64encode(f"04:User{user.id}".encode()).decode(),
        "avatar_url": user.avatar_url,
        "gravatar_id": "",
        "url": api,
        "html_url": f"https://github.example/{user.login}",
        "repos_url": f"{api}/repos",
        "type": "User",
        "user_view_type": "public",
        "site_admin": False,
        "name": user.name,
        "company": None,
        "blog": "",
        "location": None,
        "email": user.public_email,
        "hireable": None,
        "bio": None,
        "twitter_username": None,
        "public_repos": 0,
        "public_gists": 0,
        "followers": 0,
        "following": 0,
        "created_at": "2011-01-25T18:44:36Z",
        "updated_at": "2024-01-22T12:00:00Z",
    }


def _repo_json(repo: StubRepo, state: GitHubStubState, user: StubUser) -> dict[str, Any]:
    host = state.repo_host
    owner = next((u for u in state.users.values() if u.login == repo.owner), None)
    admin = owner is not None and owner.id == user.id
    return {
        "id": repo.id,
        "node_id": base64.b64encode(f"010:Repository{repo.id}".encode()).decode(),
        "name": repo.name,
        "full_name": repo.full_name,
        "private": repo.private,
        "owner": {
            "login": repo.owner,
            "id": owner.id if owner is not None else 9_919,
            "type": "User" if owner is not None else "Organization",
            "site_admin": False,
        },
        "html_url": f"https://{host}/{repo.full_name}",
        "description": repo.description,
        "fork": False,
        "url": f"https://api.{host}/repos/{repo.full_name}",
        "git_url": f"git://{host}/{repo.full_name}.git",
        "ssh_url": f"git@{host}:{repo.full_name}.git",
        "clone_url": f"https://{host}/{repo.full_name}.git",
        "svn_url": f"https://{host}/{repo.full_name}",
        "homepage": None,
        "size": 108,
        "language": "Python",
        "archived": repo.archived,
        "disabled": False,
        "visibility": "private" if repo.private else "public",
        "default_branch": repo.default_branch,
        "permissions": {"admin": admin, "maintain": admin, "push": True, "triage": True, "pull": True},
        "created_at": "2011-01-26T19:01:12Z",
        "updated_at": "2024-01-22T12:00:00Z",
        "pushed_at": "2024-01-22T12:00:00Z",
    }


def _int_param(value: str | None, default: int, low: int, high: int) -> int:
    # GitHub ignores unusable values and clamps per_page to 100.
    if value is None or not value.isdigit():
        return default
    return max(low, min(int(value), high))


# -- the app ----------------------------------------------------------------------------------


class _Handlers:
    """The stub's endpoints. They read `stub.state` on every request, so a test can swap in a fresh state."""

    def __init__(self, stub: GitHubStub) -> None:
        self.stub = stub

    async def authorize(self, request: Request) -> Response:
        state = self.stub.state
        params = request.query_params
        if params.get("client_id") != state.client_id:
            return PlainTextResponse("Not Found", status_code=404)  # GitHub shows its 404 page
        redirect_uri = params.get("redirect_uri") or state.callback_url
        if redirect_uri is None:
            return PlainTextResponse("stub: no redirect_uri and no registered callback URL", status_code=400)
        echo_state = {"state": params["state"]} if "state" in params else {}
        if state.callback_url is not None and not _under_callback(redirect_uri, state.callback_url):
            error = {
                "error": "redirect_uri_mismatch",
                "error_description": "The redirect_uri MUST match the registered callback URL for this application.",
                "error_uri": _AUTHORIZE_ERRORS_DOC + "#redirect-uri-mismatch",
            }
            return RedirectResponse(_with_params(state.callback_url, error | echo_state), status_code=302)
        challenge = params.get("code_challenge")
        if challenge is not None and params.get("code_challenge_method", "plain") != "S256":
            return PlainTextResponse("stub: GitHub supports only code_challenge_method=S256", status_code=400)
        if state.signed_in_user_id is None:
            return PlainTextResponse("stub: no GitHub user is signed in (state.sign_in(user))", status_code=400)
        if state.deny_consent:
            error = {
                "error": "access_denied",
                "error_description": "The user has denied your application access.",
                "error_uri": _AUTHORIZE_ERRORS_DOC + "#access-denied",
            }
            return RedirectResponse(_with_params(redirect_uri, error | echo_state), status_code=302)
        code = secrets.token_hex(10)
        state.codes[code] = IssuedCode(
            user_id=state.signed_in_user_id,
            redirect_uri=redirect_uri,
            scopes=_split_scopes(params.get("scope")),
            code_challenge=challenge,
        )
        return RedirectResponse(_with_params(redirect_uri, {"code": code} | echo_state), status_code=302)

    async def access_token(self, request: Request) -> Response:
        state = self.stub.state
        fields = await _oauth_fields(request)
        if fields.get("grant_type") == DEVICE_GRANT_TYPE:
            return self.device_token(request, fields)

        def answer(body: dict[str, str | int]) -> Response:
            # GitHub answers 200 for token errors too; the body says what went wrong.
            return _oauth_answer(request, body)

        def error(code: str, description: str, anchor: str) -> Response:
            return answer({"error": code, "error_description": description, "error_uri": _TOKEN_ERRORS_DOC + anchor})

        client_id, client_secret = _basic_credentials(request) or (
            fields.get("client_id", ""),
            fields.get("client_secret", ""),
        )
        if client_id != state.client_id or not secrets.compare_digest(client_secret, state.client_secret):
            return error(
                "incorrect_client_credentials",
                "The client_id and/or client_secret passed are incorrect.",
                "#incorrect-client-credentials",
            )
        issued = state.codes.pop(fields.get("code", ""), None)  # single use, whatever follows
        if issued is None:
            return error("bad_verification_code", "The code passed is incorrect or expired.", "#bad-verification-code")
        if "redirect_uri" in fields and fields["redirect_uri"] != issued.redirect_uri:
            return error(
                "redirect_uri_mismatch",
                "The redirect_uri MUST match the registered callback URL for this application.",
                "#redirect-uri-mismatch",
            )
        if issued.code_challenge is not None:
            verifier = fields.get("code_verifier", "")
            if not verifier.isascii() or not secrets.compare_digest(_s256(verifier), issued.code_challenge):
                return error(
                    "bad_verification_code", "The code passed is incorrect or expired.", "#bad-verification-code"
                )
        user = state.users[issued.user_id]
        token = state.issue_token(user, sorted(issued.scopes))
        return answer({"access_token": token, "token_type": "bearer", "scope": ",".join(sorted(issued.scopes))})

    async def device_code(self, request: Request) -> Response:
        state = self.stub.state
        fields = await _oauth_fields(request)
        state.device_requests.append(fields)
        if fields.get("client_id") != state.client_id:
            return PlainTextResponse("Not Found", status_code=404)
        if not state.device_flow_enabled:
            return _oauth_answer(
                request,
                {
                    "error": "device_flow_disabled",
                    "error_description": "Device Flow must be explicitly enabled for this App",
                    "error_uri": _DEVICE_ERRORS_DOC,
                },
                status=400,
            )
        letters = [secrets.choice(_USER_CODE_ALPHABET) for _ in range(8)]
        issued = IssuedDeviceCode(
            device_code=secrets.token_hex(20),
            user_code="".join(letters[:4]) + "-" + "".join(letters[4:]),
            client_id=state.client_id,
            scopes=_split_scopes(fields.get("scope")),
            expires_at=state.device_time + 900,
            interval=5,
            last_request_at=state.device_time,
        )
        state.device_codes[issued.device_code] = issued
        body: dict[str, str | int] = {
            "device_code": issued.device_code,
            "user_code": issued.user_code,
            "verification_uri": f"{self.stub.url}/login/device",
            "expires_in": 900,
            "interval": issued.interval,
        }
        return _oauth_answer(request, body)

    def device_token(self, request: Request, fields: dict[str, str]) -> Response:
        """A poll of the device flow (the access-token endpoint with the device grant)."""
        state = self.stub.state
        state.device_requests.append(fields)

        def error(code: str, description: str, **more: int) -> Response:
            return _oauth_answer(
                request, {"error": code, "error_description": description, "error_uri": _DEVICE_ERRORS_DOC, **more}
            )

        if fields.get("client_id") != state.client_id:
            return error("incorrect_client_credentials", "The client_id and/or client_secret passed are incorrect.")
        issued = state.device_codes.get(fields.get("device_code", ""))
        if issued is None or issued.client_id != fields["client_id"]:
            return error("incorrect_device_code", "The device_code provided is not valid.")
        now = state.device_time
        if now >= issued.expires_at:
            return error("expired_token", "The device_code has expired.")
        too_soon = now < issued.last_request_at + issued.interval
        issued.last_request_at = now
        if too_soon or issued.slow_down_next:
            issued.slow_down_next = False
            issued.interval += 5
            return error(
                "slow_down", "Too many requests have been made in the same timeframe.", interval=issued.interval
            )
        if issued.denied:
            return error("access_denied", "The authorization request was denied.")
        if issued.user_id is None:
            return error("authorization_pending", "The authorization request is still pending.")
        del state.device_codes[issued.device_code]  # redeemed once
        token = state.issue_token(state.users[issued.user_id], sorted(issued.scopes))
        return _oauth_answer(
            request, {"access_token": token, "token_type": "bearer", "scope": ",".join(sorted(issued.scopes))}
        )

    def authenticate(self, request: Request) -> tuple[StubUser, IssuedToken] | Response:
        state = self.stub.state
        state.api_requests.append(
            RecordedRequest(request.method, request.url.path, {k.lower(): v for k, v in request.headers.items()})
        )
        header = request.headers.get("authorization")
        if header is None:
            return _api_error(401, "Requires authentication")
        scheme, _, token = header.partition(" ")
        owner = state.token_owner(token.strip()) if scheme.lower() in ("bearer", "token") else None
        if owner is None:
            return _api_error(401, "Bad credentials")
        fault = state.api_fault
        if fault is ApiFault.SERVER_ERROR:
            return Response("<html><body>Unicorn! 502</body></html>", status_code=502, media_type="text/html")
        if fault is ApiFault.MALFORMED_JSON:
            return Response("{not json", media_type="application/json")
        if fault is ApiFault.RATE_LIMITED:
            response = _api_error(403, "API rate limit exceeded for user.", f"{_DOCS}/rest/rate-limit")
            response.headers["x-ratelimit-remaining"] = "0"
            return response
        return owner

    @staticmethod
    def scoped(body: Any, issued: IssuedToken, accepted: str) -> JSONResponse:
        response = JSONResponse(body)
        response.headers["x-oauth-scopes"] = ", ".join(sorted(issued.scopes))
        response.headers["x-accepted-oauth-scopes"] = accepted
        return response

    async def check_token(self, request: Request) -> Response:
        state = self.stub.state
        state.api_requests.append(
            RecordedRequest(request.method, request.url.path, {k.lower(): v for k, v in request.headers.items()})
        )
        doc = f"{_DOCS}/rest/apps/oauth-applications#check-a-token"
        client_id = request.path_params["client_id"]
        credentials = _basic_credentials(request)
        if (
            credentials is None
            or credentials[0] != client_id
            or client_id != state.client_id
            or not secrets.compare_digest(credentials[1], state.client_secret)
        ):
            return _api_error(404, "Not Found", doc)
        if state.api_fault is ApiFault.SERVER_ERROR:
            return Response("<html><body>Unicorn! 502</body></html>", status_code=502, media_type="text/html")
        try:
            body = json.loads(await request.body())
        except ValueError:
            return _api_error(400, "Problems parsing JSON", doc)
        token = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            return _api_error(422, "Validation Failed", doc)
        owner = state.token_owner(token)
        if owner is None or owner[1].client_id != client_id:
            return _api_error(404, "Not Found", doc)
        account, issued = owner
        return JSONResponse(
            {
                "id": 1,
                "url": f"https://api.github.example/authorizations/{account.id}",
                "scopes": sorted(issued.scopes),
                "token": token,
                "token_last_eight": token[-8:],
                "hashed_token": hashlib.sha256(token.encode()).hexdigest(),
                "app": {"url": "https://codepulse.example", "name": "codepulse", "client_id": client_id},
                "note": None,
                "note_url": None,
                "updated_at": "2024-01-22T12:00:00Z",
                "created_at": "2024-01-22T12:00:00Z",
                "fingerprint": None,
                "expires_at": None,
                "user": _user_json(account),
                "installation": None,
            }
        )

    async def user(self, request: Request) -> Response:
        owner = self.authenticate(request)
        if isinstance(owner, Response):
            return owner
        account, issued = owner
        return self.scoped(_user_json(account), issued, "")

    async def user_emails(self, request: Request) -> Response:
        owner = self.authenticate(request)
        if isinstance(owner, Response):
            return owner
        account, issued = owner
        if not issued.scopes & {"user", "user:email"}:
            return _api_error(
                404, "Not Found", f"{_DOCS}/rest/users/emails#list-email-addresses-for-the-authenticated-user"
            )
        body = [
            {"email": e.email, "primary": e.primary, "verified": e.verified, "visibility": e.visibility}
            for e in account.emails
        ]
        return self.scoped(body, issued, "user, user:email")

    async def user_repos(self, request: Request) -> Response:
        owner = self.authenticate(request)
        if isinstance(owner, Response):
            return owner
        account, issued = owner
        state = self.stub.state
        per_page = _int_param(request.query_params.get("per_page"), 30, 1, 100)
        page = _int_param(request.query_params.get("page"), 1, 1, 10**6)
        sees_private = "repo" in issued.scopes
        reachable = sorted(
            (r for r in state.repos.values() if account.id in r.members and (sees_private or not r.private)),
            key=lambda r: r.full_name.lower(),
        )
        chunk = reachable[(page - 1) * per_page : page * per_page]
        response = self.scoped([_repo_json(r, state, account) for r in chunk], issued, "")
        last = max(1, -(-len(reachable) // per_page))
        base = str(request.url.replace(query=""))
        links = []
        if page < last:
            links += [(page + 1, "next"), (last, "last")]
        if page > 1:
            links += [(1, "first"), (min(page - 1, last), "prev")]
        if links:
            response.headers["link"] = ", ".join(
                f'<{base}?{urlencode({"per_page": per_page, "page": number})}>; rel="{rel}"' for number, rel in links
            )
        return response

    async def repo(self, request: Request) -> Response:
        owner = self.authenticate(request)
        if isinstance(owner, Response):
            return owner
        account, issued = owner
        state = self.stub.state
        wanted = f"{request.path_params['owner']}/{request.path_params['repo']}".lower()
        found = next((r for r in state.repos.values() if r.full_name.lower() == wanted), None)
        if found is None or (found.private and (account.id not in found.members or "repo" not in issued.scopes)):
            return _api_error(404, "Not Found", f"{_DOCS}/rest/repos/repos#get-a-repository")
        return self.scoped(_repo_json(found, state, account), issued, "repo")


def build_app(stub: GitHubStub) -> Starlette:
    """The stub's Starlette app over `_Handlers`."""
    handlers = _Handlers(stub)
    return Starlette(
        routes=[
            Route("/login/oauth/authorize", handlers.authorize, methods=["GET"]),
            Route("/login/oauth/access_token", handlers.access_token, methods=["POST"]),
            Route("/login/device/code", handlers.device_code, methods=["POST"]),
            Route(f"{API_PREFIX}/applications/{{client_id}}/token", handlers.check_token, methods=["POST"]),
            Route(f"{API_PREFIX}/user", handlers.user, methods=["GET"]),
            Route(f"{API_PREFIX}/user/emails", handlers.user_emails, methods=["GET"]),
            Route(f"{API_PREFIX}/user/repos", handlers.user_repos, methods=["GET"]),
            Route(f"{API_PREFIX}/repos/{{owner}}/{{repo}}", handlers.repo, methods=["GET"]),
        ]
    )


# -- the server -------------------------------------------------------------------------------


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The test process owns SIGINT/SIGTERM: Ctrl-C must stop pytest, not just this stub.
        yield


class GitHubStub:
    """`async with GitHubStub() as github:` serves the stub until the block ends."""

    def __init__(self, state: GitHubStubState | None = None) -> None:
        self.state = state if state is not None else GitHubStubState()
        self.app = build_app(self)
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._port: int | None = None

    @property
    def url(self) -> str:
        """The web origin, GITHUB_URL (it stays known after the stub stops, for outage tests)."""
        if self._port is None:
            raise RuntimeError("the GitHub stub has not been started")
        return f"http://127.0.0.1:{self._port}"

    @property
    def api_url(self) -> str:
        """The REST API base, GITHUB_API_URL."""
        return self.url + API_PREFIX

    def reset(self) -> GitHubStubState:
        """A fresh state with the same client credentials (for a stub shared between tests)."""
        self.state = GitHubStubState(client_id=self.state.client_id, client_secret=self.state.client_secret)
        return self.state

    def settings_overrides(self) -> dict[str, str]:
        """Settings pointing codepulse at this stub, e.g. `make_settings(**stub.settings_overrides())`."""
        return {
            "GITHUB_URL": self.url,
            "GITHUB_API_URL": self.api_url,
            "GITHUB_CLIENT_ID": self.state.client_id,
            "GITHUB_CLIENT_SECRET": self.state.client_secret,
        }

    async def start(self) -> None:
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=0,
            lifespan="off",
            ws="none",
            log_config=None,  # leave the test process's logging configuration alone
            log_level=None,
            access_log=False,
        )
        server = _Server(config)
        task = asyncio.create_task(server.serve(), name="github-stub")
        while not server.started:
            if task.done():
                await task  # re-raise why it could not start
                raise RuntimeError("the GitHub stub stopped during start-up")
            await asyncio.sleep(0.005)
        self._server, self._task = server, task
        self._port = int(server.servers[0].sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        await self._task
        self._server = self._task = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, _type: type[BaseException] | None, _value: BaseException | None, _tb: TracebackType | None
    ) -> None:
        await self.stop()
