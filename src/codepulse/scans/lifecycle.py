"""The worker's steps of a scan, each in the runner's own short transaction (nothing here commits).

`begin_run` → `save_progress` / `cancel_requested` (while the pipeline runs) → one of
`complete_scan` (findings, their lifecycle, counts, repository summary: one unit of work),
`fail_scan`, `finish_canceled`. A scan whose task ended without running it is settled by
`abandon_scan` (failed) or `cancel_unrun_scan`; `requeue_scan` queues one its dead task failed
again, for a retry of that task. `reusable_result` answers a re-scan of an unchanged commit
from the earlier scan's findings.

Only scans of the default branch change finding states; `tracking` decides how (a pure
function with the table of cases), this module applies it.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from codepulse import events
from codepulse.db import advisory_xact_lock
from codepulse.errors import Conflict
from codepulse.events import OrgEvent
from codepulse.repositories import service as repositories_service
from codepulse.scans.models import (
    ERROR_CODE_MAX_LENGTH,
    MAX_WARNINGS,
    SUMMARY_SEVERITIES,
    WARNING_MAX_LENGTH,
    FindingDetails,
    Scan,
    ScanMode,
    ScanPhase,
    ScanStatus,
    stored_severity,
    zero_counts,
)
from codepulse.scans.repository import ScanRepository
from codepulse.scans.results import PipelineResult
from codepulse.scans.tracking import Change, Outcome, carry_over, scan_counts

log = structlog.get_logger("codepulse.scans")

ERROR_MESSAGE_MAX_LENGTH = 2000


async def begin_run(session: AsyncSession, scan_id: uuid.UUID, now: datetime) -> Scan | None:
    """Mark the scan running (a retried task runs it again from the start). None when there is
    nothing to run: the scan is gone, finished, or canceled (a cancel asked before it started
    is completed here)."""
    repo = ScanRepository(session)
    if await repo.start(scan_id, now, ScanPhase.CLONING.value):
        return await repo.refresh_scan(scan_id)
    state = await repo.cancel_state(scan_id)
    if state is not None and state[0] == ScanStatus.RUNNING.value and state[1] is not None:
        await finish_canceled(session, scan_id, now)
    return None


async def save_progress(
    session: AsyncSession,
    scan_id: uuid.UUID,
    *,
    phase: str,
    files_total: int,
    files_done: int,
    bytes_total: int,
    bytes_done: int,
) -> bool:
    """Write a running scan's progress; False once it is no longer running."""
    known = {item.value for item in ScanPhase}
    values = {
        "phase": phase if phase in known else ScanPhase.SCANNING.value,
        "files_total": int(files_total),
        "files_done": int(files_done),
        "bytes_total": int(bytes_total),
        "bytes_done": int(bytes_done),
    }
    return await ScanRepository(session).write_progress(scan_id, values)


async def cancel_requested(session: AsyncSession, scan_id: uuid.UUID) -> bool:
    """Whether the scan should stop: a cancel was asked, or it is no longer running."""
    state = await ScanRepository(session).cancel_state(scan_id)
    return state is None or state[0] != ScanStatus.RUNNING.value or state[1] is not None


async def finish_canceled(session: AsyncSession, scan_id: uuid.UUID, now: datetime) -> bool:
    """A running scan stopped on request: canceled, nothing of it saved."""
    return await _finish_unsuccessfully(session, scan_id, now, ScanStatus.CANCELED, {})


async def fail_scan(session: AsyncSession, scan_id: uuid.UUID, code: str, message: str, now: datetime) -> bool:
    """A running scan that could not complete: failed with a problem-style code and message."""
    error = {"error_code": code[:ERROR_CODE_MAX_LENGTH], "error_message": message[:ERROR_MESSAGE_MAX_LENGTH]}
    return await _finish_unsuccessfully(session, scan_id, now, ScanStatus.FAILED, error)


async def abandon_scan(session: AsyncSession, scan_id: uuid.UUID, code: str, message: str, now: datetime) -> bool:
    """A queued or running scan whose task ended without settling it (its worker kept dying, or
    could not record the outcome): failed, so it never stays active. False when already settled."""
    error = {"error_code": code[:ERROR_CODE_MAX_LENGTH], "error_message": message[:ERROR_MESSAGE_MAX_LENGTH]}
    return await _finish_unsuccessfully(session, scan_id, now, ScanStatus.FAILED, error, queued_too=True)


