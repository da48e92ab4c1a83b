"""Which findings a scan keeps: the default profile, `.codepulse.yml` `rules:`, one finding per secret."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from codepulse.config import Settings
from codepulse.scans.cache import MemoryCache
from codepulse.scans.engine import RawFinding
from codepulse.scans.pipeline import scan_repository
from codepulse.scans.pool import EnginePool
from codepulse.scans.repoconfig import MAX_RULE_ENTRIES, evaluate, parse_config
from codepulse.scans.results import LocatedFinding, PipelineResult
from codepulse.scans.ruleset import DEFAULT_RULES, RuleOverrides, RuleSet, normalise_rule_id, one_finding_per_secret
from tests.scans.gitrepo import AWS_KEY, Repo


def _found(
    rule_id: str, engine: str, line: int, *, end_line: int | None = None, path: str = "app.py", **fields: Any
) -> LocatedFinding:
    raw = RawFinding(
        rule_id=rule_id,
        engine=engine,
        severity=fields.pop("severity", "medium"),
        title=rule_id,
        message=rule_id,
        start_line=line,
        end_line=end_line or line,
        start_column=1,
        end_column=10,
        snippet="x",
        cwe=None,
        fingerprint_basis="basis",
        **fields,
    )
    return LocatedFinding(path=path, finding=raw, fingerprint=f"{path}:{rule_id}:{line}")


def _rules(found: list[LocatedFinding]) -> list[tuple[str, int]]:
    return [(f.rule_id, f.start_line) for f in found]


# --- one finding per secret ------------------------------------------------------------------------


def test_a_secret_hides_bandits_hard_coded_password_on_its_line() -> None:
    findings = [
        _found("aws-access-key-id", "secrets", 3),
        _found("bandit.B105", "python", 3),
        _found("bandit.B106", "python", 5),  # no secret on line 5
        _found("bandit.B602", "python", 3),  # not a password finding
        _found("private-key", "secrets", 10, end_line=14),
        _found("bandit.B107", "python", 12),  # inside the private key's lines
        _found("bandit.B105", "python", 3, path="other.py"),  # another file
    ]
    assert _rules(one_finding_per_secret(findings)) == [
        ("aws-access-key-id", 3),
        ("bandit.B106", 5),
        ("bandit.B602", 3),
        ("private-key", 10),
        ("bandit.B105", 3),
    ]
    assert one_finding_per_secret(findings)[-1].path == "other.py"


def test_without_secrets_every_finding_stays() -> None:
    findings = [_found("bandit.B105", "python", 3), _found("bandit.B106", "python", 3)]
    assert one_finding_per_secret(findings) == findings
    assert one_finding_per_secret([]) == []


# --- the default profile and overrides ------------------------------------------------------------


def test_default_profile_hides_assert_and_low_confidence_bandit_results() -> None:
    findings = [
        _found("bandit.B101", "python", 1, confidence="high"),
        _found("bandit.B608", "python", 2, confidence="low"),
        _found("bandit.B602", "python", 3, confidence="medium"),
        _found("generic-api-key", "secrets", 4, confidence="low"),
        _found("aws-access-key-id", "secrets", 5, confidence="high"),
    ]
    assert _rules(DEFAULT_RULES.apply(findings)) == [
        ("bandit.B602", 3),
        ("generic-api-key", 4),
        ("aws-access-key-id", 5),
    ]


def test_overrides_turn_rules_on_and_off_and_set_severity() -> None:
    findings = [
        _found("bandit.B101", "python", 1, confidence="high"),
        _found("bandit.B608", "python", 2, confidence="low"),
        _found("bandit.B602", "python", 3),
        _found("generic-api-key", "secrets", 4, confidence="low"),
    ]
    overrides = RuleOverrides(
        enable=("bandit.B101", "bandit.B602"),
        disable=("bandit.B602",),  # disable wins
        severity=(("bandit.B101", "high"),),
        min_confidence="low",
    )
    kept = DEFAULT_RULES.with_overrides(overrides).apply(findings)
    assert _rules(kept) == [("bandit.B101", 1), ("bandit.B608", 2), ("generic-api-key", 4)]
    assert kept[0].severity == "high"
    assert kept[0].fingerprint == findings[0].fingerprint
    assert findings[0].severity == "medium"  # the input is not changed
    stricter = DEFAULT_RULES.with_overrides(RuleOverrides(min_confidence="medium")).apply(findings)
    assert _rules(stricter) == [("bandit.B602", 3)]  # every engine, secrets included


def test_a_rule_set_is_described_canonically() -> None:
    assert DEFAULT_RULES.describe() == {
        "disabled": ["bandit.B101"],
        "severity": {},
        "min_confidence": {"python": "medium"},
        "min_confidence_default": "low",
    }
    assert DEFAULT_RULES.with_overrides(RuleOverrides()) == DEFAULT_RULES
    assert RuleSet().keeps("anything", "any", "unknown")


@pytest.mark.parametrize(("written", "rule"), [("B101", "bandit.B101"), (" bandit.B101 ", "bandit.B101"), ("x", "x")])
def test_rule_ids_are_normalised(written: str, rule: str) -> None:
    assert normalise_rule_id(written) == rule


# --- .codepulse.yml rules: ------------------------------------------------------------------------


def test_rules_are_parsed() -> None:
    config = parse_config(
        b"""\
exclude: fixtures/
rules:
  enable: [B101, bandit.B101]
  disable: generic-api-key
  severity: {B105: HIGH, aws-access-key-id: low}
  min_confidence: Low
