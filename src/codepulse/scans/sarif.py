"""SARIF 2.1.0 for a scan's findings, as GitHub code scanning reads it.

One run; `tool.driver` names codepulse and lists the rules (id, name, short and full
description, help as text and Markdown, `security-severity`, tags, precision, the default level);
each result carries its rule id and index, level, message, a relative `%SRCROOT%` location with
a region, `partialFingerprints["codepulseFingerprint/v1"]` so alerts follow a finding when
lines move, and `properties` (severity, confidence; for a history scan's finding the commit
that introduced it and whether the scanned commit still has it). A dismissed finding (ignored, false positive)
carries an accepted external suppression with the triage reason as its justification (GitHub
closes such alerts as dismissed). `versionControlProvenance` names the repository (its URL
without credentials, query or fragment), the commit and the branch when they are known.
Validated in tests against the official schema (tests/scans/sarif-schema-2.1.0.json).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Final
from urllib.parse import quote, urlsplit, urlunsplit

from codepulse.scans.engine import RuleInfo
from codepulse.scans.results import LocatedFinding

SARIF_VERSION: Final = "2.1.0"
SARIF_SCHEMA: Final = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
INFORMATION_URI: Final = "https://github.com/codepulse/codepulse"
FINGERPRINT_KEY: Final = "codepulseFingerprint/v1"
SRCROOT: Final = "%SRCROOT%"

LEVELS: Final = {"critical": "error", "high": "error", "medium": "warning", "low": "note", "info": "note"}
SECURITY_SEVERITY: Final = {"critical": "9.5", "high": "8.0", "medium": "5.5", "low": "3.0", "info": "0.0"}
"""GitHub's bands: critical > 9.0, high 7.0-8.9, medium 4.0-6.9, low 0.1-3.9 (0.0: none)."""
PRECISION: Final = {"secrets": "high"}
"""Per engine; "medium" for the others."""

_CWE = re.compile(r"^CWE-(\d+)$", re.IGNORECASE)
_WORD = re.compile(r"[A-Za-z0-9]+")


def artifact_uri(path: str) -> str:
    """A repository path as a relative URI reference: forward slashes, percent-encoded."""
    return quote(path.replace("\\", "/").lstrip("/"), safe="/!$&'()*+,;=:@-._~")


def public_repository_uri(url: str) -> str:
    """A repository URL as provenance: without user name, password, query or fragment."""
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = f"{host}:{port}" if port is not None else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _rule_name(rule: RuleInfo) -> str:
    words = _WORD.findall(rule.title) or _WORD.findall(rule.id)
    return "".join(word[:1].upper() + word[1:] for word in words) or "Rule"


def _tags(engine: str, cwe: str | None) -> list[str]:
    tags = ["security", engine]
    match = _CWE.match(cwe or "")
    if match:
        tags.append(f"external/cwe/cwe-{match.group(1)}")
    return tags


def _rule_descriptor(rule: RuleInfo) -> dict[str, Any]:
    severity = rule.severity if rule.severity in LEVELS else "medium"
    description = rule.description or rule.title
    help_text = rule.help or description
    markdown = [f"**{rule.title}**", "", description]
    if rule.help and rule.help != description:
        markdown += ["", rule.help]
    match = _CWE.match(rule.cwe or "")
    if match:
        markdown += ["", f"[{rule.cwe}](https://cwe.mitre.org/data/definitions/{match.group(1)}.html)"]
    properties: dict[str, Any] = {
        "tags": _tags(rule.engine, rule.cwe),
        "precision": PRECISION.get(rule.engine, "medium"),
    }
    if severity != "info":
        properties["security-severity"] = SECURITY_SEVERITY[severity]
    return {
        "id": rule.id,
        "name": _rule_name(rule),
        "shortDescription": {"text": rule.title},
        "fullDescription": {"text": description},
        "help": {"text": help_text, "markdown": "\n".join(markdown)},
        "defaultConfiguration": {"level": LEVELS[severity]},
        "properties": properties,
    }


def fallback_rule(finding: LocatedFinding) -> RuleInfo:
    """A rule a finding names that the engines no longer describe (a rule since removed)."""
    return RuleInfo(
        id=finding.rule_id,
        engine=finding.engine or finding.rule_id.split(".", 1)[0],
        title=finding.title,
        description=finding.title,
        help=finding.title,
        severity=finding.severity,
        cwe=finding.cwe,
    )


