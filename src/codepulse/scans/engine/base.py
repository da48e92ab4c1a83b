"""What every scan engine shares: the finding and rule records, the engine protocol, helpers.

Nothing here imports an engine's heavy dependencies: the API process imports this module (for the
types and the rule list) without paying for bandit.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Protocol, runtime_checkable

SEVERITIES: Final = ("critical", "high", "medium", "low", "info")
SEVERITY_RANK: Final = {name: rank for rank, name in enumerate(reversed(SEVERITIES))}
"""info=0 ... critical=4: compare severities with `SEVERITY_RANK[a] >= SEVERITY_RANK[b]`."""
CONFIDENCES: Final = ("high", "medium", "low")
"""How sure a finding is: a secret in a provider's format whose checksum verifies is `high`, a
provider's format `medium`, a generic assignment `low`; bandit's own confidence for its findings."""


@dataclass(frozen=True, slots=True)
class RawFinding:
    """One finding in one file's content, before it is located at a path.

    Lines and columns are 1-based; `end_column` is exclusive (the column after the last
    character), as in SARIF regions. `snippet` and `message` never hold a full secret: a secret
    keeps at most its first 4 characters, the rest is masked. `fingerprint_basis` holds no path
    and no line number: results are cached per blob and reused for any path, and a finding keeps
    its fingerprint when lines move.
    """

    rule_id: str
    engine: str
    severity: str
    title: str
    message: str
    start_line: int
    end_line: int
    start_column: int
    end_column: int
    snippet: str
    cwe: str | None
    fingerprint_basis: str
    confidence: str = "medium"  # one of CONFIDENCES; cached results of older engines lack it


@dataclass(frozen=True)
class RuleInfo:
    """A rule as SARIF's tool driver describes it."""

    id: str
    engine: str
    title: str
    description: str
    help: str
    severity: str
    cwe: str | None


@runtime_checkable
class Engine(Protocol):
    """A scan engine. A third engine is one module implementing this, listed in `available_engines`.

    `scan` must be a pure function of `(path, content)` apart from the path's extension (results
    are cached per blob SHA, engine name and `version`), and must not raise on odd content
    (binary, bad encoding, syntax errors): it returns what it could find.
    """

    name: str
    version: str

    def wants(self, path: str) -> bool: ...

    def scan(self, path: str, content: bytes) -> list[RawFinding]: ...

    def rules(self) -> list[RuleInfo]: ...


_WHITESPACE = re.compile(r"\s+")


def normalise_whitespace(text: str) -> str:
    """Collapse runs of whitespace to one space and strip the ends (line-context fingerprints)."""
    return _WHITESPACE.sub(" ", text).strip()


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def fingerprints(path: str, findings: Sequence[RawFinding]) -> list[str]:
    """One stable fingerprint per finding, in the order given.

    sha256 over the rule id, the path, the finding's `fingerprint_basis` and its occurrence index
    among the findings of the file with the same rule and basis, counted in position order (so
    two identical lines get two fingerprints, and neither changes when lines are inserted above
    them). No line or column goes in.
    """
    order = sorted(range(len(findings)), key=lambda i: (findings[i].start_line, findings[i].start_column, i))
    seen: dict[tuple[str, str], int] = {}
    result = [""] * len(findings)
    for i in order:
        finding = findings[i]
        key = (finding.rule_id, finding.fingerprint_basis)
        occurrence = seen.get(key, 0)
        seen[key] = occurrence + 1
        result[i] = sha256_hex(f"{finding.rule_id}\0{path}\0{finding.fingerprint_basis}\0{occurrence}")
    return result


def mask_secret(secret: str) -> str:
    """At most the first 4 characters (fewer for short secrets), the rest as `*` (at most 12 shown)."""
    keep = min(4, len(secret) // 4)
    hidden = len(secret) - keep
    return secret[:keep] + "*" * min(max(hidden, 1), 12)


def decode(content: bytes) -> str:
    """Decode once: UTF-8, falling back to Latin-1 so offsets stay one character per byte."""
    try:
        return content.decode("utf-8")
    except UnicodeDecodeError:
        return content.decode("latin-1")
