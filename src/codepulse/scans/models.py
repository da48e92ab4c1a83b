"""Scans of a repository, the findings they track across scans, and the per-blob result cache.

- `Scan`: one run over one ref of a repository, with its progress, counts and outcome. At most one
  queued or running scan per (repository, ref): a partial unique index on (repository_id, ref_key)
  over the active statuses enforces it, `ref_key` being "" for the default branch.
- `Finding`: the current state of one issue in a repository, identified by its fingerprint (stable
  when lines move); its status follows the default branch's scans (open, fixed, reopened) and
  triage (ignored, false_positive).
- `ScanFinding`: what one scan saw, as it saw it (a self-contained copy of the location and text),
  linked to the tracked finding with that fingerprint when there is one.
- `ScanResultCache`: engine results per (organization, blob SHA, engine, engine version), so an
  unchanged file is never analysed twice.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Date,
    ForeignKey,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    Text,
    UniqueConstraint,
    text,
    true,
)
from sqlalchemy.orm import Mapped, mapped_column

from codepulse.db import Base, Timestamps, UUIDPrimaryKey
from codepulse.scans.engine import RawFinding
from codepulse.scans.engine.base import CONFIDENCES
from codepulse.scans.results import Introduction, LocatedFinding

REF_MAX_LENGTH = 255
FINGERPRINT_LENGTH = 64
RULE_MAX_LENGTH = 100
ENGINE_MAX_LENGTH = 32
ENGINE_VERSION_MAX_LENGTH = 100
TITLE_MAX_LENGTH = 300
PATH_MAX_LENGTH = 4096
ERROR_CODE_MAX_LENGTH = 64
REASON_MAX_LENGTH = 1000
MAX_WARNINGS = 50
WARNING_MAX_LENGTH = 500
AUTHOR_MAX_LENGTH = 255

SEVERITIES = ("critical", "high", "medium", "low", "info")
SUMMARY_SEVERITIES = SEVERITIES[:4]
"""The severities a repository's open-findings summary counts."""


class ScanStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"


ACTIVE_STATUSES = (ScanStatus.QUEUED.value, ScanStatus.RUNNING.value)


class ScanTrigger(StrEnum):
    MANUAL = "manual"
    SCHEDULE = "schedule"
    API = "api"


class ScanMode(StrEnum):
    HEAD = "head"
    """The files of the scanned commit."""
    HISTORY = "history"
    """Every file version reachable from the scanned commit (a secret deleted since is still leaked)."""


class ScanPhase(StrEnum):
    QUEUED = "queued"
    CLONING = "cloning"
    INDEXING = "indexing"
    SCANNING = "scanning"
    SAVING = "saving"
    DONE = "done"


class FindingSeverity(StrEnum):
    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"
    INFO = "info"


class FindingConfidence(StrEnum):
    """How sure the engine is (a verified checksum, a provider's format, bandit's own word)."""

    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"


def stored_confidence(confidence: str) -> str:
    """A confidence as stored: one of FindingConfidence, an unknown one as medium."""
    return confidence if confidence in CONFIDENCES else FindingConfidence.MEDIUM.value


def severity_rank(severity: str) -> int:
    """0 for critical ... 4 for info: lists sort most severe first by this."""
    return SEVERITIES.index(severity) if severity in SEVERITIES else len(SEVERITIES)


class FindingStatus(StrEnum):
    OPEN = "open"
    """At the default branch's head: remove it (and, for a secret, rotate it)."""
    IN_HISTORY = "in_history"
    """Gone from the head but still in the history a history scan read: rotate it."""
    FIXED = "fixed"
    IGNORED = "ignored"
    FALSE_POSITIVE = "false_positive"

    @property
    def dismissed(self) -> bool:
        return self in (FindingStatus.IGNORED, FindingStatus.FALSE_POSITIVE)

    @property
    def unresolved(self) -> bool:
        """Needs work: counted among a repository's open findings."""
        return self in (FindingStatus.OPEN, FindingStatus.IN_HISTORY)


