"""Helpers of the web dashboard's tests.

Route tests (httpx through the ASGI app): the CSRF token of a rendered page, form posts, a page's
HTML or error page. Browser tests: a real `codepulse serve` (started by conftest.py's `serve`
fixture) and its on-demand worker, usage synced through the API with a CLI token, mail from the
SMTP stub, a git repository with a secret to find. What the browser does is in browsing.py.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import Message
from pathlib import Path
from typing import Any

import httpx

from codepulse.web.session import SESSION_COOKIE
from tests.auth.helpers import PASSWORD
from tests.scans.helpers import GitRepo, aws_key, config_file
from tests.stubs.smtp import SmtpServer
from tests.usage.helpers import body, record

_CSRF_FIELD = re.compile(r'name="csrf_token" value="([0-9a-f]+)"')


_CSRF_META = re.compile(r'<meta name="csrf-token" content="([0-9a-f]*)">')


def csrf_of(html: str) -> str:
    match = _CSRF_FIELD.search(html) or _CSRF_META.search(html)
    assert match is not None, "no CSRF token on the page"
    assert match.group(1), "an empty CSRF token"
    return match.group(1)


async def form_token(client: httpx.AsyncClient, path: str) -> str:
    page = await client.get(path)
    assert page.status_code == 200, page.text
    return csrf_of(page.text)


async def sign_up(client: httpx.AsyncClient, username: str, password: str) -> httpx.Response:
    token = await form_token(client, "/sign-up")
    data = {
        "csrf_token": token,
        "email": f"{username}@example.com",
        "username": username,
        "name": username.title(),
        "password": password,
    }
    return await client.post("/sign-up", data=data)


def use_session(client: httpx.AsyncClient, token: str) -> None:
    """Sign the client's browser in with a session token (as the sign-in form's cookie would)."""
    client.cookies.set(SESSION_COOKIE, token)


def set_cookie_headers(response: httpx.Response, name: str) -> list[str]:
    return [value for value in response.headers.get_list("set-cookie") if value.startswith(f"{name}=")]


def html_of(response: httpx.Response, status_code: int) -> str:
    """The page's HTML, once it is an HTML answer with that status."""
    assert response.status_code == status_code, (response.status_code, response.text[:2000])
    assert response.headers["content-type"].startswith("text/html")
    return response.text


def error_page(response: httpx.Response, status_code: int) -> str:
    """The HTML error page of that status."""
    page = html_of(response, status_code)
    assert f'data-status="{status_code}"' in page
    return page


# --- Browser tests: the server and what it is given --------------------------------------


ROOT = Path(__file__).resolve().parents[2]


CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _stop(process: asyncio.subprocess.Process, log: Path) -> None:
    """SIGTERM, as in production; then nothing in its log may be a traceback."""
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 20)
    _no_traceback(log)


def _no_traceback(log: Path) -> None:
    text = log.read_text()
    assert "Traceback" not in text, text[-4000:]


@dataclass
class Server:
    """A running `codepulse serve`; `start_worker()` adds a `codepulse worker` on its database."""

    origin: str
    database_url: str
    env: dict[str, str]
    workdir: Path
    log: Path
    workers: list[asyncio.subprocess.Process] = field(default_factory=list)

    async def start_worker(self) -> None:
        log = self.workdir / f"worker{len(self.workers)}.log"
        with log.open("wb") as output:
            worker = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "codepulse", "worker", "--concurrency", "1",
                env={**self.env, "TASK_POLL_SECONDS": "0.2"}, cwd=self.workdir, stdout=output, stderr=output,
            )  # fmt: skip
        self.workers.append(worker)

    async def stop_workers(self) -> None:
        for number, worker in enumerate(self.workers):
            await _stop(worker, self.workdir / f"worker{number}.log")


def server_env(
    database_url: str, workdir: Path, origin: str, *, smtp: SmtpServer | None, workers: int, local_repositories: bool
) -> dict[str, str]:
    """`codepulse serve`'s environment: the test database, no scheduler, cheap password hashing,
    links pointing at itself; mail to the SMTP stub, an in-process worker, local repositories
    when asked."""
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "VAR_DIR": str(workdir / "var"),
        "ENVIRONMENT": "development",
        "FRONTEND_URL": origin,
        "SCHEDULER_ENABLED": "false",
        "WORKER_CONCURRENCY": str(workers),
        "TASK_POLL_SECONDS": "0.2",
        "LOG_JSON": "true",
        "PASSWORD_HASH_TIME_COST": "1",
        "PASSWORD_HASH_MEMORY_KIB": "1024",
        "PASSWORD_HASH_PARALLELISM": "1",
    }
    if smtp is not None:
        smtp.clear()  # this server's mail only
        env.update({name: str(value) for name, value in smtp.settings().items()})
    if local_repositories:
        env.update({"ALLOW_LOCAL_REPOSITORIES": "true", "REPOSITORY_PROBE_SECONDS": "0"})
    return env


