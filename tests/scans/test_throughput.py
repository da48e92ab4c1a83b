"""Many small files: bulk reads, many files per chunk, an early pool start, a lazy secrets engine —
each gives what the one-file-at-a-time path gave."""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from codepulse.config import Settings
from codepulse.scans import files as files_module
from codepulse.scans import git as git_module
from codepulse.scans import pipeline as pipeline_module
from codepulse.scans.cache import MemoryCache
from codepulse.scans.engine import available_engines
from codepulse.scans.engine.secrets import ENGINE_VERSION, SecretsEngine, default_ruleset
from codepulse.scans.files import DirectorySource, IndexEntry, SkipRules, git_blob_sha
from codepulse.scans.git import GitTreeSource
from codepulse.scans.pipeline import scan_source
from codepulse.scans.pool import EnginePool
from tests.scans.fake_engines import FakeEngine, todo_scan_file
from tests.scans.gitrepo import AWS_KEY, Repo

RULES = SkipRules(max_file_bytes=1_000_000)


def _settings() -> Settings:
    return Settings.model_construct().model_copy(update={"ALLOW_LOCAL_REPOSITORIES": True})


def _write_tree(root: Path, count: int, seed: int = 7) -> dict[str, bytes]:
    """`count` small files of random sizes (some empty), one in ten with a secret."""
    rng = random.Random(seed)
    contents: dict[str, bytes] = {}
    for index in range(count):
        lines = [f"value_{index}_{line} = {rng.randint(0, 10**6)}" for line in range(rng.randint(0, 60))]
        if index % 10 == 3:
            lines.insert(rng.randint(0, len(lines)), f'aws_access_key_id = "{AWS_KEY}"')
        name = f"d{index % 13}/f{index}.{('py', 'yaml', 'txt')[index % 3]}"
        content = ("\n".join(lines) + "\n").encode() if lines else b""
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        contents[name] = content
    return contents


async def _read(source: Any, entries: Sequence[IndexEntry]) -> list[tuple[str, bytes]]:
    return [(entry.path, content) async for entry, content in source.read(entries)]