UNRESOLVED_STATUSES = tuple(status.value for status in FindingStatus if status.unresolved)


def stored_severity(severity: str) -> str:
    """A severity as stored and counted: one of SEVERITIES, an unknown one as info."""
    return severity if severity in SEVERITIES else FindingSeverity.INFO.value


def zero_counts() -> dict[str, int]:
    return dict.fromkeys(SEVERITIES, 0)


_ACTIVE_PREDICATE = text("status IN ('queued', 'running')")


class Scan(UUIDPrimaryKey, Timestamps, Base):
    __tablename__ = "scans"
    __table_args__ = (
        # At most one active scan per repository and ref (race-free: the insert fails).
        Index(
            "uq_scans_repository_id_ref_key_active",
            "repository_id",
            "ref_key",
            unique=True,
            sqlite_where=_ACTIVE_PREDICATE,
            postgresql_where=_ACTIVE_PREDICATE,
        ),
        Index("ix_scans_repository_id_queued_at", "repository_id", "queued_at"),
        Index("ix_scans_org_id_queued_at", "org_id", "queued_at"),
        # The superusers' statistics' median and p95 duration: the window's durations in order,
        # from the index alone (their per-day figures are counted in `ScanDayCount`).
        Index("ix_scans_duration_ms_queued_at", "duration_ms", "queued_at"),
    )

    org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    repository_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("repositories.id", ondelete="CASCADE"))
    requested_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    trigger: Mapped[str] = mapped_column(String(10))
    # As requested (None: the default branch); ref_key is "" for the default branch, else the ref.
    ref: Mapped[str | None] = mapped_column(String(REF_MAX_LENGTH))
    ref_key: Mapped[str] = mapped_column(String(REF_MAX_LENGTH), default="")
    mode: Mapped[str] = mapped_column(String(10), default=ScanMode.HEAD.value, server_default=ScanMode.HEAD.value)
    commit_sha: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(20), default=ScanStatus.QUEUED.value)
    # The task that runs it (the tasks table prunes finished tasks: no foreign key).
    task_id: Mapped[uuid.UUID | None]

    # Progress, written by the worker while it runs.
    phase: Mapped[str] = mapped_column(String(20), default=ScanPhase.QUEUED.value)
    files_total: Mapped[int] = mapped_column(Integer, default=0)
    files_done: Mapped[int] = mapped_column(Integer, default=0)
    bytes_total: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_done: Mapped[int] = mapped_column(BigInteger, default=0)

    # Outcome: findings by severity (new in this scan, open after it, fixed by it).
    new_counts: Mapped[dict[str, int]] = mapped_column(JSON, default=zero_counts)
    open_counts: Mapped[dict[str, int]] = mapped_column(JSON, default=zero_counts)
    fixed_counts: Mapped[dict[str, int]] = mapped_column(JSON, default=zero_counts)
    # Files not scanned, by reason (binary, too_large, vendored, excluded, ...).
    skipped: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)
    files_scanned: Mapped[int] = mapped_column(Integer, default=0)
    cache_hits: Mapped[int] = mapped_column(Integer, default=0)
    engine_calls: Mapped[int] = mapped_column(Integer, default=0)
    engine_versions: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # What the results depend on besides the commit: engine versions and rulesets, skip settings,
    # codepulse's version. A re-scan of the same commit with the same signature reuses them.
    pipeline_signature: Mapped[str | None] = mapped_column(String(64))
    duration_ms: Mapped[int | None] = mapped_column(BigInteger)
    error_code: Mapped[str | None] = mapped_column(String(ERROR_CODE_MAX_LENGTH))
    error_message: Mapped[str | None] = mapped_column(Text)
    # Non-fatal problems of a finished scan (a .codepulse.yml limit hit, an engine error on a file).
    warnings: Mapped[list[str] | None] = mapped_column(JSON)

    queued_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    # Set by a cancel while running; the worker notices, stops and marks the scan canceled.
    cancel_requested_at: Mapped[datetime | None]