async def cancel_unrun_scan(session: AsyncSession, scan_id: uuid.UUID, now: datetime) -> bool:
    """A scan whose task was canceled before it ran (a superuser's cancel of the queued task):
    canceled as a user's cancel leaves it, queued (never started) or running (its worker died and
    the task waited for a re-run that will not come). False when already settled."""
    repo = ScanRepository(session)
    scan = await repo.refresh_scan(scan_id)
    if scan is None:
        return False
    if await repo.cancel_if_queued(scan_id, now):
        await repositories_service.update_scan_summary(
            session, scan.repository_id, scan_id=scan_id, status=ScanStatus.CANCELED.value, finished_at=now
        )
        log.info("scan.canceled", scan_id=str(scan_id))
        return True
    return await finish_canceled(session, scan_id, now)


async def requeue_scan(session: AsyncSession, scan_id: uuid.UUID, error_codes: Collection[str], now: datetime) -> bool:
    """A scan that failed with one of `error_codes` (its task died) queued again, for the retried
    task to run it. False when it is not such a scan (gone, succeeded, canceled, or failed for its
    own reasons). 409 `scan_already_active` when another scan of its repository and ref is queued
    or running now; nothing changed then."""
    try:
        # A savepoint: the one-active-scan index refusing the row leaves the caller's transaction usable.
        async with session.begin_nested():
            return await ScanRepository(session).requeue_failed(scan_id, error_codes, now)
    except IntegrityError:
        raise Conflict(
            "Another scan of this repository and ref is queued or running: wait for it, or cancel it, "
            "before running this one again.",
            code="scan_already_active",
        ) from None


async def _finish_unsuccessfully(
    session: AsyncSession,
    scan_id: uuid.UUID,
    now: datetime,
    status: ScanStatus,
    values: dict[str, Any],
    *,
    queued_too: bool = False,
) -> bool:
    repo = ScanRepository(session)
    scan = await repo.refresh_scan(scan_id)
    if scan is None:
        return False
    outcome = {
        "status": status.value,
        **values,
        "finished_at": now,
        "updated_at": now,
        "duration_ms": _duration_ms(scan, now),
    }
    if queued_too:
        done = await repo.finish_active(scan_id, outcome)
    else:
        done = await repo.finish_running(scan_id, outcome, unless_canceled=False)
    if done:
        await repositories_service.update_scan_summary(
            session, scan.repository_id, scan_id=scan_id, status=status.value, finished_at=now
        )
        if status is ScanStatus.FAILED:
            log.info("scan.failed", scan_id=str(scan_id), code=values["error_code"])
            await _announce_failed(session, scan, values, now)
        else:
            log.info("scan.canceled", scan_id=str(scan_id))
    return done


async def _subject(session: AsyncSession, scan: Scan) -> tuple[str, dict[str, Any]]:
    repository = await repositories_service.get_repository(session, scan.repository_id)
    name = repository.name if repository is not None else "a repository"
    return name, {"scan_id": str(scan.id), "repository_id": str(scan.repository_id), "ref": scan.ref}


async def _announce_failed(session: AsyncSession, scan: Scan, values: dict[str, Any], now: datetime) -> None:
    """`scan_failed` to whoever started the scan (nobody for a scheduled one)."""
    if scan.requested_by is None:
        return
    name, data = await _subject(session, scan)
    await events.announce(
        session,
        OrgEvent(
            kind="scan_failed",
            org_id=scan.org_id,
            title=f"The scan of {name} failed",
            body=str(values.get("error_message") or values.get("error_code") or "The scan failed."),
            dedup_key=f"scan_failed:{scan.id}",
            now=now,
            user_ids=(scan.requested_by,),
            data=data | {"error_code": values.get("error_code")},
        ),
    )


