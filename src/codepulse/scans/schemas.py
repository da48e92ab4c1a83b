"""Request and response bodies of the scans domain.

`ScanRead` is the one shape of a scan everywhere (REST, and the live WS/SSE stream): its nested
`progress` object is what live updates carry.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from codepulse.scans.models import (
    REASON_MAX_LENGTH,
    REF_MAX_LENGTH,
    SEVERITIES,
    FindingConfidence,
    FindingSeverity,
    FindingStatus,
    Scan,
    ScanFinding,
    ScanMode,
    ScanPhase,
    ScanStatus,
    ScanTrigger,
)
from codepulse.text import NO_PROSE_CONTROL

_REF_FORBIDDEN = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]")


def _ref(value: str) -> str:
    """A branch, tag or commit SHA git accepts (`git check-ref-format`) that cannot read as an option."""
    if (
        not value
        or value.startswith(("-", "/", "."))
        or value.endswith(("/", ".", ".lock"))
        or _REF_FORBIDDEN.search(value)
        or any(bad in value for bad in ("..", "//", "@{", "/."))
        or value == "@"
    ):
        raise ValueError("not a valid branch, tag or commit")
    return value


Ref = Annotated[str, Field(max_length=REF_MAX_LENGTH), AfterValidator(_ref)]


class ScanCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{}, {"ref": "release/1.x"}, {"mode": "history"}]}
    )

    ref: Ref | None = Field(
        default=None, description="Branch, tag or commit SHA; omit for the repository's default branch."
    )
    mode: ScanMode = Field(
        default=ScanMode.HEAD,
        description="`head`: the files of the ref's commit. `history`: every file version reachable from it, "
        "for leaked secrets (a secret deleted since is still leaked); each finding then says which commit "
        "introduced it and whether the commit still has it.",
    )


class ScanProgress(BaseModel):
    phase: ScanPhase
    files_total: int
    files_done: int
    bytes_total: int
    bytes_done: int
    percent: float = Field(description="0 to 100, by bytes once known, else by files.")

    @classmethod
    def of(cls, scan: Scan) -> ScanProgress:
        if scan.status == ScanStatus.SUCCEEDED.value:
            percent = 100.0
        elif scan.bytes_total > 0:
            percent = min(100.0, 100.0 * scan.bytes_done / scan.bytes_total)
        elif scan.files_total > 0:
            percent = min(100.0, 100.0 * scan.files_done / scan.files_total)
        else:
            percent = 0.0
        return cls(
            phase=ScanPhase(scan.phase),
            files_total=scan.files_total,
            files_done=scan.files_done,
            bytes_total=scan.bytes_total,
            bytes_done=scan.bytes_done,
            percent=round(percent, 1),
        )


class SeverityCounts(BaseModel):
    critical: int = 0
    high: int = 0
    medium: int = 0
    low: int = 0
    info: int = 0

    @classmethod
    def of(cls, counts: dict[str, int] | None) -> SeverityCounts:
        return cls(**{k: int(v) for k, v in (counts or {}).items() if k in SEVERITIES})


class ScanCounts(BaseModel):
    new: SeverityCounts = Field(description="First seen in this scan, or back after being fixed.")
    open: SeverityCounts = Field(description="Open after this scan (what it saw, less the dismissed).")
    fixed: SeverityCounts = Field(description="Open before, gone in this scan (default branch only).")


class ScanError(BaseModel):
    code: str
    message: str


class ScanRead(BaseModel):
    id: uuid.UUID
    org_id: uuid.UUID
    repository_id: uuid.UUID
    requested_by: uuid.UUID | None
    trigger: ScanTrigger
    ref: str | None = Field(description="As requested; null for the default branch.")
    default_branch: bool = Field(description="Whether this scan tracks the default branch (changes finding states).")
    mode: ScanMode
    commit_sha: str | None
    status: ScanStatus
    progress: ScanProgress
    counts: ScanCounts
    files_scanned: int
    skipped: dict[str, int] = Field(description="Files not scanned, by reason.")
    cache_hits: int
    engine_calls: int
    engine_versions: dict[str, str]
    duration_ms: int | None
    error: ScanError | None
    warnings: list[str] = Field(
        description="Non-fatal problems: a `.codepulse.yml` ignored or cut short, an engine error on one file."
    )
    cancel_requested_at: datetime | None
    queued_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def of(cls, scan: Scan) -> ScanRead:
        error = None
        if scan.error_code is not None:
            error = ScanError(code=scan.error_code, message=scan.error_message or "")
        return cls(
            id=scan.id,
            org_id=scan.org_id,
            repository_id=scan.repository_id,
            requested_by=scan.requested_by,
            trigger=ScanTrigger(scan.trigger),
            ref=scan.ref,
            default_branch=scan.ref_key == "",
            mode=ScanMode(scan.mode),
            commit_sha=scan.commit_sha,
            status=ScanStatus(scan.status),
            progress=ScanProgress.of(scan),
            counts=ScanCounts(
                new=SeverityCounts.of(scan.new_counts),
                open=SeverityCounts.of(scan.open_counts),
                fixed=SeverityCounts.of(scan.fixed_counts),
            ),
            files_scanned=scan.files_scanned,
            skipped={str(k): int(v) for k, v in (scan.skipped or {}).items()},
            cache_hits=scan.cache_hits,
            engine_calls=scan.engine_calls,
            engine_versions={str(k): str(v) for k, v in (scan.engine_versions or {}).items()},
            duration_ms=scan.duration_ms,
            error=error,
            warnings=list(scan.warnings or []),
            cancel_requested_at=scan.cancel_requested_at,
            queued_at=scan.queued_at,
            started_at=scan.started_at,
            finished_at=scan.finished_at,
        )


CONFIDENCE_DESCRIPTION = (
    "How sure the engine is: `high` (a secret whose checksum verifies, bandit's high confidence), `medium` "
    "(a provider's format), `low` (a generic rule; bandit's low-confidence results are hidden by default)."
)


class Location(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    path: str
    start_line: int
    end_line: int
    start_column: int
    end_column: int
    snippet: str = Field(description="The matched text with any secret masked (at most 4 characters kept).")


class Introduced(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    commit_sha: str
    author: str
    authored_at: datetime


INTRODUCED_DESCRIPTION = "The commit that introduced it, as a history scan found; null when no history scan told."
AT_HEAD_DESCRIPTION = (
    "Whether the scanned commit has it (false: only in the history, so removing it is not enough: rotate it)."
)


class FindingRead(BaseModel):
    # Read from a `Finding`: `FindingRead.model_validate(finding)` (no docstring: it would change the schema).
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    org_id: uuid.UUID
    repository_id: uuid.UUID
    fingerprint: str
    rule_id: str
    engine: str
    severity: FindingSeverity
    confidence: FindingConfidence = Field(description=CONFIDENCE_DESCRIPTION)
    title: str
    message: str
    cwe: str | None
    location: Location = Field(description="Where the default branch's latest scan saw it.")
    introduced: Introduced | None = Field(description=INTRODUCED_DESCRIPTION)
    at_head: bool = Field(description=AT_HEAD_DESCRIPTION)
    status: FindingStatus = Field(
        description="`open` at the head; `in_history` gone from the head but in the history (rotate it); "
        "`fixed`; `ignored` or `false_positive` (dismissed)."
    )
    dismissed_reason: str | None
    dismissed_by: uuid.UUID | None
    dismissed_at: datetime | None
    first_seen_scan_id: uuid.UUID | None
    last_seen_scan_id: uuid.UUID | None
    fixed_in_scan_id: uuid.UUID | None
    first_seen_at: datetime
    last_seen_at: datetime
    fixed_at: datetime | None
    reopened_count: int = Field(description="Times it came back after being fixed.")


class ScanFindingRead(BaseModel):
    """A finding as one scan saw it, with the tracked finding's current status."""

    id: uuid.UUID | None = Field(
        description="The tracked finding's id, as in the repository's findings and for PATCH /findings/{id} "
        "(null when seen only on a branch other than the default)."
    )
    scan_finding_id: uuid.UUID = Field(description="This scan's record of it (unique within every scan).")
    scan_id: uuid.UUID
    fingerprint: str
    rule_id: str
    engine: str
    severity: FindingSeverity
    confidence: FindingConfidence = Field(description=CONFIDENCE_DESCRIPTION)
    title: str
    message: str
    cwe: str | None
    location: Location
    introduced: Introduced | None = Field(description=INTRODUCED_DESCRIPTION)
    at_head: bool = Field(description=AT_HEAD_DESCRIPTION)
    status: FindingStatus = Field(description="The tracked finding's current status; `open` when untracked.")
    dismissed_reason: str | None = Field(default=None, description="Why it is dismissed (ignored, false_positive).")
    new: bool = Field(description="First seen in this scan, or back after being fixed.")

    @classmethod
    def of(cls, row: ScanFinding, status: str | None, dismissed_reason: str | None = None) -> ScanFindingRead:
        return cls(
            id=row.finding_id,
            scan_finding_id=row.id,
            scan_id=row.scan_id,
            fingerprint=row.fingerprint,
            rule_id=row.rule_id,
            engine=row.engine,
            severity=FindingSeverity(row.severity),
            confidence=FindingConfidence(row.confidence),
            title=row.title,
            message=row.message,
            cwe=row.cwe,
            location=Location.model_validate(row.location),
            introduced=Introduced.model_validate(row.introduced) if row.introduced is not None else None,
            at_head=row.at_head,
            status=FindingStatus(status or FindingStatus.OPEN.value),
            dismissed_reason=dismissed_reason,
            new=row.is_new,
        )


Reason = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=REASON_MAX_LENGTH), NO_PROSE_CONTROL
]


class FindingUpdate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"status": "false_positive", "reason": "Test fixture, not a real key."}]},
    )

    status: FindingStatus = Field(
        description="`ignored` or `false_positive` dismiss it (a reason is required); `open` reopens a "
        "dismissed one. `fixed` is set by scans only."
    )
    reason: Reason | None = Field(default=None, description="Why it is dismissed; required with a dismissal.")