@asynccontextmanager
async def serving(
    database_url: str,
    workdir: Path,
    *,
    smtp: SmtpServer | None = None,
    workers: int = 0,
    local_repositories: bool = False,
    **env: str,
) -> AsyncIterator[Server]:
    """`codepulse serve` on a free port, once it answers ready; stopped (with the workers it was
    given) at the end, and no traceback in any of their logs."""
    port = free_port()
    origin = f"http://127.0.0.1:{port}"
    full_env = (
        server_env(database_url, workdir, origin, smtp=smtp, workers=workers, local_repositories=local_repositories)
        | env
    )
    log = workdir / "server.log"
    with log.open("wb") as output:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "codepulse", "serve", "--port", str(port),
            env=full_env, cwd=workdir, stdout=output, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
    server = Server(origin, database_url, full_env, workdir, log)
    try:
        async with httpx.AsyncClient(base_url=origin, timeout=2) as client:
            deadline = time.monotonic() + 60
            while True:
                assert process.returncode is None, log.read_text()
                try:
                    if (await client.get("/api/v1/health/ready")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "server not ready:\n" + log.read_text()
                await asyncio.sleep(0.05)  # polling the server's readiness, not a fixed wait
        yield server
    finally:
        try:
            await server.stop_workers()
        finally:
            await _stop(process, log)


async def api_bearer(api: httpx.AsyncClient, login: str) -> dict[str, str]:
    """The Authorization header of an API session (POST /auth/login)."""
    response = await api.post("/api/v1/auth/login", json={"login": login, "password": PASSWORD})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['token']}"}


async def sync_with_cli_token(api: httpx.AsyncClient, bearer: dict[str, str], records: list[Any]) -> dict[str, Any]:
    """A CLI token (as `codepulse login` makes), then POST /sync with it (as `codepulse sync`)."""
    made = await api.post("/api/v1/auth/tokens", json={"name": "laptop", "expires_in_days": 30}, headers=bearer)
    assert made.status_code == 201, made.text
    cli = {"Authorization": f"Bearer {made.json()['token']}"}
    synced = await api.post("/api/v1/sync", json=body(records, "m1"), headers=cli)
    assert synced.status_code == 200, synced.text
    result: dict[str, Any] = synced.json()
    return result


async def sync_usage_records(origin: str, login: str) -> dict[str, Any]:
    """`usage_records` of just now, synced through the API with a CLI token of `login`'s."""
    now = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=5)
    async with httpx.AsyncClient(base_url=origin, timeout=10) as api:
        return await sync_with_cli_token(api, await api_bearer(api, login), usage_records(now))


def usage_records(now: datetime) -> list[dict[str, Any]]:
    """Four records: two today (claude-code), one 3 days ago (codex), one 12 days ago of a model
    with no price (gemini-cli)."""

    def usage(
        message_id: str, at: datetime, source: str, model: str, *, input: int, output: int, **cache: int
    ) -> dict[str, Any]:
        return record(
            message_id, at=at, source=source, model=model, input=input, output=output,
            cache_5m=cache.get("cache_5m", 0), cache_read=cache.get("cache_read", 0),
        )  # fmt: skip

    return [
        usage("a", now, "claude-code", "claude-sonnet-4-5", input=1_000, output=20_000, cache_read=300_000),
        usage("b", now, "claude-code", "claude-opus-4-5", input=500, output=4_500, cache_5m=10_000),
        usage("c", now - timedelta(days=3), "codex", "gpt-5-codex", input=40_000, output=8_000),
        usage("d", now - timedelta(days=12), "gemini-cli", "mystery-model-x", input=600, output=400),
    ]


async def wait_for_mail(smtp: SmtpServer, address: str, marker: str, server: Server) -> Message:
    """The first message to `address` whose text holds `marker`, once the server's worker sent it."""
    deadline = time.monotonic() + 30
    while True:
        for message in smtp.messages_to(address):
            if marker in SmtpServer._body(message):
                return message
        assert time.monotonic() < deadline, f"no mail to {address} with {marker}:\n" + server.log.read_text()[-4000:]
        await asyncio.sleep(0.05)  # the stub's inbox, polled


async def mailed_invitation(smtp: SmtpServer, server: Server, email: str) -> str:
    """The invitation's link, as mailed: it points at this dashboard."""
    invitation = await wait_for_mail(smtp, email, "/invitations/", server)
    link = f"{server.origin}/invitations/{SmtpServer.link_token_in_path(invitation, '/invitations/')}"
    assert link in SmtpServer._body(invitation)
    return link


def repository_with_a_secret(path: Path) -> GitRepo:
    """A git repository on disk named after `path`, with a fake AWS key committed at
    app/settings.py:3."""
    repo = GitRepo(path)
    repo.commit({"app/settings.py": config_file(aws_key(11)), "README.md": f"# {path.name}\n"}, message="settings")
    return repo
