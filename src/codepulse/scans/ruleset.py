"""Which findings a scan keeps: the default profile, a repository's overrides, one finding per secret.

Engines report everything they find: their results are cached per blob and engine version,
whatever a repository's configuration says. What a scan keeps is decided afterwards, per file, in
the pipeline (`pipeline._Pipeline._locate`): `RuleSet.apply`, then `one_finding_per_secret`.
Fingerprints are computed before, over everything the engines reported, so turning a rule on or
off never changes another finding's fingerprint.

The default profile (`DEFAULT_RULES`), what a team keeps on:

- bandit's `B101` (assert used) is off. bandit flags every `assert`, and most are invariants and
  test checks, not access control; only an assert that guards security matters (`python -O` strips
  it), and those are rare and found in review. Left on, B101 is the largest group of findings in
  most Python repositories, and teams learn to skip the list.
- bandit results of low confidence are hidden (bandit says itself it is probably wrong: an SQL
  string built with `%`, ...).
- secrets are all kept, generic (low-confidence) rules included: a leaked secret is worth a false
  positive.

A repository's `.codepulse.yml` changes it (parsed, with its warnings, in `repoconfig`):

    rules:
      enable: [B101]                       # bandit test ids may omit the `bandit.` prefix
      disable: [bandit.B311, generic-api-key]
      severity: {bandit.B105: high}        # critical, high, medium, low or info
      min_confidence: low                  # every engine: low shows everything

`disable` wins over `enable`. The effective rule set is part of what a scan's results depend on:
the profile (`DEFAULT_RULES.describe()`) is in the worker's pipeline signature; a repository's
overrides are in its commit (the file is read from the scanned tree), so changing them changes the
commit, which a re-scan never reuses.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from codepulse.scans.engine.base import CONFIDENCES
from codepulse.scans.results import LocatedFinding

CONFIDENCE_RANK: Final = {name: rank for rank, name in enumerate(reversed(CONFIDENCES))}
"""low=0, medium=1, high=2; an unknown confidence counts as medium."""
SECRETS_ENGINE: Final = "secrets"
HARDCODED_PASSWORD_RULES: Final = frozenset({"bandit.B105", "bandit.B106", "bandit.B107"})
"""bandit's hard-coded password tests (string, function argument, default argument)."""
_BANDIT_TEST_ID = re.compile(r"B\d{3}")


def normalise_rule_id(rule_id: str) -> str:
    """A rule id as written in `.codepulse.yml`: a bare bandit test id (`B101`) gets its prefix."""
    rule_id = rule_id.strip()
    return f"bandit.{rule_id}" if _BANDIT_TEST_ID.fullmatch(rule_id) else rule_id


@dataclass(frozen=True)
class RuleOverrides:
    """What a repository's `.codepulse.yml` `rules:` asks for (validated, rule ids normalised)."""

    enable: tuple[str, ...] = ()
    disable: tuple[str, ...] = ()
    severity: tuple[tuple[str, str], ...] = ()
    """(rule id, severity) pairs."""
    min_confidence: str | None = None
    """One of CONFIDENCES, for every engine; None keeps the profile's."""


@dataclass(frozen=True)
class RuleSet:
    """The rules a scan applies: the ones turned off, severity overrides, and the lowest
    confidence kept per engine (`min_confidence_default` for engines not named)."""

    disabled: frozenset[str] = frozenset()
    severity: Mapping[str, str] = field(default_factory=dict)
    min_confidence: Mapping[str, str] = field(default_factory=dict)
    min_confidence_default: str = "low"

    def with_overrides(self, overrides: RuleOverrides) -> RuleSet:
        """This profile with a repository's overrides applied."""
        disabled = (self.disabled - set(overrides.enable)) | set(overrides.disable)
        severity = {**self.severity, **dict(overrides.severity)}
        if overrides.min_confidence is None:
            return RuleSet(frozenset(disabled), severity, dict(self.min_confidence), self.min_confidence_default)
        return RuleSet(frozenset(disabled), severity, {}, overrides.min_confidence)

    def keeps(self, rule_id: str, engine: str, confidence: str) -> bool:
        if rule_id in self.disabled:
            return False
        floor = self.min_confidence.get(engine, self.min_confidence_default)
        return CONFIDENCE_RANK.get(confidence, CONFIDENCE_RANK["medium"]) >= CONFIDENCE_RANK[floor]

    def apply(self, findings: Sequence[LocatedFinding]) -> list[LocatedFinding]:
        """The findings this rule set keeps, with their severity overridden where it says so."""
        kept: list[LocatedFinding] = []
        for found in findings:
            if not self.keeps(found.rule_id, found.engine, found.finding.confidence):
                continue
            severity = self.severity.get(found.rule_id)
            if severity is not None and severity != found.severity:
                found = dataclasses.replace(found, finding=dataclasses.replace(found.finding, severity=severity))
            kept.append(found)
        return kept

    def describe(self) -> dict[str, Any]:
        """JSON-ready and canonical: what goes in a pipeline signature."""
        return {
            "disabled": sorted(self.disabled),
            "severity": dict(sorted(self.severity.items())),
            "min_confidence": dict(sorted(self.min_confidence.items())),
            "min_confidence_default": self.min_confidence_default,
        }


DEFAULT_RULES: Final = RuleSet(disabled=frozenset({"bandit.B101"}), min_confidence={"python": "medium"})
"""The default profile (see the module docstring for why)."""


def one_finding_per_secret(findings: Sequence[LocatedFinding]) -> list[LocatedFinding]:
    """Drop bandit's hard-coded password findings (B105/B106/B107) that start on a line of the same
    file where the secrets engine reported a secret: the secret is reported once, by the engine
    that knows what it is. Everything else is kept, in order."""
    secret_lines: set[tuple[str, int]] = set()
    for found in findings:
        if found.engine == SECRETS_ENGINE:
            secret_lines.update((found.path, line) for line in range(found.start_line, found.end_line + 1))
    if not secret_lines:
        return list(findings)
    return [
        found
        for found in findings
        if found.rule_id not in HARDCODED_PASSWORD_RULES or (found.path, found.start_line) not in secret_lines
    ]
