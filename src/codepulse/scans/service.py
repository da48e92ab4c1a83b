"""Scans: the rules, and the domain's interface to other domains.

Requests (routes, through `ScanService`): start a scan (quota, metering and the task, all in the
request's unit of work), list, cancel, findings and triage, SARIF.

For other code (module functions; nothing here commits):

- `require_scan(session, settings, clock, user, scan_id)`: a scan and the caller's access (404
  `scan_not_found` for outsiders) — the live progress stream uses it.
- `get_scan(session, scan_id)`: a scan without an access check.
- `start_scan(session, settings, clock, repository, ...)`: queue a scan (scheduled scans use it).
- `scan_stats`, `open_findings_by_severity`: the superusers' statistics; `rebuild_scan_days`
  recomputes the per-day counts they read (after a bulk load of scans).

The worker's steps (run, progress, complete, fail, cancel) are in `lifecycle`; how findings carry
over between scans is decided in `tracking`.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from codepulse import __version__, tasks
from codepulse.auth.service import User
from codepulse.clock import ClockFunc
from codepulse.config import Settings
from codepulse.errors import Conflict, FieldError, NotFound, ValidationFailed
from codepulse.orgs.quotas import QuotaResource, check_quota
from codepulse.orgs.service import OrgAccess, OrgService, Role
from codepulse.pagination import PageRequest, paginate, paginate_rows
from codepulse.repositories import service as repositories_service
from codepulse.repositories.service import Repository, RepositoryAccess
from codepulse.scans import lifecycle
from codepulse.scans.engine import RuleInfo, available_engines
from codepulse.scans.models import (
    SUMMARY_SEVERITIES,
    UNRESOLVED_STATUSES,
    Finding,
    FindingStatus,
    Scan,
    ScanFinding,
    ScanMode,
    ScanPhase,
    ScanStatus,
    ScanTrigger,
)
from codepulse.scans.repository import ScanRepository
from codepulse.scans.sarif import build_sarif, fallback_rule
from codepulse.scans.schemas import FindingUpdate, ScanCreate
from codepulse.scans.stats import ScanStats as ScanStats
from codepulse.scans.stats import open_findings_by_severity as open_findings_by_severity
from codepulse.scans.stats import rebuild_scan_days as rebuild_scan_days
from codepulse.scans.stats import scan_stats as scan_stats
from codepulse.usage import service as usage_service

log = structlog.get_logger("codepulse.scans")

TASK_KIND = "scans.run"
WORKER_LOST_MESSAGE = "The worker running this scan stopped before it finished, on every attempt."
METER_KIND = "scan.run"
# Scheduled scans yield to the ones people asked for.
SCHEDULED_PRIORITY = -10


@dataclass(frozen=True)
class ScanAccess:
    """A scan and the caller's access to its organization."""

    scan: Scan
    org: OrgAccess


@dataclass(frozen=True)
class FindingAccess:
    finding: Finding
    org: OrgAccess


@dataclass(frozen=True)
class StartedScan:
    scan: Scan
    created: bool
    """False: an active scan of the same repository and ref was returned instead of a new one."""


@dataclass(frozen=True)
class FindingFilters:
    severities: Collection[str] = ()
    statuses: Collection[str] = ()
    rule: str | None = None
    path: str | None = None
    confidences: Collection[str] = ()


def ref_key(repository: Repository, ref: str | None) -> str:
    """The key of the one-active-scan rule: empty for the default branch (no ref, or the
    repository's default branch by name), else the ref itself."""
    if ref is None or ref == "" or (repository.default_branch is not None and ref == repository.default_branch):
        return ""
    return ref