async def _announce_finished(
    session: AsyncSession, scan: Scan, new_counts: dict[str, int], now: datetime, *, default_branch: bool
) -> None:
    """`scan_completed` to whoever started the scan; `new_critical_findings` to the organization's
    admins when a scan of the default branch opened new high or critical findings (once per scan)."""
    name, data = await _subject(session, scan)
    new = sum(new_counts.values())
    if scan.requested_by is not None:
        await events.announce(
            session,
            OrgEvent(
                kind="scan_completed",
                org_id=scan.org_id,
                title=f"The scan of {name} finished",
                body=f"{new} new finding{'' if new == 1 else 's'}.",
                dedup_key=f"scan_completed:{scan.id}",
                now=now,
                user_ids=(scan.requested_by,),
                data=data | {"new": new},
            ),
        )
    critical, high = new_counts.get("critical", 0), new_counts.get("high", 0)
    if default_branch and critical + high:
        await events.announce(
            session,
            OrgEvent(
                kind="new_critical_findings",
                org_id=scan.org_id,
                title=f"{critical + high} new high or critical findings in {name}",
                body=f"The scan of the default branch opened {critical} critical and {high} high findings.",
                dedup_key=f"new_critical_findings:{scan.id}",
                now=now,
                audience="admin",
                data=data | {"critical": critical, "high": high},
            ),
        )


def _duration_ms(scan: Scan, now: datetime) -> int:
    started = scan.started_at or scan.queued_at
    return max(0, int((now - started).total_seconds() * 1000))


async def complete_scan(
    session: AsyncSession,
    scan_id: uuid.UUID,
    result: PipelineResult,
    now: datetime,
    *,
    pipeline_signature: str | None = None,
) -> Scan | None:
    """Save a finished scan in the caller's one unit of work: what it saw, the findings' lifecycle
    (default branch only), its counts, status `succeeded`, and the repository's summary. None
    when it is not the scan's to save (a cancel was requested, or it is no longer running)."""
    repo = ScanRepository(session)
    scan = await repo.refresh_scan(scan_id)
    if scan is None:
        return None
    # First: the row lock (PostgreSQL) orders this against a concurrent cancel request. The status
    # is written last, with the outcome: the per-day counts it moves are rows every scan of the
    # day writes, locked from then until the commit.
    if not await repo.lock_running(scan_id):
        return None
    # Two scans of one repository never apply their lifecycles at the same time.
    await advisory_xact_lock(session, f"scans.findings:{scan.repository_id}")
    default_branch = scan.ref_key == ""
    fingerprints = sorted({item.fingerprint for item in result.findings})
    tracked = await repo.finding_states(scan.repository_id, fingerprints)
    outcomes = carry_over(result.findings, tracked, default_branch=default_branch)
    new_counts, open_counts = scan_counts(outcomes)
    fixed_counts = zero_counts()
    summary: dict[str, int] | None = None
    rows = [(outcome, FindingDetails.columns_of(outcome.found), _finding_id(outcome)) for outcome in outcomes]
    if default_branch:
        await repo.insert_findings(
            [_new_finding(scan, outcome, details, finding_id, now) for outcome, details, finding_id in rows
             if outcome.change is Change.OPENED]
        )  # fmt: skip
        await repo.update_findings(
            [_seen_again(outcome, details, finding_id, scan_id, now) for outcome, details, finding_id in rows
             if outcome.change in (Change.SEEN, Change.REOPENED)]
        )  # fmt: skip
        history = scan.mode == ScanMode.HISTORY.value
        for severity in await repo.fix_unseen(scan.repository_id, scan_id, now, history=history):
            fixed_counts[stored_severity(severity)] += 1
        if result.default_branch is not None:
            await repositories_service.fill_default_branch(session, scan.repository_id, result.default_branch)
        current = await repo.open_counts(scan.repository_id)
        summary = {severity: current.get(severity, 0) for severity in SUMMARY_SEVERITIES}
    await repo.insert_scan_findings(
        [{"id": uuid.uuid4(), "scan_id": scan_id, "finding_id": finding_id, **details, "is_new": outcome.new}
         for outcome, details, finding_id in rows]
    )  # fmt: skip
    await repo.finish_running(
        scan_id,
        {
            "status": ScanStatus.SUCCEEDED.value,
            "phase": ScanPhase.DONE.value,
            "finished_at": now,
            "updated_at": now,
            "commit_sha": result.commit_sha,
            "files_total": result.files_total,
            "files_done": result.files_total,
            "bytes_total": result.bytes_scanned,
            "bytes_done": result.bytes_scanned,
            "files_scanned": result.files_scanned,
            "skipped": dict(result.skipped),
            "cache_hits": result.cache_hits,
            "engine_calls": result.engine_calls,
            "engine_versions": dict(result.engine_versions),
            "pipeline_signature": pipeline_signature,
            "warnings": [warning[:WARNING_MAX_LENGTH] for warning in result.warnings[:MAX_WARNINGS]],
            "new_counts": new_counts,
            "open_counts": open_counts,
            "fixed_counts": fixed_counts,
            "duration_ms": _duration_ms(scan, now),
        },
        unless_canceled=True,  # it is: the row is locked
    )
    await repositories_service.update_scan_summary(
        session,
        scan.repository_id,
        scan_id=scan_id,
        status=ScanStatus.SUCCEEDED.value,
        finished_at=now,
        open_findings=summary,
    )
    await _announce_finished(session, scan, new_counts, now, default_branch=default_branch)
    log.info(
        "scan.finished",
        scan_id=str(scan_id),
        findings=len(outcomes),
        new=sum(new_counts.values()),
        fixed=sum(fixed_counts.values()),
        cache_hits=result.cache_hits,
        engine_calls=result.engine_calls,
    )
    return await repo.refresh_scan(scan_id)


