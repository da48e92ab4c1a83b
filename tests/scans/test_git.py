"""Cloning and indexing: refs, limits, the token's path, skip rules, .codepulse.yml."""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import structlog

from codepulse.config import Settings
from codepulse.scans.clone import clone
from codepulse.scans.errors import ScanFailure
from codepulse.scans.files import DirectorySource, SkipRules, git_blob_sha
from codepulse.scans.git import GitTreeSource
from codepulse.scans.repoconfig import compile_glob, evaluate, parse_config
from tests.scans.gitrepo import Repo, git


def _settings(**overrides: Any) -> Settings:
    return Settings.model_construct().model_copy(update={"ALLOW_LOCAL_REPOSITORIES": True, **overrides})


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    repository = Repo(tmp_path / "origin")
    repository.commit({"README.md": "first\n"}, "first")
    return repository


async def test_clone_default_branch_without_checkout(repo: Repo, tmp_path: Path) -> None:
    head = repo.commit({"app.py": "print('hi')\n"})
    dest = tmp_path / "clone"
    assert await clone(repo.url, None, dest, settings=_settings()) == head
    assert (dest / ".git").is_dir()
    assert not (dest / "app.py").exists()  # files are read from git's objects, never checked out
    assert oct(dest.stat().st_mode & 0o777) == "0o700"
    # Shallow: one commit only.
    assert git(dest, "rev-list", "--count", "HEAD") == "1"


@pytest.mark.parametrize("kind", ["branch", "tag", "sha"])
async def test_clone_refs(repo: Repo, tmp_path: Path, kind: str) -> None:
    first = git(repo.root, "rev-parse", "HEAD")
    repo.tag("v1")
    repo.branch("feature")
    feature = repo.commit({"feature.py": "x = 1\n"})
    repo.checkout("main")
    repo.commit({"later.py": "y = 2\n"})
    ref, expected = {"branch": ("feature", feature), "tag": ("v1", first), "sha": (first, first)}[kind]
    assert await clone(repo.url, ref, tmp_path / "clone", settings=_settings()) == expected


async def test_clone_local_path(repo: Repo, tmp_path: Path) -> None:
    head = git(repo.root, "rev-parse", "HEAD")
    assert await clone(str(repo.root), None, tmp_path / "clone", settings=_settings()) == head


@pytest.mark.parametrize("ref", ["missing-branch", "0123456789abcdef0123456789abcdef01234567"])
async def test_ref_not_found(repo: Repo, tmp_path: Path, ref: str) -> None:
    with pytest.raises(ScanFailure) as raised:
        await clone(repo.url, ref, tmp_path / "clone", settings=_settings())
    assert raised.value.code == "ref_not_found"


@pytest.mark.parametrize("ref", ["-upload-pack=touch", "a..b", "a b", "x:y"])
async def test_invalid_ref(repo: Repo, tmp_path: Path, ref: str) -> None:
    with pytest.raises(ScanFailure) as raised:
        await clone(repo.url, ref, tmp_path / "clone", settings=_settings())
    assert raised.value.code == "invalid_ref"


@pytest.mark.parametrize(
    "url", ["ext::sh -c touch% /tmp/pwned", "http://example.com/a/b.git", "--upload-pack=touch", "ftp://x/y"]
)
async def test_refused_urls(tmp_path: Path, url: str) -> None:
    with pytest.raises(ScanFailure) as raised:
        await clone(url, None, tmp_path / "clone", settings=_settings())
    assert raised.value.code == "clone_failed"


async def test_local_repositories_need_the_setting(repo: Repo, tmp_path: Path) -> None:
    with pytest.raises(ScanFailure) as raised:
        await clone(repo.url, None, tmp_path / "clone", settings=_settings(ALLOW_LOCAL_REPOSITORIES=False))
    assert raised.value.code == "clone_failed"
    with pytest.raises(ScanFailure):
        await clone(repo.url, None, tmp_path / "clone2", settings=_settings(), allow_local=False)


