"""Hostile repositories: a `.codepulse.yml` built to stall or bloat the scanner, file names that
are not UTF-8. The event loop keeps running, the scan finishes with a warning, nothing is lost."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import pytest
import structlog

from codepulse.config import Settings
from codepulse.scans.cache import MemoryCache
from codepulse.scans.files import DirectorySource
from codepulse.scans.pipeline import scan_repository, scan_source
from codepulse.scans.pool import EnginePool
from codepulse.scans.repoconfig import CONFIG_MAX_BYTES, MAX_EXCLUDE_PATTERNS, MAX_GLOB_LENGTH, parse_config
from codepulse.scans.results import PipelineResult
from tests.scans.conftest import Flow
from tests.scans.fake_engines import FakeEngine, todo_scan_file
from tests.scans.gitrepo import Repo
from tests.scans.helpers import GitRepo, aws_key, config_file

T = TypeVar("T")

DEEP = "/".join(f"d{i}" for i in range(40))
GLOB_BOMB = "exclude: ['" + "/".join(["**"] * 10) + "/zz']\n"
"""The reported one: ten `**/` in a row against deep paths stalled /health for 28 s."""
BACKTRACKING_BOMB = "exclude: ['" + "*a" * 12 + "*b']\n"
"""Not reducible: `[^/]*a` twelve times against a long run of `a` backtracks for hours."""


def alias_bomb(levels: int = 24) -> str:
    """A 500-byte YAML whose last alias expands to 2**levels strings."""
    lines = ['a0: ["x", "x"]']
    lines += [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}]" for i in range(1, levels + 1)]
    lines[0] = 'a0: &a0 ["x", "x"]'
    lines.append(f"exclude: [*a{levels}]")
    return "\n".join(lines) + "\n"


def _settings(**overrides: Any) -> Settings:
    return Settings.model_construct().model_copy(update={"ALLOW_LOCAL_REPOSITORIES": True, **overrides})


class WatchedPool(EnginePool):
    """A real pool that records, for each `call`, how many rounds a concurrent ticker coroutine
    had made when it was submitted and when its result arrived."""

    def __init__(self, ticks: list[int], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ticks = ticks
        self.spans: list[tuple[int, int]] = []

    def call(self, function: Callable[..., T], *args: Any) -> Future[T]:
        future = super().call(function, *args)
        submitted = len(self.ticks)
        future.add_done_callback(lambda _: self.spans.append((submitted, len(self.ticks))))
        return future


@pytest.fixture
def ticks() -> list[int]:
    return []


@pytest.fixture
def watched_pool(ticks: list[int]) -> Iterator[WatchedPool]:
    pool = WatchedPool(ticks, engines={"fake": FakeEngine()}, processes=1, scan_function=todo_scan_file)
    try:
        yield pool
    finally:
        pool.close()


async def _scan_while_ticking(url: str, pool: WatchedPool, ticks: list[int], **settings: Any) -> PipelineResult:
    """Scan with a trivial coroutine running beside it that counts its rounds."""

    async def ticker() -> None:
        while True:
            ticks.append(0)
            await asyncio.sleep(0)

    ticking = asyncio.create_task(ticker())
    try:
        return await scan_repository(
            url,
            None,
            settings=_settings(**settings),
            cache=MemoryCache(),
            progress=None,
            cancelled=None,
            pool=pool,
        )
    finally:
        ticking.cancel()


def _hostile_repo(tmp_path: Path, config: str) -> Repo:
    repo = Repo(tmp_path / "origin")
    files: dict[str, str | bytes] = {f"{DEEP}/file_{i}.txt": "TODO deep\n" for i in range(20)}
    files["a" * 200 + ".txt"] = "TODO long name\n"
    repo.commit({**files, "src/app.py": "x = 1  # TODO\n", ".codepulse.yml": config})
    return repo


@pytest.mark.parametrize(
    ("config", "budget", "warning"),
    [
        (GLOB_BOMB, 10.0, None),  # defused: `**/**/` is `**/`, no backtracking left
        (BACKTRACKING_BOMB, 0.5, "took longer than 0.5 s"),
        (alias_bomb(), 10.0, "YAML alias"),
        ("exclude:\n" + "  - " * 40 + "x\n", 10.0, "nested more than"),
        ("exclude: ['" + "x" * (MAX_GLOB_LENGTH + 1) + "']\n", 10.0, "longer than"),
        ("exclude: [" + ", ".join(["'*.none'"] * (MAX_EXCLUDE_PATTERNS + 1)) + "]\n", 10.0, "only the first"),
        ("# " + "x" * CONFIG_MAX_BYTES + "\n", 10.0, "larger than"),
    ],
    ids=["glob-bomb", "backtracking-bomb", "alias-bomb", "deep-nesting", "long-glob", "many-globs", "oversized"],
)
async def test_a_hostile_config_never_stalls_the_event_loop(
    tmp_path: Path, watched_pool: WatchedPool, ticks: list[int], config: str, budget: float, warning: str | None
) -> None:
    repo = _hostile_repo(tmp_path, config)
    with structlog.testing.capture_logs() as logs:
        result = await _scan_while_ticking(repo.url, watched_pool, ticks, SCAN_CONFIG_TIME_BUDGET_SECONDS=budget)
    # The config was parsed and matched in the engine pool, and the loop kept scheduling the
    # ticker while that ran.
    assert len(watched_pool.spans) == 1
    submitted, answered = watched_pool.spans[0]
    assert answered > submitted
    # The scan went on: every file the config could not exclude was scanned.
    paths = {finding.path for finding in result.findings}
    assert "src/app.py" in paths
    assert f"{DEEP}/file_0.txt" in paths
    if warning is None:
        assert result.warnings == []
    else:
        assert len(result.warnings) == 1
        assert warning in result.warnings[0]
        assert len(result.warnings[0]) < 300
    assert all(len(str(entry)) < 2000 for entry in logs)  # nothing parsed is dumped into a log


def test_limits_are_refused_without_expanding_anything() -> None:
    # A chain of 24 aliases: refused at the first alias, before anything is built.
    refused = parse_config(alias_bomb().encode())
    assert refused.exclude == ()
    assert "alias" in refused.warnings[0]
    # Entries are described by kind, never printed.
    described = parse_config(b"exclude: [{a: [1, 2, 3]}, [x, y], 7, ok]\n")
    assert described.exclude == ("ok",)
    assert [warning.split(": ", 1)[1] for warning in described.warnings] == [
        "a mapping, not a glob; ignored",
        "a list, not a glob; ignored",
        "a number, not a glob; ignored",
    ]
    # Anchors without aliases are plain YAML.
    assert parse_config(b"exclude: &globs ['*.snap']\n").exclude == ("*.snap",)


async def test_hostile_config_warning_is_on_the_scan(flow: Flow, tmp_path: Path) -> None:
    git = GitRepo(tmp_path / "app")
    git.commit({"settings.py": config_file(aws_key(3)), ".codepulse.yml": alias_bomb()})
    repository = await flow.repository(git.url)
    scan = await flow.scan(repository["id"])
    assert scan["status"] == "succeeded"
    assert len(scan["warnings"]) == 1
    assert "YAML alias" in scan["warnings"][0]
    assert [finding["location"]["path"] for finding in await flow.findings(repository["id"])] == ["settings.py"]


# --- file names that are not UTF-8 ---------------------------------------------------------------

BAD_NAME = "bad\udcffname.py"
"""`bad\\xffname.py` on disk (surrogateescape): not UTF-8, as git and POSIX allow."""
SHOWN = "bad\ufffdname.py"


async def test_a_file_name_that_is_not_utf8_is_scanned_and_shown_with_a_replacement(flow: Flow, tmp_path: Path) -> None:
    git = GitRepo(tmp_path / "app")
    git.commit({"settings.py": config_file(aws_key(3))})
    repo = Repo.__new__(Repo)
    repo.root = git.root
    repo.commit({BAD_NAME: config_file(aws_key(4)), "other/x.py": config_file(aws_key(5))})
    repository = await flow.repository(git.url)
    scan = await flow.scan(repository["id"])
    assert scan["status"] == "succeeded", scan["error"]
    findings = await flow.findings(repository["id"])
    assert sorted(finding["location"]["path"] for finding in findings) == [SHOWN, "other/x.py", "settings.py"]
    sarif = await flow.client.get(f"/api/v1/scans/{scan['id']}/sarif", headers=flow.owner.headers)
    assert sarif.status_code == 200


async def test_a_local_directory_with_a_name_that_is_not_utf8(tmp_path: Path) -> None:
    (tmp_path / BAD_NAME).write_text("x = 1  # TODO\n")
    (tmp_path / "good.py").write_text("x = 1  # TODO\n")
    with EnginePool({"fake": FakeEngine()}, processes=1, scan_function=todo_scan_file) as pool:
        result = await scan_source(DirectorySource(tmp_path), settings=_settings(), cache=MemoryCache(), pool=pool)
    assert sorted(finding.path for finding in result.findings) == [SHOWN, "good.py"]
