"""What a scan found: the located finding (the one value type of a finding outside the database)
and the pipeline's result.

Light to import (no database, no engine run): the local CLI, the pipeline, SARIF and the worker's
lifecycle share these. `FindingDetails` (models) turns a `LocatedFinding` into its stored columns
and a stored row back into a `LocatedFinding`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from codepulse.scans.engine import RawFinding


@dataclass(frozen=True, slots=True)
class Introduction:
    """The commit that first added a file version: its SHA, author and author date."""

    commit_sha: str
    author: str
    authored_at: datetime


@dataclass(slots=True)
class LocatedFinding:
    """A finding at a path, with its fingerprint; the flat properties make it SARIF-ready."""

    path: str
    finding: RawFinding
    fingerprint: str
    blob_sha: str | None = None  # the file version it was found in (a history scan reports its commit)
    # A history scan's: the commit that brought it in, and whether the scanned commit still has
    # it (False: only in the history — rotate it). A scan of one commit leaves the defaults.
    introduced: Introduction | None = None
    at_head: bool = True

    @property
    def rule_id(self) -> str:
        return self.finding.rule_id

    @property
    def engine(self) -> str:
        return self.finding.engine

    @property
    def severity(self) -> str:
        return self.finding.severity

    @property
    def title(self) -> str:
        return self.finding.title

    @property
    def message(self) -> str:
        return self.finding.message

    @property
    def start_line(self) -> int:
        return self.finding.start_line

    @property
    def end_line(self) -> int:
        return self.finding.end_line

    @property
    def start_column(self) -> int:
        return self.finding.start_column

    @property
    def end_column(self) -> int:
        return self.finding.end_column

    @property
    def snippet(self) -> str:
        return self.finding.snippet

    @property
    def cwe(self) -> str | None:
        return self.finding.cwe

    @property
    def confidence(self) -> str:
        return self.finding.confidence


@dataclass
class PipelineResult:
    commit_sha: str | None
    findings: list[LocatedFinding]
    files_total: int
    """Every file of the tree, skipped ones included."""
    files_scanned: int
    """Files analysed, by an engine or from the cache."""
    bytes_scanned: int
    skipped: dict[str, int]
    cache_hits: int
    """Files whose every engine result came from the cache."""
    engine_versions: dict[str, str]
    engine_calls: int
    """(file, engine) pairs sent to the engine pool."""
    warnings: list[str] = field(default_factory=list)
    """Non-fatal problems (an invalid .codepulse.yml, an engine that failed on one file)."""
    default_branch: str | None = None
    """The remote's default branch, when the scan cloned it (no ref asked for)."""