class ScanService:
    def __init__(self, session: AsyncSession, settings: Settings, clock: ClockFunc) -> None:
        self.session = session
        self.settings = settings
        self.clock = clock
        self.repo = ScanRepository(session)
        self.orgs = OrgService(session, settings, clock)

    # --- access --------------------------------------------------------------------------

    async def _org_access(self, user: User, org_id: uuid.UUID, resource: str, min_role: Role) -> OrgAccess:
        try:
            access = await self.orgs.access(user, org_id, Role.VIEWER)
        except NotFound:
            raise NotFound(resource) from None
        access.require(min_role)
        return access

    async def scan_access(self, user: User, scan_id: uuid.UUID, min_role: Role = Role.VIEWER) -> ScanAccess:
        """404 `scan_not_found` for a missing scan and for outsiders alike; 403 below `min_role`."""
        scan = await self.repo.get_scan(scan_id)
        if scan is None:
            raise NotFound("scan")
        return ScanAccess(scan, await self._org_access(user, scan.org_id, "scan", min_role))

    async def finding_access(self, user: User, finding_id: uuid.UUID, min_role: Role = Role.VIEWER) -> FindingAccess:
        finding = await self.repo.get_finding(finding_id)
        if finding is None:
            raise NotFound("finding")
        return FindingAccess(finding, await self._org_access(user, finding.org_id, "finding", min_role))

    # --- scans ---------------------------------------------------------------------------

    async def request_scan(
        self, target: RepositoryAccess, data: ScanCreate, *, trigger: ScanTrigger = ScanTrigger.MANUAL
    ) -> StartedScan:
        target.org.require(Role.MEMBER)
        repository = target.repository
        if repository.archived:
            raise Conflict("The repository is archived: unarchive it to scan it.", code="repository_archived")
        return await start_scan(
            self.session,
            self.settings,
            self.clock,
            repository,
            ref=data.ref,
            trigger=trigger,
            requested_by=target.org.user.id,
            mode=data.mode,
        )

    async def list_scans(
        self,
        *,
        org: OrgAccess,
        repository_id: uuid.UUID | None,
        statuses: Collection[ScanStatus],
        page: PageRequest,
    ) -> tuple[list[Scan], str | None]:
        query = self.repo.scans_query(org_id=org.org.id, repository_id=repository_id, statuses=statuses)
        return await paginate(self.session, query, order=self.repo.scan_order(), params=page)

    async def cancel(self, target: ScanAccess, ip: str | None) -> Scan:
        """queued: canceled at once (its task too). running: the worker is asked to stop (it polls,
        and marks the scan canceled, discarding partial results), unless no worker runs it any more
        (its task died, or waits for a re-run): canceled at once. Canceled already: unchanged.
        Succeeded or failed: 409 `scan_finished`."""
        target.org.require(Role.MEMBER)
        scan = target.scan
        now = self.clock()
        if await self.repo.cancel_if_queued(scan.id, now):
            if scan.task_id is not None:
                await tasks.cancel_queued(self.session, scan.task_id, now=now)
            await repositories_service.update_scan_summary(
                self.session, scan.repository_id, scan_id=scan.id, status=ScanStatus.CANCELED.value, finished_at=now
            )
            action = "canceled"
        elif await self._nobody_runs(scan) and await lifecycle.finish_canceled(self.session, scan.id, now):
            action = "canceled"
        elif await self.repo.request_cancel(scan.id, now):
            action = "cancel_requested"
        else:
            action = ""
        current = await self.repo.refresh_scan(scan.id)
        if current is None:  # pragma: no cover - the repository was deleted meanwhile
            raise NotFound("scan")
        if not action:
            if current.status in (ScanStatus.SUCCEEDED.value, ScanStatus.FAILED.value):
                raise Conflict(f"The scan has already {current.status}.", code="scan_finished")
            return current  # canceled already, or a cancel is already requested
        await self.orgs.audit(current.org_id, target.org.user, f"scan.{action}", "scan", current.id,
                              {"repository_id": current.repository_id, "ref": current.ref}, ip)  # fmt: skip
        log.info(f"scan.{action}", scan_id=str(current.id))
        return current

    async def _nobody_runs(self, scan: Scan) -> bool:
        """Whether a running scan's task no longer runs it: gone, finished, or queued again after
        its worker died (then canceled here). Such a scan is canceled at once, since no worker
        would ever notice the request."""
        if scan.task_id is None:
            return True
        status = await tasks.task_status(self.session, scan.task_id)
        if status is tasks.TaskStatus.RUNNING:
            return False
        if status is tasks.TaskStatus.QUEUED:
            return await tasks.cancel_queued(self.session, scan.task_id, now=self.clock())
        return True

    # --- findings ------------------------------------------------------------------------

    async def scan_findings(
        self, target: ScanAccess, filters: FindingFilters, page: PageRequest
    ) -> tuple[list[tuple[ScanFinding, str | None, str | None]], str | None]:
        """Rows of (what the scan saw, the tracked finding's status, its dismissal reason)."""
        query = self.repo.scan_findings_query(
            target.scan.id,
            severities=filters.severities,
            statuses=filters.statuses,
            rule=filters.rule,
            path=filters.path,
            confidences=filters.confidences,
        )
        rows, next_cursor = await paginate_rows(self.session, query, order=self.repo.scan_finding_order(), params=page)
        return [(row[0], row[1], row[2]) for row in rows], next_cursor

    async def dismissed_findings(self, target: ScanAccess, finding_ids: Collection[uuid.UUID]) -> list[Finding]:
        """Which of these findings of the scan's repository are dismissed now, with who dismissed
        them, when and why (what a scan's page shows beside each)."""
        return await self.repo.dismissed_findings(target.scan.repository_id, finding_ids)

    async def repository_findings(
        self, target: RepositoryAccess, filters: FindingFilters, page: PageRequest
    ) -> tuple[list[Finding], str | None]:
        """The repository's current findings; unresolved ones (open, in_history) unless `statuses`
        says otherwise."""
        query = self.repo.findings_query(
            target.repository.id,
            severities=filters.severities,
            statuses=filters.statuses or UNRESOLVED_STATUSES,
            rule=filters.rule,
            path=filters.path,
            confidences=filters.confidences,
        )
        return await paginate(self.session, query, order=self.repo.finding_order(), params=page)

    async def update_finding(self, target: FindingAccess, data: FindingUpdate, ip: str | None) -> Finding:
        """Triage: dismiss (`ignored`, `false_positive`, with a reason) or reopen a dismissed one
        (back to `open`, or `in_history` when the last scan that saw it found it only there)."""
        target.org.require(Role.MEMBER)
        finding = target.finding
        wanted = data.status
        if wanted in (FindingStatus.FIXED, FindingStatus.IN_HISTORY):
            raise ValidationFailed(
                [FieldError(field="body.status", code="status_not_settable",
                            message=f"Findings become {wanted.value} when a scan says so.")]
            )  # fmt: skip
        if wanted.dismissed and data.reason is None:
            raise ValidationFailed(
                [FieldError(field="body.reason", code="reason_required", message="Say why it is dismissed.")]
            )
        current = FindingStatus(finding.status)
        if wanted is FindingStatus.OPEN and current is FindingStatus.FIXED:
            raise Conflict("A fixed finding reopens when a scan sees it again.", code="finding_fixed")
        if wanted is FindingStatus.OPEN and not finding.at_head:
            wanted = FindingStatus.IN_HISTORY
        if wanted is current and (not wanted.dismissed or data.reason == finding.dismissed_reason):
            return finding
        now = self.clock()
        if wanted.dismissed:
            finding.status = wanted.value
            finding.dismissed_reason = data.reason
            finding.dismissed_by = target.org.user.id
            finding.dismissed_at = now
        else:
            finding.status = wanted.value
            finding.dismissed_reason = None
            finding.dismissed_by = None
            finding.dismissed_at = None
        finding.updated_at = now
        await self.session.flush()
        await self.orgs.audit(
            finding.org_id,
            target.org.user,
            "finding.status_changed",
            "finding",
            finding.id,
            {"repository_id": finding.repository_id, "rule_id": finding.rule_id, "path": finding.path,
             "from": current.value, "to": wanted.value, "reason": data.reason},
            ip,
        )  # fmt: skip
        await _refresh_summary_counts(self.session, finding.repository_id)
        log.info("finding.status_changed", finding_id=str(finding.id), status=wanted.value)
        return finding

    async def sarif(self, target: ScanAccess) -> dict[str, Any]:
        """The scan's findings as a SARIF 2.1.0 log (GitHub code scanning accepts it): dismissed
        ones suppressed with their triage reason, the repository, commit and branch as provenance."""
        scan = target.scan
        located = [row.located() for row in await self.repo.scan_findings(scan.id)]
        # Only the engines this scan's findings come from (the python engine's rules load bandit).
        known: dict[str, RuleInfo] = {}
        engines = available_engines()
        for name in sorted({finding.engine for finding in located}):
            if name in engines:
                for rule in engines[name].rules():
                    known.setdefault(rule.id, rule)
        rules: dict[str, RuleInfo] = {}
        for finding in located:
            if finding.rule_id not in rules:
                rules[finding.rule_id] = known.get(finding.rule_id) or fallback_rule(finding)
        repository = await repositories_service.get_repository(self.session, scan.repository_id)
        document: dict[str, Any] = build_sarif(
            located,
            list(rules.values()),
            tool_version=__version__,
            # One category per repository: GitHub code scanning keeps each repository's alerts apart.
            automation_id=f"codepulse/{scan.repository_id}/",
            repository_uri=repository.canonical_url if repository is not None else None,
            commit_sha=scan.commit_sha,
            branch=scanned_branch(scan, repository),
            dismissed=await self.repo.dismissed_reasons(scan.id),
        )
        return document