class ScanDayCount(Base):
    """Scans per UTC day of queueing and current status, with what the superusers' statistics
    sum over them: the statistics read a range of days here instead of grouping every scan.

    Kept equal to those counts in the transaction of every write that changes them, all in
    `ScanRepository` (`_count`): a scan's creation adds it as queued, a status change moves it
    from one status to the other, its outcome adds its engine calls, cache hits and duration, and
    the deletion of repositories (an organization's too) takes their scans out (the
    `on_repositories_delete` hook). A scan counts on the day it was queued, whatever day it
    finishes. A row whose scans all moved or went stays, at zero. `ScanDays.rebuild`
    recomputes the table (after a bulk load that bypasses the repository)."""

    __tablename__ = "scan_days"
    __table_args__ = (PrimaryKeyConstraint("day", "status"),)

    day: Mapped[date] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(20))
    scans: Mapped[int] = mapped_column(BigInteger)
    engine_calls: Mapped[int] = mapped_column(BigInteger)
    cache_hits: Mapped[int] = mapped_column(BigInteger)
    # Scans with a duration (finished ones): how many values the duration percentiles rank.
    timed: Mapped[int] = mapped_column(BigInteger)


class FindingDetails:
    """What a finding is and where it is: the columns `findings` and `scan_findings` share, and
    the conversions from and to the pipeline's `LocatedFinding`."""

    fingerprint: Mapped[str] = mapped_column(String(FINGERPRINT_LENGTH))
    rule_id: Mapped[str] = mapped_column(String(RULE_MAX_LENGTH))
    engine: Mapped[str] = mapped_column(String(ENGINE_MAX_LENGTH))
    severity: Mapped[str] = mapped_column(String(10))
    severity_rank: Mapped[int] = mapped_column(Integer)
    title: Mapped[str] = mapped_column(String(TITLE_MAX_LENGTH))
    message: Mapped[str] = mapped_column(Text)
    cwe: Mapped[str | None] = mapped_column(String(20))
    # Rows from before confidence was recorded (migration 0023) are `medium`.
    confidence: Mapped[str] = mapped_column(String(10), default=FindingConfidence.MEDIUM.value)
    path: Mapped[str] = mapped_column(String(PATH_MAX_LENGTH))
    start_line: Mapped[int] = mapped_column(Integer)
    end_line: Mapped[int] = mapped_column(Integer)
    start_column: Mapped[int] = mapped_column(Integer)
    end_column: Mapped[int] = mapped_column(Integer)
    snippet: Mapped[str] = mapped_column(Text)  # masked by the engine
    # Found by a history scan: the commit that introduced it (None: not known, a scan of one
    # commit), and whether the scanned commit still has it.
    introduced_commit_sha: Mapped[str | None] = mapped_column(String(64))
    introduced_by: Mapped[str | None] = mapped_column(String(AUTHOR_MAX_LENGTH))
    introduced_at: Mapped[datetime | None]
    at_head: Mapped[bool] = mapped_column(default=True, server_default=true())

    @property
    def introduced(self) -> Introduction | None:
        """The commit that introduced it, when a history scan told."""
        if self.introduced_commit_sha is None or self.introduced_at is None:
            return None
        return Introduction(self.introduced_commit_sha, self.introduced_by or "", self.introduced_at)

    @property
    def location(self) -> FindingDetails:
        """The location columns (path, lines, columns, snippet) read as one: the API nests them."""
        return self

    @staticmethod
    def columns_of(found: LocatedFinding) -> dict[str, Any]:
        """A located finding's values for these columns, as stored (lengths held to the columns',
        an unknown severity stored as info)."""
        raw = found.finding
        introduced = found.introduced
        severity = stored_severity(raw.severity)
        return {
            "fingerprint": found.fingerprint,
            "rule_id": raw.rule_id[:RULE_MAX_LENGTH],
            "engine": raw.engine[:ENGINE_MAX_LENGTH],
            "severity": severity,
            "severity_rank": severity_rank(severity),
            "title": raw.title[:TITLE_MAX_LENGTH],
            "message": raw.message,
            "cwe": raw.cwe,
            "confidence": stored_confidence(raw.confidence),
            "path": found.path,
            "start_line": raw.start_line,
            "end_line": raw.end_line,
            "start_column": raw.start_column,
            "end_column": raw.end_column,
            "snippet": raw.snippet,
            "introduced_commit_sha": introduced.commit_sha if introduced is not None else None,
            "introduced_by": introduced.author[:AUTHOR_MAX_LENGTH] if introduced is not None else None,
            "introduced_at": introduced.authored_at if introduced is not None else None,
            "at_head": found.at_head,
        }

    def located(self) -> LocatedFinding:
        """This row back in the pipeline's shape (SARIF, and reusing a scan's results)."""
        raw = RawFinding(
            rule_id=self.rule_id,
            engine=self.engine,
            severity=self.severity,
            title=self.title,
            message=self.message,
            start_line=self.start_line,
            end_line=self.end_line,
            start_column=self.start_column,
            end_column=self.end_column,
            snippet=self.snippet,
            cwe=self.cwe,
            fingerprint_basis="",  # only fingerprints are compared, and they are stored
            confidence=self.confidence,
        )
        return LocatedFinding(
            path=self.path, finding=raw, fingerprint=self.fingerprint, introduced=self.introduced, at_head=self.at_head
        )