async def test_repository_too_large(repo: Repo, tmp_path: Path) -> None:
    limited = _settings(SCAN_MAX_REPOSITORY_BYTES=16 * 1024)
    assert await clone(repo.url, None, tmp_path / "small", settings=limited)  # git's own files fit
    repo.commit({"blob.bin": os.urandom(64 * 1024)})  # incompressible
    with pytest.raises(ScanFailure) as raised:
        await clone(repo.url, None, tmp_path / "clone", settings=limited)
    assert raised.value.code == "repository_too_large"


async def test_clone_timeout(repo: Repo, tmp_path: Path) -> None:
    with pytest.raises(ScanFailure) as raised:
        await clone(repo.url, None, tmp_path / "clone", settings=_settings(SCAN_CLONE_TIMEOUT_SECONDS=0.001))
    assert raised.value.code == "clone_timeout"


async def test_clone_failed_for_a_missing_repository(tmp_path: Path) -> None:
    with pytest.raises(ScanFailure) as raised:
        await clone((tmp_path / "nowhere").as_uri(), None, tmp_path / "clone", settings=_settings())
    assert raised.value.code == "clone_failed"


def _urlmatch(env: dict[str, str], url: str) -> str:
    """The http.extraHeader git would use for `url` with this environment."""
    command = ["git", "config", "--get-urlmatch", "http.extraHeader", url]
    return subprocess.run(command, env=env, capture_output=True, text=True, check=False).stdout.strip()