def scanned_branch(scan: Scan, repository: Repository | None) -> str | None:
    """The branch a scan looked at, when known: the repository's default branch (when it names
    one) for a scan of the default branch; else the ref asked for, unless it is a tag or the
    commit itself."""
    if scan.ref_key == "":
        return repository.default_branch if repository is not None else None
    ref = scan.ref or ""
    if ref.startswith("refs/heads/"):
        return ref.removeprefix("refs/heads/") or None
    if not ref or ref.startswith("refs/") or (scan.commit_sha and scan.commit_sha.startswith(ref.lower())):
        return None
    return ref


# --- for other domains and the worker ----------------------------------------------------------


async def require_scan(
    session: AsyncSession,
    settings: Settings,
    clock: ClockFunc,
    user: User,
    scan_id: uuid.UUID,
    min_role: Role = Role.VIEWER,
) -> ScanAccess:
    """The scan and the caller's access: 404 `scan_not_found` for outsiders, 403 below `min_role`."""
    return await ScanService(session, settings, clock).scan_access(user, scan_id, min_role)


async def get_scan(session: AsyncSession, scan_id: uuid.UUID) -> Scan | None:
    """The scan as stored now (a fresh read, not a cached copy): live progress polls this."""
    return await ScanRepository(session).refresh_scan(scan_id)


