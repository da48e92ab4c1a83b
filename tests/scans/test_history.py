"""The history walk of a real repository made by the test: every file version once with the
commit that introduced it (deleted files, merges, a version kept across commits and paths), and
the scanned commit's own files."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
import structlog
from typer.testing import CliRunner, Result

from codepulse.cli import app as cli
from codepulse.scans.errors import ScanFailure
from codepulse.scans.git import git_environment
from codepulse.scans.history import head_blobs, history_blobs, parse_log
from tests.scans.gitrepo import AWS_KEY, Repo, git


def blob_of(repo: Repo, commit: str, path: str) -> str:
    return git(repo.root, "rev-parse", f"{commit}:{path}")


async def test_every_version_once_with_the_commit_that_introduced_it(tmp_path: Path) -> None:
    repo = Repo(tmp_path / "repo")
    first = repo.commit({"app.py": "print('hello')\n", "README.md": "# app\n"}, "start")
    leaked = repo.commit({"settings.py": f"AWS_KEY = '{AWS_KEY}'\n"}, "add settings")
    git(repo.root, "rm", "-q", "settings.py")
    removed = repo.commit(message="remove the key")
    repo.branch("feature")
    on_branch = repo.commit({"feature.py": "x = 1\n", "copy.md": "# app\n"}, "feature")  # README's blob again
    repo.checkout("main")
    changed = repo.commit({"app.py": "print('hello, world')\n"}, "change app")
    git(repo.root, "merge", "-q", "--no-edit", "feature")
    merge = git(repo.root, "rev-parse", "HEAD")

    found = await history_blobs(repo.root, ["HEAD"], env=git_environment())
    by_path_and_blob = {(item.path, item.blob_sha): item.introduced.commit_sha for item in found}
    assert by_path_and_blob == {
        ("app.py", blob_of(repo, first, "app.py")): first,
        ("README.md", blob_of(repo, first, "README.md")): first,
        ("settings.py", blob_of(repo, leaked, "settings.py")): leaked,  # deleted since: still found
        ("feature.py", blob_of(repo, on_branch, "feature.py")): on_branch,
        ("copy.md", blob_of(repo, on_branch, "copy.md")): on_branch,
        ("app.py", blob_of(repo, changed, "app.py")): changed,
    }
    assert removed not in by_path_and_blob.values()  # a deletion introduces nothing
    assert len({item.blob_sha for item in found}) == 5  # README.md and copy.md share one blob
    settings = next(item for item in found if item.path == "settings.py")
    assert settings.introduced.author == "Test"
    assert isinstance(settings.introduced.authored_at, datetime)
    assert settings.introduced.authored_at.tzinfo is not None

    head = await head_blobs(repo.root, merge, env=git_environment())
    assert set(head) == {"app.py", "README.md", "feature.py", "copy.md"}
    assert head["app.py"] == blob_of(repo, changed, "app.py")
    assert "settings.py" not in head  # only in the history: rotate it


async def test_only_the_history_of_the_refs_asked_for(tmp_path: Path) -> None:
    repo = Repo(tmp_path / "repo")
    repo.commit({"a.txt": "a\n"})
    repo.branch("other")
    repo.commit({"b.txt": "b\n"})
    repo.checkout("main")
    on_main = {item.path for item in await history_blobs(repo.root, ["main"], env=git_environment())}
    everywhere = {item.path for item in await history_blobs(repo.root, ["--all"], env=git_environment())}
    assert on_main == {"a.txt"}
    assert everywhere == {"a.txt", "b.txt"}


async def test_symlinks_and_submodules_are_not_file_versions(tmp_path: Path) -> None:
    repo = Repo(tmp_path / "repo")
    base = repo.commit({"real.txt": "data\n"})
    repo.symlink("link.txt", "real.txt")
    repo.commit(message="a link")
    repo.add_gitlink("vendor/lib", base)
    found = {item.path for item in await history_blobs(repo.root, ["HEAD"], env=git_environment())}
    assert found == {"real.txt"}


async def test_a_history_git_cannot_read_is_a_scan_failure(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ScanFailure) as raised:
        await history_blobs(tmp_path / "empty", ["HEAD"], env=git_environment())
    assert raised.value.code == "clone_failed"


def test_odd_log_output_is_skipped_not_fatal() -> None:
    sha = "a" * 40
    blob = "b" * 40
    output = (
        b"\x01" + sha.encode() + b"\0Ann\0not a date\0\n:000000 100644 " + b"0" * 40 + b" " + blob.encode()
        + b" A\0lost.txt\0"  # a commit whose date cannot be read: its files have no introduction
        + b"\x01" + sha.encode() + b"\0Ann\x002026-12-01T10:00:00+01:00\0\n:000000 100644 " + b"0" * 40 + b" "
        + blob.encode() + b" A\0w\x01ird\nname.txt\0"  # any byte but NUL in a path
        + b":garbage\0path\0"
    )  # fmt: skip
    found = parse_log(output)
    assert [(item.path, item.blob_sha) for item in found] == [("w\x01ird\nname.txt", blob)]


# --- `codepulse scan --history` -------------------------------------------------------------------


def _scan(*args: str) -> Result:
    return CliRunner().invoke(cli, ["scan", *args], catch_exceptions=False)


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """The command points structlog at stderr; give the other tests theirs back."""
    config = structlog.get_config()
    yield
    structlog.configure(**config)


def test_the_command_finds_a_secret_deleted_from_head_and_says_where_it_came_in(tmp_path: Path) -> None:
    repo = Repo(tmp_path / "project")
    repo.commit({"README.md": "hello\n"}, "start")
    leaked = repo.commit({"config/settings.py": f'AWS_KEY_ID = "{AWS_KEY}"\n'}, "add the key")
    repo.commit({"config/settings.py": f'# keys\nAWS_KEY_ID = "{AWS_KEY}"\nDEBUG = True\n'}, "edit around it")
    git(repo.root, "rm", "-q", "config/settings.py")
    repo.commit(message="remove the key")
    still = repo.commit({"deploy.env": f"AWS_KEY_ID={AWS_KEY}\n"}, "a copy that stays")

    head_only = _scan(str(repo.root), "--format", "json", "--engine", "secrets", "--processes", "1")
    assert [finding["path"] for finding in json.loads(head_only.stdout)["findings"]] == ["deploy.env"]

    done = _scan(str(repo.root), "--history", "--format", "json", "--engine", "secrets", "--processes", "1")
    assert done.exit_code == 0, done.output
    findings = {finding["path"]: finding for finding in json.loads(done.stdout)["findings"]}
    # Two versions of settings.py hold the key at the same place in the file: one finding, the older.
    assert sorted(findings) == ["config/settings.py", "deploy.env"]
    gone = findings["config/settings.py"]
    assert gone["introduced"]["commit_sha"] == leaked
    assert gone["introduced"]["author"] == "Test"
    assert gone["at_head"] is False
    assert findings["deploy.env"]["introduced"]["commit_sha"] == still
    assert findings["deploy.env"]["at_head"] is True

    sarif = _scan(str(repo.root), "--history", "--format", "sarif", "--engine", "secrets", "--processes", "1")
    results = {
        r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]: r
        for r in json.loads(sarif.stdout)["runs"][0]["results"]
    }
    assert results["config/settings.py"]["properties"]["introducedIn"]["commitSha"] == leaked
    assert results["config/settings.py"]["properties"]["atHead"] is False
    assert results["deploy.env"]["properties"]["atHead"] is True
    # Provenance from the work tree: its origin (credentials dropped) and branch.
    git(repo.root, "remote", "add", "origin", "https://user:pw@git.example.com/team/project.git")
    again = _scan(str(repo.root), "--format", "sarif", "--engine", "secrets", "--processes", "1")
    [provenance] = json.loads(again.stdout)["runs"][0]["versionControlProvenance"]
    assert provenance["repositoryUri"] == "https://git.example.com/team/project.git"
    assert provenance["branch"] == "main"
    assert provenance["revisionId"] == still

    table = _scan(str(repo.root), "--history", "--engine", "secrets", "--processes", "1")
    assert f"since {leaked[:12]}" in table.stdout
    assert "only in history: rotate it" in table.stdout
    assert "still at HEAD" in table.stdout
    assert AWS_KEY not in table.stdout


def test_history_needs_a_local_repository(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "a.txt").write_text("x\n")
    done = _scan(str(plain), "--history")
    assert done.exit_code == 2
    assert "not in a Git repository" in done.output
    single = _scan(str(plain / "a.txt"), "--history")
    assert single.exit_code == 2
    assert "give its directory" in single.output
