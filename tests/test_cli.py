"""The `codepulse` command: version, migrate, and `serve` as a real process."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from codepulse import __version__
from codepulse.cli import app as cli
from tests.databases import DatabaseServer

runner = CliRunner()


SERVER_PACKAGES = ("sqlalchemy", "fastapi", "starlette", "uvicorn", "alembic", "pydantic", "structlog", "httpx")


@pytest.mark.parametrize(
    "module",
    [
        "codepulse.cli",
        "codepulse.client.sources.claude_code",
        "codepulse.client.sources.codex",
        "codepulse.client.sources.gemini_cli",
        "codepulse.client.state",
        "codepulse.client.credentials",
        "codepulse.client.collect",
        "codepulse.client.commands",
    ],
)
def test_the_command_and_the_client_load_nothing_of_the_server(module: str) -> None:
    """`codepulse --help` and the client's commands start fast: importing them loads no server
    library (each server command imports its own when it runs)."""
    script = f"import sys, {module}; print(sorted({{name.split('.')[0] for name in sys.modules}}))"
    loaded = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert [package for package in SERVER_PACKAGES if f"'{package}'" in loaded] == []
    assert "'codepulse'" in loaded


_RUN_AND_LIST_MODULES = """
import sys
from codepulse.cli import main
sys.argv = ["codepulse", *sys.argv[1:]]
try:
    main()
except SystemExit:
    pass
print("MODULES", sorted({name.split(".")[0] for name in sys.modules}))
"""


@pytest.mark.parametrize("arguments", [["--help"], ["sync", "--help"], ["sync", "--dry-run", "--json"], ["status"]])
def test_running_a_client_command_loads_nothing_of_the_server(arguments: list[str], tmp_path: Path) -> None:
    """Not only importing: parsing the options (typer 0.29 coerces them through pydantic) and
    printing help (rich) cost a tenth of a second each, which the client's start cannot afford."""
    env = {
        **os.environ,
        "HOME": str(tmp_path),
        "CODEPULSE_CONFIG_DIR": str(tmp_path / "config"),
        "CODEPULSE_STATE_DIR": str(tmp_path / "state"),
    }
    done = subprocess.run(
        [sys.executable, "-c", _RUN_AND_LIST_MODULES, *arguments], capture_output=True, text=True, env=env, check=True
    )
    loaded = done.stdout.rsplit("MODULES", 1)[1]
    assert [package for package in (*SERVER_PACKAGES, "rich") if f"'{package}'" in loaded] == []


def test_version() -> None:
    result = runner.invoke(cli, ["version"])
    assert result.exit_code == 0
    assert result.output.strip() == __version__


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env(tmp_path: Path, database_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "VAR_DIR": str(tmp_path / "var"),
        "LOG_JSON": "true",
        "ENVIRONMENT": "development",
    }


@dataclass
class Completed:
    returncode: int
    stdout: str
    stderr: str


async def _spawn(tmp_path: Path, database_url: str, *args: str, merge: bool = False) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "codepulse",
        *args,
        env=_env(tmp_path, database_url),
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT if merge else asyncio.subprocess.PIPE,
    )


async def run_codepulse(tmp_path: Path, database_url: str, *args: str) -> Completed:
    process = await _spawn(tmp_path, database_url, *args)
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return Completed(process.returncode, stdout.decode(), stderr.decode())


async def _wait_ready(client: httpx.AsyncClient, process: asyncio.subprocess.Process) -> httpx.Response:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.returncode is None, "server exited early"
        try:
            response = await client.get("/api/v1/health/ready")
        except httpx.TransportError:
            await asyncio.sleep(0.05)
            continue
        if response.status_code == 200:
            return response
        await asyncio.sleep(0.05)
    raise AssertionError("server did not become ready")


async def test_serve_starts_ready_and_stops_cleanly(tmp_path: Path, database_server: DatabaseServer) -> None:
    """On SQLite `serve` migrates a brand-new file itself; on PostgreSQL `--migrate` is asked for."""
    port = _free_port()
    if database_server.dialect == "sqlite":
        url, extra = f"sqlite+aiosqlite:///{tmp_path / 'var' / 'fresh.db'}", []
    else:
        url, extra = await database_server.create_empty(), ["--migrate"]
    process = await _spawn(tmp_path, url, "serve", "--port", str(port), *extra, merge=True)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=2) as client:
            ready = await _wait_ready(client, process)
            assert ready.json()["checks"]["scheduler:running"][0]["status"] == "pass"
            assert (await client.get("/docs")).status_code == 200
            assert (await client.get("/openapi.json")).json()["info"]["title"] == "codepulse API"
    finally:
        process.send_signal(signal.SIGTERM)
        stdout, _ = await asyncio.wait_for(process.communicate(), 20)
    output = stdout.decode()
    # Uvicorn finishes the graceful shutdown, then re-raises SIGTERM so supervisors see why it ended.
    assert process.returncode in (0, -signal.SIGTERM), output
    assert '"event": "Application shutdown complete."' in output
    assert '"event": "scheduler.stopped"' in output
    assert '"event": "app.started"' in output
    assert '"event": "http.request"' in output  # our access line, through the JSON pipeline
    assert '"logger": "uvicorn.error"' in output  # uvicorn's own lines, same pipeline
    assert "Traceback" not in output


@pytest.mark.postgres_only
async def test_serve_refuses_a_postgres_schema_behind_head(tmp_path: Path, database_server: DatabaseServer) -> None:
    url = await database_server.create_empty()
    result = await run_codepulse(tmp_path, url, "serve", "--port", str(_free_port()))
    assert result.returncode == 1
    assert "run `codepulse migrate` first (or start with `codepulse serve --migrate`)" in result.stderr
    assert "Traceback" not in result.stderr


async def test_migrate_command_brings_an_empty_database_to_head(
    tmp_path: Path, database_server: DatabaseServer
) -> None:
    url = await database_server.create_empty()
    result = await run_codepulse(tmp_path, url, "migrate")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith("database at ")


async def test_unreachable_database_is_one_clear_line(tmp_path: Path) -> None:
    port = _free_port()  # nothing listens there
    result = await run_codepulse(tmp_path, f"postgresql+asyncpg://codepulse@127.0.0.1:{port}/codepulse", "migrate")
    assert result.returncode == 1
    assert result.stderr.startswith("codepulse: cannot reach the database")
    assert "Traceback" not in result.stderr