async def test_token_goes_through_the_environment_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The token is an http.<origin>.extraHeader entry in GIT_CONFIG_*: never in argv, the URL,
    an error message or a log line. With resolved addresses, the host is pinned to them."""
    token = "ghp_SuperSecretToken0123456789abcdefABCD"
    calls: list[tuple[tuple[str, ...], dict[str, str]]] = []
    real_exec = asyncio.create_subprocess_exec

    async def recording_exec(*args: Any, **kwargs: Any) -> asyncio.subprocess.Process:
        calls.append((tuple(str(arg) for arg in args), dict(kwargs.get("env") or {})))
        return await real_exec(*args, **kwargs)

    monkeypatch.setattr(asyncio, "create_subprocess_exec", recording_exec)
    # Port 1 on loopback: refused at once, no network needed. The host name is never resolved:
    # curl is told its address.
    url = "https://git.example.test:1/acme/private.git"
    with structlog.testing.capture_logs() as logs, pytest.raises(ScanFailure) as raised:
        await clone(url, "main", tmp_path / "clone", settings=_settings(), token=token, resolve=("127.0.0.1",))
    assert raised.value.code == "clone_failed"
    assert token not in raised.value.message
    assert token not in repr(logs)
    assert calls
    for argv, env in calls:
        assert not any(token in arg for arg in argv)
        assert all(token not in value for value in env.values())  # only its base64 form is there
        assert "GIT_TERMINAL_PROMPT" in env
        assert env["GIT_CONFIG_NOSYSTEM"] == "1"
        assert env["HOME"] != os.environ.get("HOME")
    argv, env = calls[0]
    assert "protocol.allow=never" in argv
    assert "core.hooksPath=/dev/null" in argv
    assert "--depth" in argv
    assert "--no-tags" in argv
    config = {env[f"GIT_CONFIG_KEY_{i}"]: env[f"GIT_CONFIG_VALUE_{i}"] for i in range(int(env["GIT_CONFIG_COUNT"]))}
    header = config["http.https://git.example.test:1/.extraHeader"]
    assert base64.b64decode(header.removeprefix("Authorization: Basic ")).decode() == f"x-access-token:{token}"
    assert config["http.curloptResolve"] == "git.example.test:1:127.0.0.1"
    # Pinned: no DNS lookup of the host (git's own words are logged, never in the scan's error).
    assert any("Failed to connect" in str(event.get("detail")) for event in logs)
    # git applies the scoped header to the repository's URL (and to nothing on another host).
    assert _urlmatch(env, url) == header
    assert _urlmatch(env, "https://evil.example/x.git") == ""


# --- index -----------------------------------------------------------------------------------------


async def test_index_skip_reasons(repo: Repo, tmp_path: Path) -> None:
    big = "x = 1\n" * 400  # 2,400 bytes
    repo.commit(
        {
            "src/app.py": "print('hi')\n",
            "src/big.py": big,
            "node_modules/lib/index.js": "module.exports = 1\n",
            "vendor/github.com/x/y.go": "package y\n",
            "package-lock.json": "{}\n",
            "poetry.lock": "\n",
            "static/app.min.js": "var a=1;\n",
            "logo.png": b"\x89PNG....",
            "docs/guide.md": "text\n",
            "fixtures/data/sample.txt": "text\n",
            ".codepulse.yml": "exclude:\n  - docs/\n  - '**/data/**'\n",
        }
    )
    repo.symlink("link.py", "src/app.py")
    repo.commit()
    repo.add_gitlink("third", git(repo.root, "rev-parse", "HEAD"))
    dest = tmp_path / "clone"
    sha = await clone(repo.url, None, dest, settings=_settings())
    source = GitTreeSource(dest)
    raw_config = await source.config()

    async def exclude(paths: list[str]) -> frozenset[int]:
        return evaluate(raw_config, paths, 5.0).excluded

    index = await source.index(SkipRules(max_file_bytes=2048), exclude)
    assert index.commit_sha == sha
    assert sorted(entry.path for entry in index.entries) == [".codepulse.yml", "README.md", "src/app.py"]
    assert dict(index.skipped) == {
        "too_large": 1,
        "vendored": 2,
        "lock_file": 2,
        "minified": 1,
        "binary": 1,
        "excluded": 2,
        "symlink": 1,
        "submodule": 1,
    }
    assert index.files_total == 14
    entry = next(entry for entry in index.entries if entry.path == "src/app.py")
    assert entry.blob_sha == git_blob_sha(b"print('hi')\n") == git(repo.root, "rev-parse", "HEAD:src/app.py")
    contents = {item.path: content async for item, content in source.read(index.entries)}
    assert contents["src/app.py"] == b"print('hi')\n"


async def test_directory_source_hashes_like_git(repo: Repo) -> None:
    repo.commit({"a.py": "print(1)\n", "node_modules/x.js": "x\n", "b/c.txt": "c\n"})
    source = DirectorySource(repo.root)
    index = await source.index(SkipRules(max_file_bytes=1024))
    shas = {entry.path: entry.blob_sha for entry in index.entries}
    assert shas["a.py"] == git(repo.root, "rev-parse", "HEAD:a.py")
    assert shas["b/c.txt"] == git(repo.root, "rev-parse", "HEAD:b/c.txt")
    assert "node_modules/x.js" not in shas
    assert not any(path.startswith(".git/") for path in shas)


def test_content_rules() -> None:
    rules = SkipRules(max_file_bytes=1 << 20)
    assert rules.content_reason("a.txt", b"abc\0def") == "binary"
    assert rules.content_reason("app.js", b"var a=1;" * 200) == "minified"
    assert rules.content_reason("app.json", b"x" * 2000) is None  # one long line is fine outside JS/CSS
    assert rules.content_reason("app.js", b"var a = 1;\n" * 200) is None


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        ("*.snap", "a/b/c.snap", True),
        ("*.snap", "c.snap", True),
        ("docs/", "docs/a.md", True),
        ("docs", "sub/docs/a.md", True),
        ("/docs", "sub/docs/a.md", False),
        ("docs/*.md", "docs/a.md", True),
        ("docs/*.md", "docs/x/a.md", False),
        ("docs/**/*.md", "docs/x/y/a.md", True),
        ("docs/**/*.md", "docs/a.md", True),
        ("**/fixtures/**", "a/fixtures/b/c.py", True),
        ("test_?.py", "test_a.py", True),
        ("test_[ab].py", "test_c.py", False),
        ("src/*", "srcx/a", False),
    ],
)
def test_globs(pattern: str, path: str, matches: bool) -> None:
    assert bool(compile_glob(pattern).match(path)) is matches


def test_config_problems_are_warnings() -> None:
    assert parse_config(b"exclude: [a, b/]\n").exclude == ("a", "b/")
    assert parse_config(b"exclude: '*.snap'\n").exclude == ("*.snap",)
    assert parse_config(b"exclude: [1, ok]\n").warnings
    assert parse_config(b"{not yaml").warnings
    assert parse_config(b"- a list\n").warnings
    assert parse_config(b"!!python/object:os.system ls\n").warnings  # safe_load: no objects
    assert parse_config(None).exclude == ()
