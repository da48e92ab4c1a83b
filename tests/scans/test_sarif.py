"""SARIF 2.1.0: valid against the official schema, and what GitHub code scanning reads.

`sarif-schema-2.1.0.json` is the OASIS SARIF 2.1.0 (errata 01) schema, as published at
docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/ (copied from a PyPI package that
ships it, since tests have no network).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft4Validator

from codepulse.repositories.models import Repository
from codepulse.scans.engine import RawFinding, RuleInfo, available_engines, fingerprints
from codepulse.scans.models import Scan
from codepulse.scans.results import LocatedFinding
from codepulse.scans.sarif import FINGERPRINT_KEY, artifact_uri, build_sarif, public_repository_uri
from codepulse.scans.service import scanned_branch

SCHEMA = json.loads((Path(__file__).parent / "sarif-schema-2.1.0.json").read_text())


def _validate(document: dict[str, Any]) -> None:
    errors = sorted(Draft4Validator(SCHEMA).iter_errors(document), key=lambda error: list(error.path))
    assert not errors, "\n".join(f"{list(error.path)}: {error.message}" for error in errors[:10])


def _finding(
    rule_id: str, severity: str, path: str, line: int, engine: str = "secrets", confidence: str = "medium"
) -> LocatedFinding:
    raw = RawFinding(
        rule_id=rule_id,
        engine=engine,
        severity=severity,
        title=f"{rule_id} title",
        message=f"{rule_id} found",
        start_line=line,
        end_line=line,
        start_column=5,
        end_column=25,
        snippet="key = AKIA************",
        cwe="CWE-798",
        fingerprint_basis="basis",
        confidence=confidence,
    )
    return LocatedFinding(path=path, finding=raw, fingerprint=fingerprints(path, [raw])[0])


@pytest.fixture(scope="module")
def rules() -> list[RuleInfo]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # bandit's plugin loader (stevedore)
        return [rule for engine in available_engines().values() for rule in engine.rules()]


def test_schema_is_the_official_one() -> None:
    assert SCHEMA["id"] == "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
    assert SCHEMA["$schema"] == "http://json-schema.org/draft-04/schema#"


def test_valid_and_complete(rules: list[RuleInfo]) -> None:
    aws = next(rule for rule in rules if rule.id == "aws-access-key-id")
    findings = [
        _finding(aws.id, "high", "src/settings.py", 3),
        _finding(aws.id, "high", "docs/my notes/ünïcode file.md", 7),
        _finding("retired-rule", "info", "old.txt", 1, engine="legacy"),
    ]
    document = build_sarif(
        findings,
        rules,
        tool_version="0.1.0",
        automation_id="codepulse/repo-1/",
        repository_uri="https://github.com/acme/app",
        commit_sha="a" * 40,
        branch="main",
    )
    _validate(document)
    assert document["version"] == "2.1.0"
    run = document["runs"][0]
    driver = run["tool"]["driver"]
    assert (driver["name"], driver["version"]) == ("codepulse", "0.1.0")
    assert driver["informationUri"].startswith("https://")
    ids = [rule["id"] for rule in driver["rules"]]
    assert len(ids) == len(set(ids)) == len({rule.id for rule in rules}) + 1  # + the retired rule
    descriptor = driver["rules"][ids.index(aws.id)]
    assert descriptor["shortDescription"]["text"] == aws.title
    assert descriptor["fullDescription"]["text"]
    assert descriptor["help"]["text"]
    assert descriptor["help"]["markdown"]
    assert descriptor["defaultConfiguration"]["level"] == "error"
    assert descriptor["properties"]["security-severity"] == "8.0"
    assert "security" in descriptor["properties"]["tags"]
    assert "external/cwe/cwe-798" in descriptor["properties"]["tags"]
    assert descriptor["properties"]["precision"] == "high"
    assert descriptor["name"].isalnum()

    first, spaced, retired = run["results"]
    assert first["ruleId"] == aws.id
    assert driver["rules"][first["ruleIndex"]]["id"] == aws.id
    assert first["level"] == "error"
    assert first["message"]["text"]
    location = first["locations"][0]["physicalLocation"]
    assert location["artifactLocation"] == {"uri": "src/settings.py", "uriBaseId": "%SRCROOT%"}
    assert location["region"]["startLine"] == 3
    assert (location["region"]["startColumn"], location["region"]["endColumn"]) == (5, 25)
    assert first["partialFingerprints"] == {FINGERPRINT_KEY: findings[0].fingerprint}
    spaced_uri = spaced["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
    assert " " not in spaced_uri
    assert spaced_uri.startswith("docs/my%20notes/")
    assert retired["level"] == "note"
    retired_rule = driver["rules"][retired["ruleIndex"]]
    assert retired_rule["id"] == "retired-rule"
    assert "security-severity" not in retired_rule["properties"]  # info: no security severity
    assert run["automationDetails"] == {"id": "codepulse/repo-1/"}
    assert run["versionControlProvenance"][0]["revisionId"] == "a" * 40


def test_empty_scan_is_valid(rules: list[RuleInfo]) -> None:
    document = build_sarif([], rules, tool_version="0.1.0")
    _validate(document)
    assert document["runs"][0]["results"] == []


def test_regions_are_kept_consistent() -> None:
    finding = _finding("r", "medium", "a.py", 0)
    object.__setattr__(finding.finding, "end_column", 1)
    document = build_sarif([finding], [], tool_version="0.1.0")
    _validate(document)
    region = document["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["region"]
    assert region["startLine"] == region["endLine"] == 1
    assert region["endColumn"] >= region["startColumn"]


@pytest.mark.parametrize(
    ("path", "uri"), [("a/b.py", "a/b.py"), ("a\\b.py", "a/b.py"), ("/abs.py", "abs.py"), ("x#y?.py", "x%23y%3F.py")]
)
def test_artifact_uri(path: str, uri: str) -> None:
    assert artifact_uri(path) == uri


def test_dismissed_findings_are_suppressed_with_their_reason() -> None:
    findings = [
        _finding("aws-access-key-id", "high", "a.py", 1, confidence="high"),
        _finding("aws-access-key-id", "high", "b.py", 1),
        _finding("bandit.B608", "low", "c.py", 1, engine="python", confidence="low"),
    ]
    dismissed = {findings[1].fingerprint: "A test fixture.", findings[2].fingerprint: None}
    document = build_sarif(findings, [], tool_version="0.1.0", dismissed=dismissed)
    _validate(document)
    kept, fixture, without_reason = document["runs"][0]["results"]
    assert "suppressions" not in kept
    assert fixture["suppressions"] == [{"kind": "external", "status": "accepted", "justification": "A test fixture."}]
    assert without_reason["suppressions"] == [{"kind": "external", "status": "accepted"}]
    assert [result["properties"]["confidence"] for result in (kept, fixture, without_reason)] == [
        "high",
        "medium",
        "low",
    ]


def test_provenance_names_the_repository_without_credentials() -> None:
    document = build_sarif(
        [],
        [],
        tool_version="0.1.0",
        repository_uri="https://bot:s3cret@github.com:8443/acme/app?token=x#frag",
        commit_sha="b" * 40,
        branch="release/1.x",
    )
    _validate(document)
    assert document["runs"][0]["versionControlProvenance"] == [
        {"repositoryUri": "https://github.com:8443/acme/app", "revisionId": "b" * 40, "branch": "release/1.x"}
    ]
    assert "versionControlProvenance" not in build_sarif([], [], tool_version="0.1.0", commit_sha="b" * 40)["runs"][0]


@pytest.mark.parametrize(
    ("url", "public"),
    [
        ("https://github.com/acme/app", "https://github.com/acme/app"),
        ("https://x-access-token:ghs_abc@github.com/acme/app.git", "https://github.com/acme/app.git"),
        ("ssh://git@[::1]:2222/srv/app", "ssh://[::1]:2222/srv/app"),
        ("file:///srv/git/app", "file:///srv/git/app"),
        ("git@github.com:acme/app.git", "git@github.com:acme/app.git"),  # not a URL: left alone
    ],
)
def test_public_repository_uri(url: str, public: str) -> None:
    assert public_repository_uri(url) == public


@pytest.mark.parametrize(
    ("ref", "default_branch", "branch"),
    [
        (None, "main", "main"),
        (None, None, None),  # the remote's HEAD, name unknown
        ("release/1.x", "main", "release/1.x"),
        ("refs/heads/topic", None, "topic"),
        ("refs/tags/v1.0", None, None),
        ("c0ffee1", None, None),  # the commit itself
    ],
)
def test_scanned_branch(ref: str | None, default_branch: str | None, branch: str | None) -> None:
    scan = Scan(ref=ref, ref_key="" if ref is None else ref, commit_sha="c0ffee1" + "0" * 33)
    assert scanned_branch(scan, Repository(default_branch=default_branch)) == branch
