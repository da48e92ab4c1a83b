"""Helpers for the scans domain's tests: real git repositories on disk, served as file:// URLs,
synthetic secrets the secrets engine reports, and engines slow enough to cancel mid-scan."""

from __future__ import annotations

import random
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from codepulse.scans.engine import RawFinding, RuleInfo
from tests.auth.helpers import SignedIn

API = "/api/v1"
_BASE32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_GIT_ENV = {
    "GIT_AUTHOR_NAME": "Test",
    "GIT_AUTHOR_EMAIL": "test@example.com",
    "GIT_COMMITTER_NAME": "Test",
    "GIT_COMMITTER_EMAIL": "test@example.com",
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_CONFIG_NOSYSTEM": "1",
    "PATH": "/usr/local/bin:/usr/bin:/bin",
}


def aws_key(seed: int) -> str:
    """An AWS access key id the secrets engine reports (random, so no real key is committed)."""
    rng = random.Random(seed)
    return "AKIA" + "".join(rng.choice(_BASE32) for _ in range(16))


def _git(root: Path, *args: str) -> str:
    result = subprocess.run(["git", *args], cwd=root, env=_GIT_ENV, capture_output=True, text=True, check=True)
    return result.stdout.strip()


class GitRepo:
    """A git repository in a temporary directory; `url` is its file:// clone URL."""

    def __init__(self, root: Path, branch: str = "main") -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        _git(root, "init", "-q", "-b", branch)

    @property
    def url(self) -> str:
        return self.root.resolve().as_uri()

    def commit(self, files: Mapping[str, str], *, delete: Sequence[str] = (), message: str = "change") -> str:
        for name, content in files.items():
            path = self.root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
        for name in delete:
            (self.root / name).unlink()
        _git(self.root, "add", "-A")
        _git(self.root, "commit", "-q", "--allow-empty", "-m", message)
        return _git(self.root, "rev-parse", "HEAD")

    def branch(self, name: str) -> None:
        _git(self.root, "checkout", "-q", "-b", name)

    def checkout(self, name: str) -> None:
        _git(self.root, "checkout", "-q", name)


def config_file(key: str, *, above: int = 0) -> str:
    """A settings module holding `key` at line 3 + `above`."""
    return "\n".join([*(f"# padding {i}" for i in range(above)), "import os", "", f'AWS_KEY_ID = "{key}"', ""])


async def create_repository(
    client: httpx.AsyncClient, user: SignedIn, clone_url: str, org: str = "engines", **fields: Any
) -> dict[str, Any]:
    response = await client.post(
        f"{API}/orgs/{org}/repositories", headers=user.headers, json={"clone_url": clone_url, **fields}
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def request_scan(
    client: httpx.AsyncClient,
    user: SignedIn,
    repository_id: str,
    ref: str | None = None,
    *,
    expect: int = 202,
    mode: str | None = None,
) -> dict[str, Any]:
    body: dict[str, str] = {"ref": ref} if ref is not None else {}
    if mode is not None:
        body["mode"] = mode
    response = await client.post(f"{API}/repositories/{repository_id}/scans", headers=user.headers, json=body)
    assert response.status_code == expect, response.text
    scan: dict[str, Any] = response.json()
    return scan


# --- a slow engine, for scans that must still be running when canceled ---------------------------


class SlowEngine:
    name = "slow"
    version = "slow-1"

    def wants(self, path: str) -> bool:
        return True

    def scan(self, path: str, content: bytes) -> list[RawFinding]:
        return []

    def rules(self) -> list[RuleInfo]:
        return []


def slow_scan_file(engine_names: tuple[str, ...], path: str, content: bytes) -> dict[str, list[RawFinding]]:
    """Runs in the pool's worker processes: a file takes a while."""
    time.sleep(0.2)
    return {name: [] for name in engine_names}