async def start_scan(
    session: AsyncSession,
    settings: Settings,
    clock: ClockFunc,
    repository: Repository,
    *,
    ref: str | None,
    trigger: ScanTrigger,
    requested_by: uuid.UUID | None,
    mode: ScanMode = ScanMode.HEAD,
) -> StartedScan:
    """Queue a scan of `repository` at `ref` (None: its default branch), in the caller's unit of
    work: the quota is checked, the scan metered (usage event `scan.run`) and its task enqueued,
    so all of them commit together or not at all. An active scan of the same repository, ref and
    mode is returned instead (`created=False`; not metered again); one of the other mode is a
    409 `scan_active`. Raises QuotaExceeded (402)."""
    repo = ScanRepository(session)
    key = ref_key(repository, ref)
    now = clock()
    existing = await repo.active_scan(repository.id, key)
    if existing is not None and await _task_gone(session, existing):
        # Stuck: its task died before dead tasks failed their scans. Settle it, queue anew.
        await lifecycle.abandon_scan(session, existing.id, "worker_lost", WORKER_LOST_MESSAGE, now)
        existing = None
    if existing is not None:
        return _same_scan(existing, mode)
    await _ensure_quota(session, settings, repository.org_id, now)
    scan = Scan(
        id=uuid.uuid4(),
        org_id=repository.org_id,
        repository_id=repository.id,
        requested_by=requested_by,
        trigger=trigger.value,
        ref=ref or None,
        ref_key=key,
        mode=mode.value,
        status=ScanStatus.QUEUED.value,
        phase=ScanPhase.QUEUED.value,
        queued_at=now,
        created_at=now,
        updated_at=now,
    )
    if not await repo.add_active_scan(scan):
        # Another request queued the same repository and ref between our check and insert.
        log.info("scan.request_raced", repository_id=str(repository.id))
        existing = await repo.active_scan(repository.id, key)
        if existing is None:  # pragma: no cover - it finished in between: a rare double race
            raise Conflict("A scan of this ref just changed state; retry.", code="scan_conflict")
        return _same_scan(existing, mode)
    await usage_service.record_event(
        session, repository.org_id, METER_KIND, idempotency_key=f"scan:{scan.id}", occurred_at=now
    )
    task = await tasks.enqueue(
        session,
        TASK_KIND,
        {"scan_id": str(scan.id)},
        now=now,
        priority=SCHEDULED_PRIORITY if trigger is ScanTrigger.SCHEDULE else 0,
        unique_key=f"scan:{scan.id}",
    )
    scan.task_id = task.id
    await session.flush()
    log.info("scan.queued", scan_id=str(scan.id), repository_id=str(repository.id), trigger=trigger.value)
    return StartedScan(scan, created=True)


