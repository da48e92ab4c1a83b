"""`codepulse scan PATH_OR_URL`: formats, --fail-on exit codes, directories and URLs, no server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from jsonschema import Draft4Validator
from typer.testing import CliRunner

from codepulse.cli import app as cli
from tests.scans.gitrepo import AWS_KEY, Repo

SCHEMA = json.loads((Path(__file__).parent / "sarif-schema-2.1.0.json").read_text())
runner = CliRunner()


@pytest.fixture(autouse=True)
def _restore_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The command points structlog at stderr; give the other tests theirs back."""
    for name in list(os.environ):
        if name.startswith("SCAN_"):
            monkeypatch.delenv(name)
    config = structlog.get_config()
    yield
    structlog.configure(**config)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Repo:
    repository = Repo(tmp_path_factory.mktemp("cli") / "project")
    repository.commit({"README.md": "hello\n"})
    repository.tag("clean")
    repository.commit(
        {
            "config/settings.py": f'AWS_KEY_ID = "{AWS_KEY}"\n',
            "tools/run.py": "import subprocess\nsubprocess.call(cmd, shell=True)\n",
            ".gitignore": "local.env\n",
        }
    )
    (repository.root / "local.env").write_text(f"AWS_KEY_ID={AWS_KEY}\n")  # ignored by git: not scanned
    (repository.root / "draft.txt").write_text(f"key {AWS_KEY}\n")  # untracked, not ignored: scanned
    return repository


def _scan(*args: str) -> Any:
    return runner.invoke(cli, ["scan", *args], catch_exceptions=False)


def test_table(repo: Repo) -> None:
    result = _scan(str(repo.root), "--processes", "1")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert any(
        line.startswith("config/settings.py:1 ") and "high" in line and "aws-access-key-id" in line for line in lines
    )
    assert any(line.startswith("draft.txt:1 ") for line in lines)
    assert not any(line.startswith("local.env") for line in lines)
    assert "finding" in lines[-1]
    assert AWS_KEY not in result.stdout


def test_json_and_fail_on(repo: Repo) -> None:
    result = _scan(str(repo.root), "--format", "json", "--fail-on", "high", "--engine", "secrets", "--processes", "1")
    assert result.exit_code == 1
    document = json.loads(result.stdout)  # nothing but the report on stdout
    paths = sorted(finding["path"] for finding in document["findings"])
    assert paths == ["config/settings.py", "draft.txt"]
    assert {finding["engine"] for finding in document["findings"]} == {"secrets"}
    assert document["summary"]["by_severity"]["high"] == 2
    assert document["commit_sha"]
    assert all(finding["fingerprint"] for finding in document["findings"])
    assert all(finding["confidence"] in ("high", "medium", "low") for finding in document["findings"])

    assert _scan(str(repo.root), "-f", "json", "--fail-on", "critical", "-e", "secrets").exit_code == 0


def test_sarif_to_a_file(repo: Repo, tmp_path: Path) -> None:
    output = tmp_path / "report.sarif"
    result = _scan(str(repo.root), "--format", "sarif", "--output", str(output), "--processes", "1")
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    document = json.loads(output.read_text())
    assert not list(Draft4Validator(SCHEMA).iter_errors(document))
    uris = {r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] for r in document["runs"][0]["results"]}
    assert "config/settings.py" in uris


def test_url_with_ref(repo: Repo) -> None:
    clean = _scan(repo.url, "--ref", "clean", "--fail-on", "low", "-f", "json")
    assert clean.exit_code == 0, clean.output
    assert json.loads(clean.stdout)["findings"] == []
    head = _scan(repo.url, "--fail-on", "high", "-f", "json")
    assert head.exit_code == 1
    paths = {finding["path"] for finding in json.loads(head.stdout)["findings"]}
    assert "config/settings.py" in paths
    assert "draft.txt" not in paths  # a clone holds only what was committed


def test_plain_directory_and_single_file(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "keys.txt").write_text(f"{AWS_KEY}\n")
    (tmp_path / "node_modules").mkdir()
    (tmp_path / "node_modules" / "dep.js").write_text(f"'{AWS_KEY}'\n")
    result = _scan(str(tmp_path), "-f", "json", "-e", "secrets")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert [finding["path"] for finding in document["findings"]] == ["src/keys.txt"]
    assert document["commit_sha"] is None
    single = _scan(str(tmp_path / "src" / "keys.txt"), "-f", "json", "-e", "secrets")
    assert [finding["path"] for finding in json.loads(single.stdout)["findings"]] == ["keys.txt"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["/does/not/exist"], "no such file"),
        (["{repo}", "--ref", "main"], "--ref applies to URLs"),
        (["{repo}", "--engine", "semgrep"], "unknown or unavailable engine"),
        (["{url}", "--ref", "no-such-branch"], "ref_not_found"),
    ],
)
def test_errors_exit_2(repo: Repo, args: list[str], message: str) -> None:
    result = _scan(*[arg.format(repo=repo.root, url=repo.url) for arg in args])
    assert result.exit_code == 2
    assert message in result.stderr


@pytest.mark.parametrize("args", [["--format", "xml"], ["--fail-on", "severe"], []])
def test_usage_errors_exit_2(repo: Repo, args: list[str]) -> None:
    result = runner.invoke(cli, ["scan", *([str(repo.root)] if args else []), *args])
    assert result.exit_code == 2


def test_runs_without_a_server(repo: Repo, tmp_path: Path) -> None:
    """A real process: no FastAPI app imported, stdout holds the JSON only, and unrelated
    codepulse settings in the environment (a CI's DATABASE_URL) do not matter."""
    code = (
        "import sys\n"
        "from codepulse.cli import main\n"
        "sys.argv = ['codepulse', 'scan', sys.argv[1], '-f', 'json', '-e', 'secrets', '--processes', '1']\n"
        "try:\n"
        "    main()\n"
        "finally:\n"
        "    assert 'fastapi' not in sys.modules and 'codepulse.app' not in sys.modules, 'server imported'\n"
    )
    env = {**os.environ, "DATABASE_URL": "postgres://not-supported", "PORT": "not-a-port"}
    completed = subprocess.run(
        [sys.executable, "-c", code, str(repo.root)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )
    assert completed.returncode == 0, completed.stderr
    assert "server imported" not in completed.stderr
    assert len(json.loads(completed.stdout)["findings"]) == 2
    assert not (tmp_path / "var").exists()  # no secret key generated, no database created


def test_scan_settings_come_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "big.txt").write_text(f"{AWS_KEY}\n" + "x" * 3000)
    monkeypatch.setenv("SCAN_MAX_FILE_BYTES", "2048")
    result = _scan(str(tmp_path), "-f", "json", "-e", "secrets")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["findings"] == []
    assert document["summary"]["skipped"] == {"too_large": 1}

    monkeypatch.setenv("SCAN_MAX_FILE_BYTES", "a lot")
    result = _scan(str(tmp_path))
    assert result.exit_code == 2
    assert "SCAN_MAX_FILE_BYTES" in result.stderr
