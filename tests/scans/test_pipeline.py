"""The pipeline: cache before reads, zero engine calls on a re-scan, progress, cancel, the pool."""

from __future__ import annotations

import asyncio
import itertools
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from codepulse.config import Settings
from codepulse.scans.cache import MemoryCache
from codepulse.scans.errors import ScanCancelled, ScanFailure
from codepulse.scans.files import DirectorySource
from codepulse.scans.git import work_tree_files
from codepulse.scans.pipeline import scan_repository, scan_source
from codepulse.scans.pool import EnginePool
from codepulse.scans.results import PipelineResult
from codepulse.scans.supervisor import Progress
from tests.scans.fake_engines import FakeEngine, slow_scan_file, todo_scan_file
from tests.scans.gitrepo import AWS_KEY, Repo

PYTHON_APP = f'import subprocess\nAWS_KEY_ID = "{AWS_KEY}"\nsubprocess.call("ls " + name, shell=True)\n'


def _settings(**overrides: Any) -> Settings:
    return Settings.model_construct().model_copy(update={"ALLOW_LOCAL_REPOSITORIES": True, **overrides})


@pytest.fixture(scope="module")
def real_pool() -> Iterator[EnginePool]:
    with EnginePool(processes=2) as pool:
        yield pool


@pytest.fixture(scope="module")
def fake_pool() -> Iterator[EnginePool]:
    with EnginePool({"fake": FakeEngine()}, processes=1, scan_function=todo_scan_file) as pool:
        yield pool


@pytest.fixture
def slow_pool() -> Iterator[EnginePool]:
    with EnginePool({"fake": FakeEngine()}, processes=2, scan_function=slow_scan_file) as pool:
        yield pool


async def _scan(url: str, pool: EnginePool, cache: MemoryCache | None = None, **kwargs: Any) -> PipelineResult:
    return await scan_repository(
        url,
        kwargs.pop("ref", None),
        settings=kwargs.pop("settings", _settings()),
        cache=cache if cache is not None else MemoryCache(),
        progress=kwargs.pop("progress", None),
        cancelled=kwargs.pop("cancelled", None),
        pool=pool,
        **kwargs,
    )


async def test_real_engines_cache_and_rescan(
    tmp_path: Path, real_pool: EnginePool, monkeypatch: pytest.MonkeyPatch
) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    repo = Repo(tmp_path / "origin")
    head = repo.commit(
        {
            "app.py": PYTHON_APP,
            "copy.py": PYTHON_APP,  # the same blob at another path: scanned once, reported twice
            "notes.txt": f"key: {AWS_KEY}\n",
            "node_modules/dep/index.js": f"const k = '{AWS_KEY}'\n",
        }
    )
    cache = MemoryCache()
    first = await _scan(repo.url, real_pool, cache)
    assert first.commit_sha == head
    assert first.files_total == 4
    assert first.files_scanned == 3
    assert first.skipped == {"vendored": 1}
    assert first.cache_hits == 0
    assert set(first.engine_versions) == set(real_pool.engines)
    engines = real_pool.engines
    wanting = {path: sum(1 for e in engines.values() if e.wants(path)) for path in ("app.py", "notes.txt")}
    assert first.engine_calls == wanting["app.py"] + wanting["notes.txt"]
    aws = [f for f in first.findings if f.rule_id == "aws-access-key-id"]
    assert sorted(f.path for f in aws) == ["app.py", "copy.py", "notes.txt"]
    assert all(AWS_KEY not in f.snippet and AWS_KEY not in f.message for f in aws)
    assert len({f.fingerprint for f in first.findings}) == len(first.findings)  # path is in the fingerprint
    if "python" in engines:
        assert any(f.rule_id == "bandit.B602" and f.path == "app.py" for f in first.findings)
    # The temporary clone is gone (this process's scratch directory stays, empty, until it stops).
    # multiprocessing makes its own `pymp-*` directory here when the pool's first worker starts
    # during this test (the test run alone): not ours to clean.
    ours = [path.name for path in scratch.iterdir() if not path.name.startswith("pymp-")]
    assert ours == ["codepulse-scans-" + str(os.getuid())]
    assert not list(scratch.glob("codepulse-scans-*/*/*"))

    # An unchanged repository: no blob read, no engine call, the same findings.
    again = await _scan(repo.url, real_pool, cache)
    assert again.engine_calls == 0
    assert again.cache_hits == again.files_scanned == 3
    assert [(f.path, f.fingerprint) for f in again.findings] == [(f.path, f.fingerprint) for f in first.findings]

    # One file changed: only its engines run. Lines moved: fingerprints stay.
    repo.commit({"notes.txt": f"moved down\n\nkey: {AWS_KEY}\n"})
    third = await _scan(repo.url, real_pool, cache)
    assert third.engine_calls == wanting["notes.txt"]
    assert third.cache_hits == 2
    moved = next(f for f in third.findings if f.path == "notes.txt")
    before = next(f for f in first.findings if f.path == "notes.txt")
    assert (moved.start_line, before.start_line) == (3, 1)
    assert moved.fingerprint == before.fingerprint


async def test_local_directory_shares_the_cache_with_clones(tmp_path: Path, fake_pool: EnginePool) -> None:
    repo = Repo(tmp_path / "origin")
    repo.commit({"a.py": "x = 1  # TODO\n", "b/c.txt": "TODO\n", ".gitignore": "ignored.txt\n"})
    cache = MemoryCache()
    cloned = await _scan(repo.url, fake_pool, cache)
    assert cloned.engine_calls == 3
    (repo.root / "ignored.txt").write_text("TODO\n")
    listing = await work_tree_files(repo.root)
    assert listing is not None
    assert "ignored.txt" not in listing[0]
    local = await scan_source(
        DirectorySource(repo.root, listed=listing[0], commit_sha=listing[1]),
        settings=_settings(),
        cache=cache,
        pool=fake_pool,
    )
    assert local.engine_calls == 0
    assert local.commit_sha == cloned.commit_sha
    assert [(f.path, f.fingerprint) for f in local.findings] == [(f.path, f.fingerprint) for f in cloned.findings]