def _same_scan(existing: Scan, mode: ScanMode) -> StartedScan:
    """The active scan of the ref, when it is the one asked for (one active scan per ref)."""
    if existing.mode != mode.value:
        raise Conflict(
            f"A {existing.mode} scan of this ref is {existing.status}: wait for it, or cancel it.", code="scan_active"
        )
    return StartedScan(existing, created=False)


async def _task_gone(session: AsyncSession, scan: Scan) -> bool:
    """Whether an active scan's task no longer exists or has finished: nobody will run it."""
    if scan.task_id is None:
        return True
    status = await tasks.task_status(session, scan.task_id)
    return status not in (tasks.TaskStatus.QUEUED, tasks.TaskStatus.RUNNING)


async def _ensure_quota(session: AsyncSession, settings: Settings, org_id: uuid.UUID, now: datetime) -> None:
    """Room for one more scan this month on the organization's plan."""
    await check_quota(session, settings, org_id, QuotaResource.SCANS_PER_MONTH, now=now)


async def scans_since(session: AsyncSession, org_id: uuid.UUID, since: datetime) -> int:
    """How many scans the organization started since `since` (metered when queued)."""
    return await usage_service.count_events(session, org_id, METER_KIND, since)


async def _refresh_summary_counts(session: AsyncSession, repository_id: uuid.UUID) -> None:
    """Keep the repository's open-findings summary current after triage."""
    repository = await repositories_service.get_repository(session, repository_id)
    if repository is None or repository.last_scan_id is None or repository.last_scan_finished_at is None:
        return
    counts = await ScanRepository(session).open_counts(repository_id)
    await repositories_service.update_scan_summary(
        session,
        repository_id,
        scan_id=repository.last_scan_id,
        status=repository.last_scan_status or ScanStatus.SUCCEEDED.value,
        finished_at=repository.last_scan_finished_at,
        open_findings={severity: counts.get(severity, 0) for severity in SUMMARY_SEVERITIES},
    )