async def test_directory_source_bulk_reads_keep_order_and_content(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    contents = _write_tree(tmp_path, 300)
    # Some files kept from hashing, the others read again in small batches.
    monkeypatch.setattr(files_module, "RETAIN_BYTES", sum(map(len, contents.values())) // 2)
    monkeypatch.setattr(files_module, "READ_BATCH_FILES", 16)
    monkeypatch.setattr(files_module, "READ_BATCH_BYTES", 4096)
    source = DirectorySource(tmp_path)
    index = await source.index(RULES)
    assert {entry.path for entry in index.entries} == set(contents)
    for entry in index.entries:
        assert entry.blob_sha == git_blob_sha(contents[entry.path])
    entries = list(index.entries)
    random.Random(1).shuffle(entries)
    assert await _read(source, entries) == [(entry.path, contents[entry.path]) for entry in entries]
    # What `index` kept went to that read: a second read opens every file again.
    assert await _read(source, entries) == [(entry.path, contents[entry.path]) for entry in entries]


async def test_directory_source_scans_the_content_it_hashed(tmp_path: Path) -> None:
    (tmp_path / "kept.py").write_text("x = 1\n")
    (tmp_path / "gone.py").write_text("y = 2\n")
    source = DirectorySource(tmp_path)
    index = await source.index(RULES)
    (tmp_path / "kept.py").write_text("x = 'changed since the index'\n")
    (tmp_path / "gone.py").unlink()
    read = dict(await _read(source, index.entries))
    # Both were kept from hashing: the content whose blob SHA the entry carries.
    assert read == {"kept.py": b"x = 1\n", "gone.py": b"y = 2\n"}
    # Read again, from disk: the vanished file is left out.
    assert dict(await _read(source, index.entries)) == {"kept.py": b"x = 'changed since the index'\n"}


def test_batches_bound_files_and_bytes() -> None:
    entries = [IndexEntry(f"f{index}", "0" * 40, size) for index, size in enumerate([5, 5, 5, 20, 1, 1, 1, 1])]
    batches = list(files_module._batches(entries, 3, 10))
    assert [[entry.path for entry in batch] for batch in batches] == [
        ["f0", "f1"],
        ["f2"],
        ["f3"],  # larger than the byte bound alone: a batch of its own
        ["f4", "f5", "f6"],
        ["f7"],
    ]


async def test_git_tree_source_bulk_read_across_block_boundaries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = Repo(tmp_path / "repo")
    contents = _write_tree(repo.root, 40)
    contents["large.txt"] = bytes(range(256)) * 40  # newlines and every byte inside a blob
    repo.commit({"large.txt": contents["large.txt"]})
    # Tiny reads and writes: every header and blob is split across reads.
    monkeypatch.setattr(git_module, "READ_BLOCK_BYTES", 7)
    monkeypatch.setattr(git_module, "FEED_BATCH", 3)
    source = GitTreeSource(repo.root)
    index = await source.index(SkipRules(max_file_bytes=1_000_000))
    entries = sorted(index.entries, key=lambda entry: entry.path, reverse=True)
    missing = IndexEntry("missing.txt", "1" * 40, 3)
    asked = [*entries[:5], missing, *entries[5:]]
    assert await _read(source, asked) == [(entry.path, contents[entry.path]) for entry in entries]


@pytest.fixture(scope="module")
def secrets_pool() -> Iterator[EnginePool]:
    with EnginePool(["secrets"], processes=2) as pool:
        yield pool


async def test_many_small_files_many_per_chunk_same_findings(
    tmp_path: Path, secrets_pool: EnginePool, monkeypatch: pytest.MonkeyPatch
) -> None:
    contents = _write_tree(tmp_path, 2 * pipeline_module.CHUNK_MAX_FILES + 50)
    result = await scan_source(DirectorySource(tmp_path), settings=_settings(), cache=MemoryCache(), pool=secrets_pool)
    # One file per chunk (the path before batching) gives the same result.
    monkeypatch.setattr(pipeline_module, "CHUNK_MAX_FILES", 1)
    one_by_one = await scan_source(
        DirectorySource(tmp_path), settings=_settings(), cache=MemoryCache(), pool=secrets_pool
    )
    assert result.findings == one_by_one.findings
    assert result.files_scanned == one_by_one.files_scanned == len(contents)
    # And both are the engine's own findings, file by file.
    engine = available_engines()["secrets"]
    expected = sorted(
        (path, finding.start_line, finding.start_column, finding.rule_id)
        for path, content in contents.items()
        for finding in engine.scan(path, content)
    )
    found = sorted((f.path, f.start_line, f.start_column, f.rule_id) for f in result.findings)
    assert found == expected
    assert {path for path, *_ in found} == {name for name, content in contents.items() if AWS_KEY.encode() in content}


async def test_pool_started_early_runs_chunks() -> None:
    with EnginePool({"fake": FakeEngine()}, processes=2, scan_function=todo_scan_file) as pool:
        pool.start()
        pool.start()  # again: the running fork server is kept
        outcome = await asyncio.wrap_future(pool.submit([(("fake",), "a.py", b"x = 1  # TODO\n")]))
        assert isinstance(outcome[0], dict)
        assert [finding.rule_id for finding in outcome[0]["fake"]] == ["fake.todo"]


def test_pool_started_then_closed_or_killed_at_once() -> None:
    for stop in ("close", "kill"):
        pool = EnginePool({"fake": FakeEngine()}, processes=1, scan_function=todo_scan_file)
        pool.start()
        getattr(pool, stop)()
        pool.close()


def test_secrets_engine_version_without_compiling_the_rules() -> None:
    engine = SecretsEngine()
    assert engine.version == f"{ENGINE_VERSION}+{default_ruleset().sha256[:16]}"
    assert engine.scan("a.py", f'aws_access_key_id = "{AWS_KEY}"\n'.encode())


def test_local_scan_imports_no_database_layer() -> None:
    script = "import sys, codepulse.scans.local; print('sqlalchemy' in sys.modules)"
    loaded = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "False"