async def test_content_skips_and_engine_errors(tmp_path: Path, fake_pool: EnginePool) -> None:
    repo = Repo(tmp_path / "origin")
    repo.commit(
        {
            "data.txt": b"TODO\x00\x01binary",
            "bundle.js": "var a=1;" * 200,
            "bad.txt": "EXPLODE TODO\n",
            "good.txt": "TODO\n",
            ".codepulse.yml": "exclude: [[broken\n",
        }
    )
    result = await _scan(repo.url, fake_pool)
    assert result.skipped == {"binary": 1, "minified": 1}
    assert [f.path for f in result.findings] == ["good.txt"]
    assert result.files_scanned == 2  # good.txt and .codepulse.yml; bad.txt failed
    assert any("bad.txt" in warning and "RuntimeError" in warning for warning in result.warnings)
    assert any(".codepulse.yml" in warning for warning in result.warnings)
    # A failed file is not cached: it is tried again next time.
    assert (await _scan(repo.url, fake_pool)).engine_calls == 3


async def test_progress_is_throttled(tmp_path: Path, slow_pool: EnginePool) -> None:
    repo = Repo(tmp_path / "origin")
    repo.commit({f"f{i}.txt": f"0.06\nTODO {i}\n" for i in range(8)})
    reports: list[tuple[float, Progress]] = []

    async def progress(state: Progress) -> None:
        reports.append((time.monotonic(), state))

    result = await _scan(repo.url, slow_pool, progress=progress)
    assert len(result.findings) == 8
    assert reports[0][1].phase == "cloning"
    assert any(state.phase == "scanning" and state.files_total == 8 for _, state in reports)
    gaps = [later - earlier for (earlier, _), (later, _) in itertools.pairwise(reports)]
    assert all(gap >= 0.25 for gap in gaps)
    done = [state.files_done for _, state in reports if state.phase == "scanning"]
    assert done == sorted(done)


@pytest.mark.parametrize("signal", ["event", "callable"])
async def test_cancel_kills_the_running_chunks(tmp_path: Path, slow_pool: EnginePool, signal: str) -> None:
    repo = Repo(tmp_path / "origin")
    repo.commit({f"f{i}.txt": "30\n" for i in range(4)})  # 30 s per file
    event = asyncio.Event()
    cancelled_at: list[float] = []

    async def progress(state: Progress) -> None:
        if state.phase == "scanning" and not cancelled_at:
            await asyncio.sleep(0.2)  # the chunks are running
            cancelled_at.append(time.monotonic())
            event.set()

    async def ask() -> bool:
        return event.is_set()

    with pytest.raises(ScanCancelled):
        await _scan(repo.url, slow_pool, progress=progress, cancelled=event if signal == "event" else ask)
    assert cancelled_at
    # A file takes 30 s: ending well before that means the running chunks were killed, not
    # waited for (how fast a cancel lands is measured in tests/benchmarks/, not asserted here).
    assert time.monotonic() - cancelled_at[0] < 20.0

    if signal == "callable":
        return
    # The pool restarts by itself for the next scan.
    fast = Repo(tmp_path / "fast")
    fast.commit({"a.txt": "0\nTODO\n"})
    assert len((await _scan(fast.url, slow_pool)).findings) == 1


async def test_another_scans_cancel_does_not_break_a_scan(tmp_path: Path, slow_pool: EnginePool) -> None:
    """A cancel kills the shared pool's workers; the other scan's chunks run again."""
    doomed = Repo(tmp_path / "doomed")
    doomed.commit({"slow.txt": "30\n"})
    survivor = Repo(tmp_path / "survivor")
    survivor.commit({f"f{i}.txt": f"0.2\nTODO {i}\n" for i in range(2)})
    event = asyncio.Event()
    started = asyncio.Event()

    async def survivor_progress(state: Progress) -> None:
        if state.phase == "scanning":
            started.set()

    async def cancel_when_both_run() -> None:
        await started.wait()
        await asyncio.sleep(0.2)
        event.set()

    canceller = asyncio.ensure_future(cancel_when_both_run())
    doomed_result, survivor_result = await asyncio.gather(
        _scan(doomed.url, slow_pool, cancelled=event),
        _scan(survivor.url, slow_pool, progress=survivor_progress),
        return_exceptions=True,
    )
    await canceller
    assert isinstance(doomed_result, ScanCancelled)
    assert isinstance(survivor_result, PipelineResult)
    assert len(survivor_result.findings) == 2


async def test_cancel_while_cloning(tmp_path: Path, fake_pool: EnginePool) -> None:
    repo = Repo(tmp_path / "origin")
    repo.commit({"a.txt": "TODO\n"})
    event = asyncio.Event()
    event.set()
    with pytest.raises(ScanCancelled):
        await _scan(repo.url, fake_pool, cancelled=event)


async def test_checkout_size_limit_counts_the_tree(tmp_path: Path, fake_pool: EnginePool) -> None:
    """A small pack can hold a large tree: the index holds the checkout's size to the limit."""
    repo = Repo(tmp_path / "origin")
    repo.commit({"zeros.txt": "0" * 200_000})  # compresses to almost nothing
    with pytest.raises(ScanFailure) as raised:
        await _scan(repo.url, fake_pool, settings=_settings(SCAN_MAX_REPOSITORY_BYTES=100_000))
    assert raised.value.code == "repository_too_large"
