"""SecretBox, GitHubClient and GitHubOAuth against the stub GitHub over real loopback HTTP."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import AsyncIterator, Callable
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from codepulse.config import Settings
from codepulse.integrations.github import (
    GitHubClient,
    GitHubError,
    GitHubInsufficientScope,
    GitHubOAuthError,
    GitHubTokenInvalid,
    GitHubUnavailable,
    build_oauth,
)
from codepulse.integrations.github_app import GitHubApp, GitHubAppToken, build_github_app
from codepulse.security import SecretBox, SecretBoxError
from tests.stubs.github import ApiFault, GitHubStub, GitHubStubState, StubEmail
from tests.stubs.tcp import BlackholeServer

# -- SecretBox ----------------------------------------------------------------------------------

KEY = "a-test-secret-key-with-enough-entropy-Zq8x"
OTHER_KEY = "another-test-secret-key-of-decent-length-7Pw"


def test_secret_box_round_trip() -> None:
    box = SecretBox(KEY)
    sealed = box.encrypt("gho_16C7e42F292c6912E7710c838347Ae178B4a ✓")
    assert "gho_" not in sealed
    assert box.encrypt("same") != box.encrypt("same")  # random IV: equal secrets don't look equal
    assert box.decrypt(sealed) == "gho_16C7e42F292c6912E7710c838347Ae178B4a ✓"
    assert SecretBox(KEY).decrypt(sealed) == "gho_16C7e42F292c6912E7710c838347Ae178B4a ✓"


def test_secret_box_other_key_cannot_decrypt() -> None:
    sealed = SecretBox(KEY).encrypt("gho_secret")
    with pytest.raises(SecretBoxError):
        SecretBox(OTHER_KEY).decrypt(sealed)


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda t: t[:-4] + ("AAAA" if not t.endswith("AAAA") else "BBBB"), id="tampered-mac"),
        pytest.param(lambda t: t[: len(t) // 2], id="truncated"),
        pytest.param(lambda t: "not-a-fernet-token", id="garbage"),
        pytest.param(lambda t: "gAAAAAé", id="non-ascii"),
        pytest.param(lambda t: "", id="empty"),
    ],
)
def test_secret_box_rejects_bad_ciphertext(mangle: Callable[[str], str]) -> None:
    box = SecretBox(KEY)
    with pytest.raises(SecretBoxError) as raised:
        box.decrypt(mangle(box.encrypt("gho_secret")))
    assert "gho_secret" not in str(raised.value)


def test_secret_box_tampered_payload_byte() -> None:
    box = SecretBox(KEY)
    raw = bytearray(base64.urlsafe_b64decode(box.encrypt("gho_secret")))
    raw[30] ^= 0x01  # a ciphertext byte, covered by the HMAC
    with pytest.raises(SecretBoxError):
        box.decrypt(base64.urlsafe_b64encode(bytes(raw)).decode())


def test_secret_box_decrypts_under_previous_key_after_rotation() -> None:
    sealed = SecretBox(OTHER_KEY).encrypt("gho_old")
    rotated = SecretBox(KEY, previous_keys=[OTHER_KEY])
    assert rotated.decrypt(sealed) == "gho_old"
    assert SecretBox(KEY).decrypt(rotated.encrypt("gho_new")) == "gho_new"  # new seals use the new key


def test_secret_box_key_is_derived_not_raw() -> None:
    # A Fernet key made directly from the secret's bytes must not open our ciphertexts.
    from cryptography.fernet import Fernet, InvalidToken

    sealed = SecretBox(KEY).encrypt("gho_secret")
    naive = Fernet(base64.urlsafe_b64encode(KEY.encode()[:32]))
    with pytest.raises(InvalidToken):
        naive.decrypt(sealed)
    assert "<key hidden>" in repr(SecretBox(KEY))


# -- GitHubClient.fetch_profile -----------------------------------------------------------------


async def test_fetch_profile_picks_primary_verified_email(github_stub: GitHubStub, github_settings: Settings) -> None:
    user = github_stub.state.add_user(
        "Octocat",
        name="The Octocat",
        emails=[
            StubEmail("Octo.Work@Example.COM", verified=True),
            StubEmail("Octocat@Example.com", primary=True, verified=True, visibility="public"),
            StubEmail("old@example.org", verified=False),
        ],
        public_email="someone-else@example.net",  # /user's `email` is not what we link on
    )
    token = github_stub.state.issue_token(user)

    profile = await GitHubClient(github_settings).fetch_profile(token)

    assert profile.id == user.id
    assert profile.login == "Octocat"
    assert profile.name == "The Octocat"
    assert profile.avatar_url == user.avatar_url
    assert profile.email == "octocat@example.com"
    assert profile.verified_emails == frozenset({"octo.work@example.com", "octocat@example.com"})
    sent = github_stub.state.api_requests
    assert [r.path for r in sent] == ["/api/v3/user", "/api/v3/user/emails"]
    for request in sent:
        assert request.headers["authorization"] == f"Bearer {token}"
        assert request.headers["accept"] == "application/vnd.github+json"
        assert request.headers["x-github-api-version"] == "2022-11-28"


async def test_fetch_profile_unverified_primary_gives_no_email(
    github_stub: GitHubStub, github_settings: Settings
) -> None:
    user = github_stub.state.add_user(
        "hubot",
        emails=[
            StubEmail("Hubot@example.com", primary=True, verified=False, visibility="private"),
            StubEmail("hubot@users.example.com", verified=True),
        ],
    )
    profile = await GitHubClient(github_settings).fetch_profile(github_stub.state.issue_token(user))
    assert profile.email is None
    assert profile.verified_emails == frozenset({"hubot@users.example.com"})
    assert profile.name is None


async def test_fetch_profile_without_emails(github_stub: GitHubStub, github_settings: Settings) -> None:
    user = github_stub.state.add_user("no-mail", emails=[])
    profile = await GitHubClient(github_settings).fetch_profile(github_stub.state.issue_token(user))
    assert profile.email is None
    assert profile.verified_emails == frozenset()


async def test_fetch_profile_revoked_or_unknown_token_is_invalid(
    github_stub: GitHubStub, github_settings: Settings
) -> None:
    user = github_stub.state.add_user("octocat")
    token = github_stub.state.issue_token(user)
    github_stub.state.revoke(token)
    client = GitHubClient(github_settings)
    for bad in (token, "gho_unknownunknownunknownunknownunknown", "not a token\n"):
        with pytest.raises(GitHubTokenInvalid) as raised:
            await client.fetch_profile(bad)
        assert bad not in str(raised.value)


async def test_fetch_profile_without_email_scope(github_stub: GitHubStub, github_settings: Settings) -> None:
    user = github_stub.state.add_user("octocat")
    token = github_stub.state.issue_token(user, scopes=["read:user"])
    with pytest.raises(GitHubInsufficientScope):
        await GitHubClient(github_settings).fetch_profile(token)


@pytest.mark.parametrize("fault", list(ApiFault))
async def test_fetch_profile_github_faults_are_unavailable(
    github_stub: GitHubStub, github_settings: Settings, fault: ApiFault
) -> None:
    user = github_stub.state.add_user("octocat")
    token = github_stub.state.issue_token(user)
    github_stub.state.api_fault = fault
    with pytest.raises(GitHubUnavailable):
        await GitHubClient(github_settings).fetch_profile(token)


async def test_fetch_profile_stopped_github_is_unavailable(make_settings: Callable[..., Settings]) -> None:
    async with GitHubStub() as stub:
        user = stub.state.add_user("octocat")
        token = stub.state.issue_token(user)
        settings = make_settings(**stub.settings_overrides())
        assert (await GitHubClient(settings).fetch_profile(token)).login == "octocat"
    with pytest.raises(GitHubUnavailable):  # connection refused
        await GitHubClient(settings).fetch_profile(token)


async def test_fetch_profile_hanging_github_times_out(make_settings: Callable[..., Settings]) -> None:
    async with BlackholeServer() as blackhole:
        settings = make_settings(GITHUB_API_URL=f"http://127.0.0.1:{blackhole.port}", GITHUB_TIMEOUT_SECONDS=0.2)
        with pytest.raises(GitHubUnavailable, match="timed out"):
            await GitHubClient(settings).fetch_profile("gho_anything")


# -- GitHubApp: the token check ----------------------------------------------------------------


async def test_app_token_check_confirms_only_our_live_tokens(
    github_stub: GitHubStub, github_settings: Settings
) -> None:
    user = github_stub.state.add_user("octocat")
    app = GitHubApp(github_settings)
    ours = github_stub.state.issue_token(user, ["read:user", "user:email", "repo"])
    assert await app.check_token(ours) == GitHubAppToken(
        user_id=user.id, scopes=frozenset({"read:user", "user:email", "repo"})
    )
    revoked = github_stub.state.issue_token(user)
    github_stub.state.revoke(revoked)
    refused = (
        github_stub.state.issue_personal_token(user),
        github_stub.state.issue_token(user, client_id="another-app"),
        revoked,
        "gho_unknownunknownunknownunknownunknown",
        "not a token\n",
    )
    for token in refused:
        with pytest.raises(GitHubTokenInvalid) as raised:
            await app.check_token(token)
        assert token not in str(raised.value)
    # With wrong app credentials GitHub confirms nothing either.
    wrong = GitHubApp(github_settings.model_copy(update={"GITHUB_CLIENT_SECRET": SecretStr("not-the-secret")}))
    with pytest.raises(GitHubTokenInvalid):
        await wrong.check_token(ours)


async def test_app_token_check_github_down(make_settings: Callable[..., Settings]) -> None:
    async with GitHubStub() as stub:
        token = stub.state.issue_token(stub.state.add_user("octocat"))
        settings = make_settings(**stub.settings_overrides())
        stub.state.api_fault = ApiFault.SERVER_ERROR
        with pytest.raises(GitHubUnavailable):
            await GitHubApp(settings).check_token(token)
    with pytest.raises(GitHubUnavailable):  # connection refused
        await GitHubApp(settings).check_token(token)
    assert build_github_app(make_settings()) is None


async def test_fetch_profile_through_injected_transport(github_stub: GitHubStub, github_settings: Settings) -> None:
    user = github_stub.state.add_user("octocat")
    token = github_stub.state.issue_token(user)
    transport = httpx.ASGITransport(app=github_stub.app)
    client = GitHubClient(github_settings, transport=transport)
    # Twice: the client must not close a transport it was lent.
    assert (await client.fetch_profile(token)).id == user.id
    assert (await client.fetch_profile(token)).id == user.id


# -- the stub's OAuth endpoints, driven by hand -------------------------------------------------


def _query(url: str) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(urlsplit(url).query).items()}


async def test_stub_authorize_and_token_exchange(github_stub: GitHubStub) -> None:
    state = github_stub.state
    state.add_user("octocat", sign_in=True)
    redirect_uri = "http://app.example/api/v1/auth/oauth/github/callback"
    verifier = "v" * 20 + "-verifier-of-enough-length-0123456789"
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=")

    async with httpx.AsyncClient(base_url=github_stub.url) as http:

        async def authorize(**extra: str) -> httpx.Response:
            params = {
                "client_id": state.client_id,
                "redirect_uri": redirect_uri,
                "state": "xyz",
                "scope": "read:user user:email",
                "code_challenge": challenge.decode(),
                "code_challenge_method": "S256",
                **extra,
            }
            return await http.get("/login/oauth/authorize", params=params)

        async def exchange(code: str, code_verifier: str, *, secret: str | None = None) -> dict[str, str]:
            response = await http.post(
                "/login/oauth/access_token",
                data={
                    "client_id": state.client_id,
                    "client_secret": secret or state.client_secret,
                    "code": code,
                    "redirect_uri": redirect_uri,
                    "code_verifier": code_verifier,
                },
                headers={"Accept": "application/json"},
            )
            assert response.status_code == 200  # GitHub reports token errors with 200
            body: dict[str, str] = response.json()
            return body

        assert (await authorize(client_id="someone-else")).status_code == 404

        granted = await authorize()
        assert granted.status_code == 302
        location = granted.headers["location"]
        assert location.startswith(redirect_uri + "?")
        code = _query(location)["code"]
        assert _query(location)["state"] == "xyz"

        # PKCE: a wrong verifier fails, and burns the code.
        assert (await exchange(code, "w" * 43))["error"] == "bad_verification_code"
        assert (await exchange(code, verifier))["error"] == "bad_verification_code"

        code = _query((await authorize()).headers["location"])["code"]
        assert (await exchange(code, verifier, secret="wrong"))["error"] == "incorrect_client_credentials"
        token = await exchange(code, verifier)
        assert token["token_type"] == "bearer"
        assert token["scope"] == "read:user,user:email"
        assert token["access_token"].startswith("gho_")
        # Replaying a redeemed code fails.
        assert (await exchange(code, verifier))["error"] == "bad_verification_code"

        # Without Accept: application/json GitHub answers form-encoded.
        code = _query((await authorize()).headers["location"])["code"]
        form = await http.post(
            "/login/oauth/access_token",
            data={"client_secret": state.client_secret, "code": code, "code_verifier": verifier},
            auth=(state.client_id, state.client_secret),
        )
        assert form.headers["content-type"].startswith("application/x-www-form-urlencoded")
        assert parse_qs(form.text)["token_type"] == ["bearer"]

        user = await http.get("/api/v3/user", headers={"Authorization": f"token {token['access_token']}"})
        assert user.status_code == 200
        assert user.json()["login"] == "octocat"
        unknown = await http.get("/api/v3/user", headers={"Authorization": "Bearer gho_nope"})
        assert unknown.status_code == 401
        assert unknown.json()["message"] == "Bad credentials"

        state.deny_consent = True
        denied = _query((await authorize()).headers["location"])
        assert denied["error"] == "access_denied"
        assert denied["state"] == "xyz"


async def test_stub_enforces_registered_callback(github_stub: GitHubStub) -> None:
    state = github_stub.state
    state.callback_url = "http://app.example/callback"
    state.add_user("octocat", sign_in=True)
    async with httpx.AsyncClient(base_url=github_stub.url) as http:
        params = {"client_id": state.client_id, "state": "s"}
        ok = await http.get(
            "/login/oauth/authorize", params={**params, "redirect_uri": "http://app.example/callback/x"}
        )
        assert "code" in _query(ok.headers["location"])
        bad = await http.get(
            "/login/oauth/authorize", params={**params, "redirect_uri": "http://evil.example/callback"}
        )
        assert bad.headers["location"].startswith("http://app.example/callback?")
        assert _query(bad.headers["location"])["error"] == "redirect_uri_mismatch"


# -- GitHubOAuth (Authlib's Starlette client) end to end ----------------------------------------

CALLBACK = "http://testserver/callback"


def _oauth_test_app(settings: Settings) -> Starlette:
    """A minimal stand-in for the auth router: start, callback, and a view of the session."""
    oauth = build_oauth(settings)
    assert oauth is not None

    async def start(request: Request) -> Response:
        return await oauth.authorize_redirect(request, CALLBACK)

    async def callback(request: Request) -> Response:
        try:
            token = await oauth.authorize_access_token(request)
        except GitHubError as error:
            code = error.error if isinstance(error, GitHubOAuthError) else None
            return JSONResponse({"error": type(error).__name__, "code": code}, status_code=400)
        profile = await GitHubClient(settings).fetch_profile(token.access_token)
        return JSONResponse({"login": profile.login, "email": profile.email, "scopes": sorted(token.scopes)})

    async def session(request: Request) -> Response:
        return JSONResponse(request.session)

    return Starlette(
        routes=[Route("/start", start), Route("/callback", callback), Route("/session", session)],
        middleware=[Middleware(SessionMiddleware, secret_key=settings.secret_key)],
    )


@pytest.fixture
async def app_client(github_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=_oauth_test_app(github_settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


@pytest.fixture
async def browser() -> AsyncIterator[httpx.AsyncClient]:
    """The user's browser on GitHub's side (real HTTP to the stub)."""
    async with httpx.AsyncClient() as client:
        yield client


async def _through_github(app_client: httpx.AsyncClient, browser: httpx.AsyncClient) -> str:
    """Start a sign-in and let GitHub answer; returns the callback URL GitHub redirects to."""
    start = await app_client.get("/start")
    assert start.status_code == 302
    github = await browser.get(start.headers["location"])
    assert github.status_code == 302, github.text
    location = github.headers["location"]
    assert location.startswith(CALLBACK + "?")
    return location


async def test_oauth_flow_with_pkce(
    github_stub: GitHubStub, app_client: httpx.AsyncClient, browser: httpx.AsyncClient
) -> None:
    github_stub.state.add_user("octocat", sign_in=True)
    start = await app_client.get("/start")
    authorize = _query(start.headers["location"])
    assert authorize["client_id"] == "cp-test-github-client"
    assert authorize["scope"] == "read:user user:email"
    assert authorize["code_challenge_method"] == "S256"
    assert authorize["redirect_uri"] == CALLBACK
    # Where Authlib keeps the flow: one session entry per state, holding the PKCE verifier.
    session = (await app_client.get("/session")).json()
    assert list(session) == [f"_state_github_{authorize['state']}"]
    assert {"code_verifier", "redirect_uri"} <= set(session[f"_state_github_{authorize['state']}"]["data"])

    callback = (await browser.get(start.headers["location"])).headers["location"]
    signed_in = await app_client.get(callback)
    assert signed_in.status_code == 200, signed_in.text
    assert signed_in.json() == {
        "login": "octocat",
        "email": "octocat@users.example.com",
        "scopes": ["read:user", "user:email"],
    }
    assert (await app_client.get("/session")).json() == {}  # the state was consumed

    # Replaying the same callback: the state is gone.
    replay = await app_client.get(callback)
    assert replay.json() == {"error": "GitHubOAuthStateError", "code": "mismatching_state"}


async def test_oauth_state_mismatch(
    github_stub: GitHubStub, github_settings: Settings, app_client: httpx.AsyncClient, browser: httpx.AsyncClient
) -> None:
    github_stub.state.add_user("octocat", sign_in=True)
    callback = await _through_github(app_client, browser)
    forged = callback.replace(f"state={_query(callback)['state']}", "state=forged")
    response = await app_client.get(forged)
    assert response.status_code == 400
    assert response.json()["error"] == "GitHubOAuthStateError"
    # A browser without the session cookie (another user's callback) fails the same way.
    transport = httpx.ASGITransport(app=_oauth_test_app(github_settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as stranger:
        assert (await stranger.get(callback)).json()["error"] == "GitHubOAuthStateError"


async def test_oauth_second_flow_invalidates_first(
    github_stub: GitHubStub, app_client: httpx.AsyncClient, browser: httpx.AsyncClient
) -> None:
    github_stub.state.add_user("octocat", sign_in=True)
    first = await _through_github(app_client, browser)
    second = await _through_github(app_client, browser)
    assert (await app_client.get(first)).json()["error"] == "GitHubOAuthStateError"
    assert (await app_client.get(second)).json()["login"] == "octocat"


async def test_oauth_consent_denied(
    github_stub: GitHubStub, app_client: httpx.AsyncClient, browser: httpx.AsyncClient
) -> None:
    github_stub.state.add_user("octocat", sign_in=True)
    github_stub.state.deny_consent = True
    response = await app_client.get(await _through_github(app_client, browser))
    assert response.json() == {"error": "GitHubConsentDenied", "code": "access_denied"}


async def test_oauth_token_endpoint_error(
    github_stub: GitHubStub, make_settings: Callable[..., Settings], browser: httpx.AsyncClient
) -> None:
    github_stub.state.add_user("octocat", sign_in=True)
    wrong = make_settings(**{**github_stub.settings_overrides(), "GITHUB_CLIENT_SECRET": "not-the-secret"})
    transport = httpx.ASGITransport(app=_oauth_test_app(wrong))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as app_client:
        response = await app_client.get(await _through_github(app_client, browser))
    assert response.json() == {"error": "GitHubOAuthError", "code": "incorrect_client_credentials"}


async def test_oauth_github_down_during_exchange(
    make_settings: Callable[..., Settings], browser: httpx.AsyncClient
) -> None:
    stub = GitHubStub(GitHubStubState())
    await stub.start()
    stub.state.add_user("octocat", sign_in=True)
    transport = httpx.ASGITransport(app=_oauth_test_app(make_settings(**stub.settings_overrides())))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as app_client:
        try:
            callback = await _through_github(app_client, browser)
        finally:
            await stub.stop()
        response = await app_client.get(callback)  # GitHub is gone before the code exchange
    assert response.json() == {"error": "GitHubUnavailable", "code": None}


def test_build_oauth_needs_client_id(make_settings: Callable[..., Settings]) -> None:
    assert build_oauth(make_settings()) is None
