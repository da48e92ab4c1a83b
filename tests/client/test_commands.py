"""`codepulse login`, `whoami` and `logout` through the real command against the app served on a
loopback port (the command runs in a thread: it speaks plain blocking HTTP), and the HTTP layer's
retries of 429/503 honouring Retry-After."""

from __future__ import annotations

import asyncio
import json
import stat
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from typer.testing import CliRunner, Result

from codepulse.cli import app as cli
from codepulse.client.api import Api, ApiError
from codepulse.client.credentials import CREDENTIALS_FILE, Credentials
from codepulse.client.sources import SOURCE_NAMES
from codepulse.client.state import STATE_FILE
from tests.auth.helpers import PASSWORD, register
from tests.client.test_collect import logs_home
from tests.helpers import served

runner = CliRunner()


@pytest.fixture
async def origin(app: FastAPI) -> AsyncIterator[str]:
    async with served(app, scheme="http") as base:
        yield base


async def run(config: Path, *args: str, answers: str = "") -> Result:
    env = {"CODEPULSE_CONFIG_DIR": str(config)}
    return await asyncio.to_thread(runner.invoke, cli, list(args), input=answers, env=env)


def cli_over(tmp_path: Path, home: Path) -> Callable[..., Awaitable[Result]]:
    """The command with its config and state under `tmp_path` and every tool's logs under `home`."""
    env = {
        "CODEPULSE_CONFIG_DIR": str(tmp_path / "config"),
        "CODEPULSE_STATE_DIR": str(tmp_path / "state"),
        "HOME": str(home),
        "CLAUDE_CONFIG_DIR": str(home / ".claude"),
        "CODEX_HOME": str(home / ".codex"),
    }

    async def cli_run(*args: str) -> Result:
        return await asyncio.to_thread(runner.invoke, cli, list(args), env=env)

    return cli_run


async def test_login_whoami_logout(client: httpx.AsyncClient, origin: str, tmp_path: Path) -> None:
    await register(client, "ada")
    config = tmp_path / "config"
    signed_in = await run(config, "login", "--server", origin, answers=f"ada\n{PASSWORD}\n")
    assert signed_in.exit_code == 0, signed_in.output
    assert f"Signed in to {origin} as ada." in signed_in.output
    assert PASSWORD not in signed_in.output  # the prompt hides it
    assert stat.S_IMODE((config / CREDENTIALS_FILE).stat().st_mode) == 0o600
    saved = Credentials.load(config)
    assert saved is not None
    sessions = await client.get("/api/v1/auth/sessions", headers={"Authorization": f"Bearer {saved.token}"})
    kinds = sorted(item["kind"] for item in sessions.json()["items"])
    assert kinds == ["cli", "web"]  # the CLI token, and registration's session; login's own one ended

    me = await run(config, "whoami")
    assert me.exit_code == 0
    assert me.output.strip() == f"ada <ada@example.com> on {origin}"

    out = await run(config, "logout")
    assert out.exit_code == 0
    assert not (config / CREDENTIALS_FILE).exists()
    revoked = await client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {saved.token}"})
    assert revoked.status_code == 401
    gone = await run(config, "whoami")
    assert gone.exit_code == 1
    assert "not signed in" in gone.output


async def test_a_wrong_password_saves_nothing_and_a_dashboard_token_signs_in(
    client: httpx.AsyncClient, origin: str, tmp_path: Path
) -> None:
    ada = await register(client, "ada")
    config = tmp_path / "config"
    wrong = await run(config, "login", "--server", origin, answers="ada\nnot-the-password\n")
    assert wrong.exit_code == 1
    assert not (config / CREDENTIALS_FILE).exists()

    made = await client.post("/api/v1/auth/tokens", headers=ada.headers, json={"name": "laptop"})
    token = made.json()["token"]
    with_token = await run(config, "login", "--server", origin, "--token", token)
    assert with_token.exit_code == 0, with_token.output
    assert token not in with_token.output
    await client.post("/api/v1/auth/logout", headers={"Authorization": f"Bearer {token}"})  # revoked elsewhere
    ended = await run(config, "whoami")
    assert ended.exit_code == 1
    assert "session has ended" in ended.output