def _region(finding: LocatedFinding) -> dict[str, Any]:
    start_line = max(1, finding.start_line)
    start_column = max(1, finding.start_column)
    end_line = max(start_line, finding.end_line)
    end_column = max(1, finding.end_column)
    if end_line == start_line:
        end_column = max(start_column, end_column)
    region: dict[str, Any] = {
        "startLine": start_line,
        "startColumn": start_column,
        "endLine": end_line,
        "endColumn": end_column,
    }
    if finding.snippet:
        region["snippet"] = {"text": finding.snippet}
    return region


def _result(finding: LocatedFinding, rule_index: int, dismissed: Mapping[str, str | None]) -> dict[str, Any]:
    severity = finding.severity if finding.severity in LEVELS else "medium"
    result: dict[str, Any] = {
        "ruleId": finding.rule_id,
        "ruleIndex": rule_index,
        "level": LEVELS[severity],
        "message": {"text": finding.message or finding.title},
        "locations": [
            {
                "physicalLocation": {
                    "artifactLocation": {"uri": artifact_uri(finding.path), "uriBaseId": SRCROOT},
                    "region": _region(finding),
                }
            }
        ],
        "partialFingerprints": {FINGERPRINT_KEY: finding.fingerprint},
        "properties": {"severity": severity, "confidence": finding.confidence},
    }
    introduced = finding.introduced
    if introduced is not None:
        # A history scan's: where it came from, and whether removing it is still to do.
        result["properties"] |= {
            "introducedIn": {
                "commitSha": introduced.commit_sha,
                "author": introduced.author,
                "authoredAt": introduced.authored_at.isoformat(),
            },
            "atHead": finding.at_head,
        }
        if not finding.at_head:
            note = f"Only in the history (introduced in {introduced.commit_sha[:12]}): rotate it."
            result["message"] = {"text": f"{result['message']['text']} {note}"}
    if finding.fingerprint in dismissed:
        result["suppressions"] = [_suppression(dismissed[finding.fingerprint])]
    return result


def _suppression(reason: str | None) -> dict[str, Any]:
    """A dismissal, as SARIF says it: suppressed outside the code, the suppression accepted."""
    suppression: dict[str, Any] = {"kind": "external", "status": "accepted"}
    if reason:
        suppression["justification"] = reason
    return suppression


def build_sarif(
    findings: Sequence[LocatedFinding],
    rules: Sequence[RuleInfo],
    *,
    tool_version: str,
    automation_id: str | None = None,
    repository_uri: str | None = None,
    commit_sha: str | None = None,
    branch: str | None = None,
    dismissed: Mapping[str, str | None] | None = None,
) -> dict[str, Any]:
    """A SARIF 2.1.0 log (a JSON-ready dict) of `findings`.

    `rules`: the engines' rules (every one goes in the driver, so a later upload can tell a
    fixed alert from a removed rule); a finding whose rule is not among them gets a descriptor
    made from its title and severity. `automation_id` goes in `automationDetails.id` (e.g.
    "codepulse/<repository id>/"); `repository_uri` (credentials removed)/`commit_sha`/`branch`
    in `versionControlProvenance`. `dismissed`: the fingerprints of dismissed findings, each with
    its triage reason (the suppression's justification).
    """
    dismissed = dismissed or {}
    by_id: dict[str, RuleInfo] = {}
    for rule in sorted(rules, key=lambda rule: rule.id):
        by_id.setdefault(rule.id, rule)
    for finding in findings:
        if finding.rule_id not in by_id:
            by_id[finding.rule_id] = fallback_rule(finding)
    descriptors = [_rule_descriptor(rule) for rule in by_id.values()]
    index = {rule_id: position for position, rule_id in enumerate(by_id)}

    results = [_result(finding, index[finding.rule_id], dismissed) for finding in findings]

    run: dict[str, Any] = {
        "tool": {
            "driver": {
                "name": "codepulse",
                "version": tool_version,
                "semanticVersion": tool_version,
                "informationUri": INFORMATION_URI,
                "rules": descriptors,
            }
        },
        "columnKind": "unicodeCodePoints",
        "results": results,
    }
    if automation_id:
        run["automationDetails"] = {"id": automation_id}
    if repository_uri:
        provenance: dict[str, Any] = {"repositoryUri": public_repository_uri(repository_uri)}
        if commit_sha:
            provenance["revisionId"] = commit_sha
        if branch:
            provenance["branch"] = branch
        run["versionControlProvenance"] = [provenance]
    return {"$schema": SARIF_SCHEMA, "version": SARIF_VERSION, "runs": [run]}
