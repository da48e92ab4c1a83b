"""What a scanning process leaves behind: clone directories of a process killed with SIGKILL are
swept at the next start; the engine pool's processes stop with the app."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from codepulse.app import create_app
from codepulse.config import Settings
from codepulse.db import Database
from codepulse.scans import runner
from codepulse.scans.scratch import Scratch
from tests.auth.helpers import register
from tests.databases import DatabaseServer, build_settings
from tests.orgs.helpers import create_org
from tests.scans.helpers import API, GitRepo, aws_key, config_file, create_repository, request_scan
from tests.scans.test_live import parse_sse
from tests.stubs.smtp import SmtpServer

CLONING_PROCESS = """
import sys
from pathlib import Path
from codepulse.scans.scratch import Scratch
clone = Scratch(Path(sys.argv[1])).mkdtemp("scan-")
(clone / "private.py").write_text("SECRET = 1\\n")
print(clone, flush=True)
sys.stdin.read()  # "cloning" until killed
"""


@pytest.fixture
def cloning_processes() -> Iterator[list[subprocess.Popen[str]]]:
    processes: list[subprocess.Popen[str]] = []
    yield processes
    for process in processes:
        process.kill()
        process.communicate()


def _start_cloning(root: Path, processes: list[subprocess.Popen[str]]) -> Path:
    """Another process of ours with a clone in progress under `root`: the clone's directory."""
    process = subprocess.Popen(
        [sys.executable, "-c", CLONING_PROCESS, str(root)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    processes.append(process)
    assert process.stdout is not None
    clone = Path(process.stdout.readline().strip())
    assert (clone / "private.py").exists()
    return clone


def _names(directory: Path) -> set[str]:
    return {path.name for path in directory.iterdir()}


@asynccontextmanager
async def _running_app(settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    database = Database.from_settings(settings)
    app = create_app(settings, database=database)
    try:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as client,
        ):
            yield app, client
    finally:
        await database.dispose()


async def _settings(database_server: DatabaseServer, smtp_server: SmtpServer, **overrides: Any) -> Settings:
    url = await database_server.clone("debris")
    overrides.update(smtp_server.settings())
    return build_settings(url, ALLOW_LOCAL_REPOSITORIES=True, WORKER_CONCURRENCY=1, TASK_POLL_SECONDS=0.05, **overrides)


async def test_clones_of_a_killed_process_are_swept_when_the_next_one_starts(
    tmp_path: Path,
    database_server: DatabaseServer,
    smtp_server: SmtpServer,
    cloning_processes: list[subprocess.Popen[str]],
) -> None:
    root = tmp_path / "work"
    killed = _start_cloning(root, cloning_processes)
    alive = _start_cloning(root, cloning_processes)
    cloning_processes[0].send_signal(signal.SIGKILL)
    cloning_processes[0].wait()
    assert (killed / "private.py").exists()  # nobody removed it: it would stay forever

    settings = await _settings(database_server, smtp_server, SCAN_WORK_DIR=root)
    async with _running_app(settings):
        # The killed process's directory and lock are gone; a live process's clone is left alone.
        assert _names(root) == {alive.parent.name, alive.parent.name + ".lock"}
        assert _names(alive) == {"private.py"}
    assert _names(alive) == {"private.py"}


def test_a_sweep_never_takes_a_live_directory(tmp_path: Path) -> None:
    first, second = Scratch(tmp_path), Scratch(tmp_path)
    mine = first.mkdtemp("scan-")
    theirs = second.mkdtemp("scan-")
    assert first.sweep() == 0
    assert second.sweep() == 0
    assert mine.exists()
    assert theirs.exists()
    second.close()
    assert not theirs.parent.exists()
    first.close()
    assert list(tmp_path.iterdir()) == []


def test_a_root_others_can_write_to_is_not_used(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    scratch = Scratch(shared)
    clone = scratch.mkdtemp("scan-")
    assert shared not in clone.parents
    scratch.close()
    assert not clone.parent.parent.exists()  # its private root goes too


async def test_the_engine_pool_and_the_clones_go_with_the_app(
    tmp_path: Path, database_server: DatabaseServer, smtp_server: SmtpServer
) -> None:
    root = tmp_path / "work"
    git = GitRepo(tmp_path / "app")
    git.commit({"settings.py": config_file(aws_key(1))})
    settings = await _settings(database_server, smtp_server, SCAN_WORK_DIR=root, SCAN_PROCESSES=2)
    async with _running_app(settings) as (_app, client):
        owner = await register(client, "ada")
        await create_org(client, owner, "engines")
        repository = await create_repository(client, owner, git.url)
        scan = await request_scan(client, owner, repository["id"])
        async with asyncio.timeout(60):  # the app's own worker runs it; the stream ends with it
            events = await client.get(f"{API}/scans/{scan['id']}/events", headers=owner.headers)
        assert parse_sse(events.text)[-1][1]["status"] == "succeeded"
        pool = runner._shared_pool
        assert pool is not None
        workers = [child.pid for child in multiprocessing.active_children() if child.pid is not None]
        assert workers  # the pool's processes, started by the scan
        assert any(root.iterdir())  # this process's scratch directory
    # Shut down: no child process of ours is left, nor any clone directory.
    assert runner._shared_pool is None
    assert multiprocessing.active_children() == []
    for pid in workers:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert _names(root) == set()