"""
    )
    assert config.warnings == ()
    assert config.exclude == ("fixtures/",)
    assert config.rules == RuleOverrides(
        enable=("bandit.B101",),
        disable=("generic-api-key",),
        severity=(("aws-access-key-id", "low"), ("bandit.B105", "high")),
        min_confidence="low",
    )
    assert parse_config(b"exclude: [a]\n").rules == RuleOverrides()


def test_invalid_rules_are_warnings_and_the_rest_applies() -> None:
    config = parse_config(
        b"""\
exclude: 7
rules:
  enable: [B101, 7, "bad id!", {a: 1}]
  disable: {B602: yes}
  severity: {B105: urgent, B106: [high], 8: low, B107: low}
  min_confidence: sometimes
  disabel: [B311]
"""
    )
    assert config.rules == RuleOverrides(enable=("bandit.B101",), severity=(("bandit.B107", "low"),))
    assert list(config.warnings) == [
        ".codepulse.yml `exclude` must be a list of globs; ignored",
        ".codepulse.yml `rules`: unknown key `disabel` (expected enable, disable, severity, min_confidence); ignored",
        ".codepulse.yml `rules.enable` entry 2: a number, not a rule id; ignored",
        ".codepulse.yml `rules.enable` entry 3: not a rule id (letters, digits and . _ : / - only); ignored",
        ".codepulse.yml `rules.enable` entry 4: a mapping, not a rule id; ignored",
        ".codepulse.yml `rules.disable` must be a list of rule ids; ignored",
        ".codepulse.yml `rules.severity` for `bandit.B105`: `urgent` is not one of critical, high, medium, low, "
        "info; ignored",
        ".codepulse.yml `rules.severity` for `bandit.B106`: a list is not one of critical, high, medium, low, "
        "info; ignored",
        ".codepulse.yml `rules.severity` entry 3: a number, not a rule id; ignored",
        ".codepulse.yml `rules.min_confidence`: `sometimes` is not one of high, medium, low; ignored",
    ]
    assert parse_config(b"rules: [B101]\n").warnings == (".codepulse.yml `rules` must be a mapping; ignored",)


def test_rule_lists_are_capped() -> None:
    ids = ", ".join(f"r{i}" for i in range(MAX_RULE_ENTRIES + 5))
    config = parse_config(f"rules: {{disable: [{ids}]}}\n".encode())
    assert len(config.rules.disable) == MAX_RULE_ENTRIES
    assert config.warnings == (f".codepulse.yml `rules.disable`: only the first {MAX_RULE_ENTRIES} rule ids are used",)


def test_rules_travel_with_the_exclusions_from_the_engine_process() -> None:
    raw = b"exclude: ['*.snap']\nrules: {enable: [B101]}\n"
    outcome = evaluate(raw, ["a.snap", "a.py"], budget=5.0)
    assert outcome.excluded == frozenset({0})
    assert outcome.rules == RuleOverrides(enable=("bandit.B101",))
    assert evaluate(b"rules: {enable: [B101]}\n", ["a.py"], budget=5.0).rules.enable == ("bandit.B101",)


# --- through the pipeline --------------------------------------------------------------------------

APP = f"""\
import subprocess

token = "{AWS_KEY}"
assert token
query = "SELECT * FROM users WHERE id = '%s'" % uid
subprocess.call("ls " + name, shell=True)
"""  # noqa: S608 - what bandit must find


@pytest.fixture(scope="module")
def pool() -> Iterator[EnginePool]:
    with EnginePool(processes=1) as engine_pool:
        if "python" not in engine_pool.engines:  # pragma: no cover - bandit is a dev dependency
            pytest.skip("bandit is not installed")
        yield engine_pool


async def _scan(url: str, pool: EnginePool, cache: MemoryCache) -> PipelineResult:
    settings = Settings.model_construct().model_copy(update={"ALLOW_LOCAL_REPOSITORIES": True})
    return await scan_repository(url, None, settings=settings, cache=cache, progress=None, cancelled=None, pool=pool)


async def test_the_profile_and_the_repository_rules_apply_after_the_cache(tmp_path: Path, pool: EnginePool) -> None:
    repo = Repo(tmp_path / "origin")
    repo.commit({"app.py": APP})
    cache = MemoryCache()
    first = await _scan(repo.url, pool, cache)
    by_line = {f.start_line: f for f in first.findings}
    # One finding for the secret (bandit's B105 on its line dropped); no B101, no low-confidence B608.
    assert [(f.rule_id, f.start_line) for f in first.findings] == [
        ("bandit.B404", 1),
        ("aws-access-key-id", 3),
        ("bandit.B602", 6),
    ]

    repo.commit({".codepulse.yml": "rules:\n  enable: [B101]\n  min_confidence: low\n  severity: {B602: critical}\n"})
    second = await _scan(repo.url, pool, cache)
    assert second.cache_hits == 1  # app.py's results came from the cache: rules apply after it
    assert second.warnings == []
    assert [(f.rule_id, f.start_line) for f in second.findings] == [
        ("bandit.B404", 1),
        ("aws-access-key-id", 3),
        ("bandit.B101", 4),
        ("bandit.B608", 5),
        ("bandit.B602", 6),
    ]
    shell = next(f for f in second.findings if f.rule_id == "bandit.B602")
    assert shell.severity == "critical"
    # Turning rules on moves no other finding's fingerprint.
    assert {f.start_line: f.fingerprint for f in second.findings if f.start_line in by_line} == {
        line: f.fingerprint for line, f in by_line.items()
    }

    repo.commit({".codepulse.yml": "rules: {disable: [aws-access-key-id]}\n"})
    third = await _scan(repo.url, pool, cache)
    # The secret's finding off: bandit's own hard-coded password finding is the one left.
    assert [(f.rule_id, f.start_line) for f in third.findings] == [
        ("bandit.B404", 1),
        ("bandit.B105", 3),
        ("bandit.B602", 6),
    ]