def test_the_http_layer_retries_429_and_503_honouring_retry_after() -> None:
    answers = iter(
        [
            httpx.Response(429, headers={"Retry-After": "7"}, json={"code": "rate_limited", "detail": "slow down"}),
            httpx.Response(503, json={"code": "database_unavailable", "detail": "later"}),
            httpx.Response(200, json={"username": "ada"}),
        ]
    )
    waits: list[float] = []
    transport = httpx.MockTransport(lambda _request: next(answers))
    with Api("http://codepulse.test", "cp_token", backoff=0.5, sleep=waits.append, transport=transport) as api:
        assert api.request("GET", "/api/v1/auth/me") == {"username": "ada"}
    assert waits == [7.0, 1.0]  # Retry-After, then the backoff of the second attempt

    refusing = httpx.MockTransport(lambda _request: httpx.Response(503, json={"code": "down", "detail": "no"}))
    api = Api("http://codepulse.test", attempts=3, sleep=waits.append, transport=refusing)
    with api, pytest.raises(ApiError) as raised:
        api.request("GET", "/api/v1/health")
    assert (raised.value.status, raised.value.code) == (503, "down")


async def test_sync_uploads_what_is_new_and_the_server_counts_each_record_once(
    client: httpx.AsyncClient, origin: str, tmp_path: Path
) -> None:
    ada = await register(client, "ada")
    token = (await client.post("/api/v1/auth/tokens", headers=ada.headers, json={"name": "laptop"})).json()["token"]
    home, _ = logs_home(tmp_path)
    cli_run = cli_over(tmp_path, home)

    assert (await cli_run("login", "--server", origin, "--token", token)).exit_code == 0
    dry = await cli_run("sync", "--dry-run", "--json")
    assert dry.exit_code == 0, dry.output
    figures = json.loads(dry.output)["sources"]
    assert {name: (f["files"], f["records"]) for name, f in figures.items() if f["files"]} == {
        "claude-code": (1, 2),
        "codex": (1, 2),
        "gemini-cli": (1, 2),
    }
    # Hand-computed: input + output + cache writes + cache reads of the six responses.
    expected_tokens = (24 + 50 + 30 + 200) + (900 + 80 + 2100) + (820 + 90 + 900)

    first = await cli_run("sync", "--json")
    assert first.exit_code == 0, first.output
    summary = json.loads(first.output)
    assert (summary["received"], summary["inserted"], summary["rejected"]) == (6, 6, 0)
    assert summary["totals"]["tokens"] == expected_tokens

    again = await cli_run("sync")
    assert again.exit_code == 0
    assert "Nothing new to sync." in again.output  # the state says everything was read

    (tmp_path / "state" / STATE_FILE).unlink()  # forgotten: everything is read and sent again
    resent = json.loads((await cli_run("sync", "--json")).output)
    assert (resent["received"], resent["inserted"], resent["unchanged"]) == (6, 0, 6)
    assert resent["totals"]["tokens"] == expected_tokens


async def test_status_shows_the_server_the_user_and_what_waits(
    client: httpx.AsyncClient, origin: str, tmp_path: Path
) -> None:
    ada = await register(client, "ada")
    token = (await client.post("/api/v1/auth/tokens", headers=ada.headers, json={"name": "laptop"})).json()["token"]
    home, transcript = logs_home(tmp_path)
    cli_run = cli_over(tmp_path, home)

    signed_out = json.loads((await cli_run("status", "--json")).output)
    assert (signed_out["server"], signed_out["user"]) == (None, None)
    assert signed_out["sources"]["claude-code"] == {
        "last_sync": None,
        "pending_files": 1,
        "pending_bytes": transcript.stat().st_size,
    }
    await cli_run("login", "--server", origin, "--token", token)
    await cli_run("sync")
    synced = json.loads((await cli_run("status", "--json")).output)
    assert (synced["server"], synced["reachable"], synced["user"]) == (origin, True, "ada")
    assert set(synced["sources"]) == set(SOURCE_NAMES)
    assert {name: s["pending_files"] for name, s in synced["sources"].items() if s["pending_files"]} == {}
    assert all(s["last_sync"] for s in synced["sources"].values())
    with transcript.open("ab") as handle:
        handle.write(b'{"type": "user"}\n')
    text = (await cli_run("status")).output
    assert f"{origin}: reachable; signed in as ada" in text
    assert "claude-code: last sync" in text
    assert "1 files (17 bytes) waiting" in text
