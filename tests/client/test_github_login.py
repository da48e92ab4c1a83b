"""`sign_in_with_github` (the client half of `codepulse login --github`) against the app served on
a loopback port and the stub GitHub: the client runs in a thread (it speaks blocking HTTP), its
sleep is injected and moves the stub's device clock instead of waiting."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from typer.testing import CliRunner

from codepulse.cli import app as cli
from codepulse.client import commands
from codepulse.client.api import Api, ApiError
from codepulse.client.credentials import Credentials
from codepulse.client.github_login import POLL_PATH, START_PATH, sign_in_with_github
from codepulse.config import Settings
from tests.helpers import served
from tests.stubs.github import GitHubStub, GitHubStubState

runner = CliRunner()


@pytest.fixture(scope="module")
async def github_stub_server() -> AsyncIterator[GitHubStub]:
    state = GitHubStubState(client_id="cp-cli-github-client", client_secret="cp-cli-github-secret")
    async with GitHubStub(state) as stub:
        yield stub


@pytest.fixture
def github_stub(github_stub_server: GitHubStub) -> GitHubStub:
    github_stub_server.reset()
    return github_stub_server


@contextlib.asynccontextmanager
async def _serve(app: FastAPI) -> AsyncIterator[str]:
    """The app with its lifespan, on a loopback port."""
    async with app.router.lifespan_context(app), served(app, scheme="http") as base:
        yield base


@pytest.fixture
async def origin(
    github_stub: GitHubStub, make_settings: Callable[..., Settings], app_factory: Callable[[Settings], FastAPI]
) -> AsyncIterator[str]:
    async with _serve(app_factory(make_settings(**github_stub.settings_overrides()))) as base:
        yield base


@dataclass
class Person:
    """The user at the terminal and at GitHub's device page: what `show` printed, and what they do
    at GitHub during each wait (`on_wait[n]` runs during the n-th wait, before that poll)."""

    stub: GitHubStub
    shown: list[tuple[str, str]] = field(default_factory=list)
    waits: list[float] = field(default_factory=list)
    on_wait: dict[int, Callable[[str], None]] = field(default_factory=dict)
    on_show: Callable[[str], None] | None = None

    def show(self, user_code: str, verification_uri: str) -> None:
        self.shown.append((user_code, verification_uri))
        if self.on_show is not None:
            self.on_show(user_code)

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.stub.state.pass_time(seconds)
        action = self.on_wait.get(len(self.waits))
        if action is not None:
            action(self.shown[0][0])


@pytest.fixture
def person(github_stub: GitHubStub) -> Person:
    return Person(github_stub)


async def sign_in(origin: str, person: Person, **options: Any) -> str:
    def run() -> str:
        with Api(origin, sleep=lambda _seconds: None) as api:
            return sign_in_with_github(api, person.show, sleep=person.sleep, **options)

    return await asyncio.to_thread(run)


async def whoami(origin: str, token: str) -> tuple[str, list[tuple[str, str]]]:
    """The token's username, and its account's sessions as (kind, name)."""
    async with httpx.AsyncClient(base_url=origin, headers={"Authorization": f"Bearer {token}"}) as client:
        me = (await client.get("/api/v1/auth/me")).json()
        sessions = (await client.get("/api/v1/auth/sessions")).json()["items"]
    return me["username"], [(item["kind"], item["name"]) for item in sessions]


async def test_signs_in_once_approved_polling_at_the_interval(
    origin: str, github_stub: GitHubStub, person: Person
) -> None:
    octocat = github_stub.state.add_user("octocat")
    person.on_wait[3] = lambda code: github_stub.state.approve_device(code, octocat)
    token = await sign_in(origin, person, name="codepulse CLI on laptop", expires_in_days=365)
    user_code, verification_uri = person.shown[0]
    assert len(person.shown) == 1
    assert verification_uri == f"{github_stub.url}/login/device"
    assert len(user_code) == 9
    assert person.waits == [5, 5, 5]  # two polls pending, the third one approved
    assert await whoami(origin, token) == ("octocat", [("cli", "codepulse CLI on laptop")])


async def test_slow_down_moves_to_the_interval_the_server_gives(
    origin: str, github_stub: GitHubStub, person: Person
) -> None:
    octocat = github_stub.state.add_user("octocat")
    person.on_show = github_stub.state.slow_down_device  # GitHub throttles the first poll
    person.on_wait[3] = lambda code: github_stub.state.approve_device(code, octocat)
    token = await sign_in(origin, person)
    # 10 s from then on: a client keeping 5 s would be slowed down again by the stub.
    assert person.waits == [5, 10, 10]
    assert await whoami(origin, token) == ("octocat", [("cli", "GitHub device sign-in")])


async def test_declined_on_github(origin: str, github_stub: GitHubStub, person: Person) -> None:
    person.on_wait[2] = github_stub.state.deny_device
    with pytest.raises(ApiError) as raised:
        await sign_in(origin, person)
    assert (raised.value.status, raised.value.code) == (403, "access_denied")
    assert raised.value.detail == "The sign-in was declined on GitHub."
    assert person.waits == [5, 5]


async def test_the_code_expires(origin: str, github_stub: GitHubStub, person: Person) -> None:
    person.on_wait[1] = github_stub.state.expire_device
    with pytest.raises(ApiError) as raised:
        await sign_in(origin, person)
    assert (raised.value.status, raised.value.code) == (400, "expired_token")
    assert "codepulse login --github" in raised.value.detail


async def test_a_server_without_github_sign_in(
    make_settings: Callable[..., Settings], app_factory: Callable[[Settings], FastAPI], person: Person
) -> None:
    async with _serve(app_factory(make_settings())) as base:
        with pytest.raises(ApiError) as raised:
            await sign_in(base, person)
    assert (raised.value.status, raised.value.code) == (404, "oauth_not_configured")
    assert person.shown == []


def _server(answers: Iterator[httpx.Response], sent: list[dict[str, object]]) -> httpx.MockTransport:
    def answer(request: httpx.Request) -> httpx.Response:
        sent.append({"path": request.url.path, **(json.loads(request.content) if request.content else {})})
        return next(answers)

    return httpx.MockTransport(answer)


def _problem(status: int, code: str, **extra: object) -> httpx.Response:
    return httpx.Response(status, json={"status": status, "code": code, "detail": code, **extra})


def test_slow_down_without_an_interval_adds_five_seconds_and_the_code_is_over_after_expires_in() -> None:
    started = {"device_code": "sealed", "user_code": "WDJB-MJHT", "verification_uri": "https://gh", "interval": 5}
    answers = iter(
        [
            httpx.Response(200, json={**started, "expires_in": 20}),
            _problem(400, "slow_down"),
            _problem(400, "authorization_pending"),
            # A server that would keep answering "pending" past the code's lifetime.
            _problem(400, "authorization_pending"),
        ]
    )
    sent: list[dict[str, object]] = []
    waits: list[float] = []
    api = Api("http://codepulse.test", transport=_server(answers, sent), sleep=waits.append)
    with api, pytest.raises(ApiError) as raised:
        sign_in_with_github(api, lambda *_: None, sleep=waits.append)
    assert raised.value.code == "expired_token"
    assert waits == [5, 10, 10]
    assert sent[0] == {"path": START_PATH}
    assert sent[1] == {"path": POLL_PATH, "device_code": "sealed", "expires_in_days": 90}


async def test_the_login_command_signs_in_with_github_and_saves_the_token(
    origin: str, github_stub: GitHubStub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`codepulse login --github`: the code printed, the polls at GitHub's interval (the seam
    between polls moves the stub's clock instead of waiting), the CLI token saved."""
    octocat = github_stub.state.add_user("octocat")
    waits: list[float] = []

    def wait(seconds: float) -> None:
        waits.append(seconds)
        github_stub.state.pass_time(seconds)
        if len(waits) == 2:
            (issued,) = github_stub.state.device_codes.values()  # the code the command printed
            github_stub.state.approve_device(issued.user_code, octocat)

    monkeypatch.setattr(commands, "_wait", wait)
    config = tmp_path / "config"
    env = {"CODEPULSE_CONFIG_DIR": str(config)}
    done = await asyncio.to_thread(runner.invoke, cli, ["login", "--server", origin, "--github"], env=env)
    assert done.exit_code == 0, done.output
    assert f"Open {github_stub.url}/login/device and enter the code" in done.output
    assert "Signed in to" in done.output
    assert done.output.strip().endswith("as octocat.")
    assert waits == [5, 5]
    saved = Credentials.load(config)
    assert saved is not None
    assert saved.server == origin
    assert (await whoami(origin, saved.token))[0] == "octocat"

    both = await asyncio.to_thread(runner.invoke, cli, ["login", "--github", "--token", "x"], env=env)
    assert both.exit_code == 1
    assert "either --token or --github" in both.output