class Finding(UUIDPrimaryKey, FindingDetails, Timestamps, Base):
    """A tracked finding; its details are where the default branch last saw it."""

    __tablename__ = "findings"
    __table_args__ = (
        UniqueConstraint("repository_id", "fingerprint"),
        Index("ix_findings_repository_id_status_severity_rank", "repository_id", "status", "severity_rank"),
        Index("ix_findings_status_severity", "status", "severity"),  # unresolved per severity, platform-wide
    )

    org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    repository_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("repositories.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(20), default=FindingStatus.OPEN.value)
    dismissed_reason: Mapped[str | None] = mapped_column(String(REASON_MAX_LENGTH))
    dismissed_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    dismissed_at: Mapped[datetime | None]
    first_seen_scan_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("scans.id", ondelete="SET NULL"))
    last_seen_scan_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("scans.id", ondelete="SET NULL"))
    fixed_in_scan_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("scans.id", ondelete="SET NULL"))
    first_seen_at: Mapped[datetime]
    last_seen_at: Mapped[datetime]
    fixed_at: Mapped[datetime | None]
    # Times it came back after being fixed (a regression).
    reopened_count: Mapped[int] = mapped_column(Integer, default=0)


class ScanFinding(UUIDPrimaryKey, FindingDetails, Base):
    """One finding as one scan saw it."""

    __tablename__ = "scan_findings"
    __table_args__ = (
        UniqueConstraint("scan_id", "fingerprint"),
        Index("ix_scan_findings_finding_id", "finding_id"),
    )

    scan_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("scans.id", ondelete="CASCADE"))
    # The tracked finding (None: seen only on a branch that is not the default one).
    finding_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("findings.id", ondelete="SET NULL"))
    # New in this scan (first seen, or back after being fixed).
    is_new: Mapped[bool]


class ScanResultCache(Base):
    """Engine results of one blob: a JSON list of findings (without paths), reused for any path."""

    __tablename__ = "scan_result_cache"
    __table_args__ = (PrimaryKeyConstraint("org_id", "blob_sha", "engine", "engine_version"),)

    org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    blob_sha: Mapped[str] = mapped_column(String(64))
    engine: Mapped[str] = mapped_column(String(ENGINE_MAX_LENGTH))
    engine_version: Mapped[str] = mapped_column(String(ENGINE_VERSION_MAX_LENGTH))
    findings: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    created_at: Mapped[datetime]