def _finding_id(outcome: Outcome) -> uuid.UUID | None:
    """The tracked finding an outcome is about: a new id for one opened now, none for one seen
    only on another ref."""
    if outcome.tracked is not None:
        return outcome.tracked.id
    return uuid.uuid4() if outcome.change is Change.OPENED else None


def _new_finding(
    scan: Scan, outcome: Outcome, details: dict[str, Any], finding_id: uuid.UUID | None, now: datetime
) -> dict[str, Any]:
    return {"id": finding_id, "org_id": scan.org_id, "repository_id": scan.repository_id, **details,
            "status": outcome.status.value, "first_seen_scan_id": scan.id, "last_seen_scan_id": scan.id,
            "first_seen_at": now, "last_seen_at": now, "reopened_count": 0, "created_at": now,
            "updated_at": now}  # fmt: skip


def _seen_again(
    outcome: Outcome, details: dict[str, Any], finding_id: uuid.UUID | None, scan_id: uuid.UUID, now: datetime
) -> dict[str, Any]:
    """A tracked finding seen again: its location, last sighting and status (open at the head, or
    only in the history) move; reopened when it was fixed. Where it came from stays known when
    this scan (of one commit) cannot tell."""
    if details["introduced_commit_sha"] is None:
        details = {key: value for key, value in details.items() if not key.startswith("introduced_")}
    values = {"id": finding_id, **details, "status": outcome.status.value, "last_seen_scan_id": scan_id,
              "last_seen_at": now, "updated_at": now}  # fmt: skip
    if outcome.change is Change.REOPENED:
        values |= {"fixed_in_scan_id": None, "fixed_at": None, "reopened_count": outcome.reopened_count}
    return values


async def reusable_result(
    session: AsyncSession, scan: Scan, commit_sha: str, pipeline_signature: str
) -> PipelineResult | None:
    """What an earlier scan of the same commit with the same pipeline found, as a pipeline result
    (no clone, no engine call), or None when there is no such scan."""
    repo = ScanRepository(session)
    earlier = await repo.reusable_scan(scan.repository_id, scan.ref_key, commit_sha, pipeline_signature)
    if earlier is None:
        return None
    findings = [row.located() for row in await repo.scan_findings(earlier.id)]
    log.info("scan.reused", scan_id=str(scan.id), from_scan_id=str(earlier.id), commit_sha=commit_sha)
    return PipelineResult(
        commit_sha=commit_sha,
        findings=findings,
        files_total=earlier.files_total,
        files_scanned=earlier.files_scanned,
        bytes_scanned=earlier.bytes_total,
        skipped=dict(earlier.skipped or {}),
        cache_hits=earlier.files_scanned,
        engine_versions={str(k): str(v) for k, v in (earlier.engine_versions or {}).items()},
        engine_calls=0,
        warnings=list(earlier.warnings or []),
    )
