"""HTTP endpoints of the scans domain: scans of a repository, of an organization, one scan (cancel,
findings, SARIF), a repository's current findings, and triage of a finding."""

from __future__ import annotations

import json
import uuid
from typing import Annotated

from fastapi import Query, Request, Response, status

from codepulse.auth.dependencies import CurrentSession, device_of
from codepulse.auth.service import SessionKind
from codepulse.orgs.dependencies import OrgViewer
from codepulse.pagination import Page, PageParams
from codepulse.repositories.dependencies import RepositoryMemberAccess, RepositoryViewer
from codepulse.routing import DomainRouter
from codepulse.scans.dependencies import FindingMemberAccess, ScanMemberAccess, ScanServiceDep, ScanViewer
from codepulse.scans.models import (
    RULE_MAX_LENGTH,
    FindingConfidence,
    FindingSeverity,
    FindingStatus,
    ScanStatus,
    ScanTrigger,
)
from codepulse.scans.schemas import FindingRead, FindingUpdate, ScanCreate, ScanFindingRead, ScanRead
from codepulse.scans.service import FindingFilters

router = DomainRouter(tags=["scans"])

SARIF_MEDIA_TYPE = "application/sarif+json"

StatusFilter = Annotated[list[ScanStatus] | None, Query(description="Only scans with these statuses (repeatable).")]
SeverityFilter = Annotated[list[FindingSeverity] | None, Query(description="Only these severities (repeatable).")]
ConfidenceFilter = Annotated[list[FindingConfidence] | None, Query(description="Only these confidences (repeatable).")]
FindingStatusFilter = Annotated[list[FindingStatus] | None, Query(description="Only these statuses (repeatable).")]
RuleFilter = Annotated[str | None, Query(min_length=1, max_length=RULE_MAX_LENGTH, description="A rule id.")]
PathFilter = Annotated[
    str | None, Query(min_length=1, max_length=1024, description="A file path, or the start of one (a directory).")
]


def _ip(request: Request) -> str | None:
    return device_of(request).ip


def _filters(
    severity: list[FindingSeverity] | None,
    finding_status: list[FindingStatus] | None,
    rule: str | None,
    path: str | None,
    confidence: list[FindingConfidence] | None = None,
) -> FindingFilters:
    return FindingFilters(
        severities=[s.value for s in severity or ()],
        confidences=[c.value for c in confidence or ()],
        statuses=[s.value for s in finding_status or ()],
        rule=rule,
        path=path,
    )


@router.post(
    "/repositories/{repository_id}/scans",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Scan a repository (member+)",
    responses={200: {"model": ScanRead, "description": "A scan of this ref is already queued or running: that one."}},
)
async def create_scan(
    target: RepositoryMemberAccess,
    auth: CurrentSession,
    service: ScanServiceDep,
    response: Response,
    body: ScanCreate | None = None,
) -> ScanRead:
    """Queues a scan of `ref` (the default branch when omitted): 202 with the new scan. `mode`
    `history` reads every file version reachable from the ref for secrets (findings only in the
    history become `in_history`: rotate them). At most one scan per repository and ref is queued
    or running: asking again in the same mode answers that one (200), in the other mode is a 409
    `scan_active`. 402 `quota_exceeded` when the organization used this month's scans; 409
    `repository_archived` for an archived repository. The trigger is `api` for a CLI token,
    `manual` for a signed-in session."""
    trigger = ScanTrigger.API if auth.kind == SessionKind.CLI.value else ScanTrigger.MANUAL
    started = await service.request_scan(target, body or ScanCreate(), trigger=trigger)
    if not started.created:
        response.status_code = status.HTTP_200_OK
    return ScanRead.of(started.scan)


@router.get("/repositories/{repository_id}/scans", summary="A repository's scans, most recent first")
async def list_repository_scans(
    target: RepositoryViewer, service: ScanServiceDep, page: PageParams, status: StatusFilter = None
) -> Page[ScanRead]:
    scans, next_cursor = await service.list_scans(
        org=target.org, repository_id=target.repository.id, statuses=status or (), page=page
    )
    return Page(items=[ScanRead.of(scan) for scan in scans], next_cursor=next_cursor)


@router.get("/orgs/{org}/scans", summary="The organization's scans, most recent first")
async def list_org_scans(
    access: OrgViewer,
    service: ScanServiceDep,
    page: PageParams,
    status: StatusFilter = None,
    repository_id: Annotated[uuid.UUID | None, Query(description="Only this repository's scans.")] = None,
) -> Page[ScanRead]:
    scans, next_cursor = await service.list_scans(
        org=access, repository_id=repository_id, statuses=status or (), page=page
    )
    return Page(items=[ScanRead.of(scan) for scan in scans], next_cursor=next_cursor)


@router.get("/scans/{scan_id}", summary="One scan, with its progress")
async def get_scan(target: ScanViewer) -> ScanRead:
    return ScanRead.of(target.scan)


@router.post("/scans/{scan_id}/cancel", summary="Cancel a scan (member+)")
async def cancel_scan(request: Request, target: ScanMemberAccess, service: ScanServiceDep) -> ScanRead:
    """A queued scan is canceled at once; a running one keeps `running` with `cancel_requested_at`
    set until its worker stops (within about a second) and marks it `canceled`, discarding
    partial results. Canceling a canceled scan changes nothing; 409 `scan_finished` for one that
    succeeded or failed."""
    return ScanRead.of(await service.cancel(target, _ip(request)))


@router.get("/scans/{scan_id}/findings", summary="What one scan saw")
async def list_scan_findings(
    target: ScanViewer,
    service: ScanServiceDep,
    page: PageParams,
    severity: SeverityFilter = None,
    status: FindingStatusFilter = None,
    rule: RuleFilter = None,
    path: PathFilter = None,
    confidence: ConfidenceFilter = None,
) -> Page[ScanFindingRead]:
    """Most severe first. `status` filters on each finding's current status."""
    filters = _filters(severity, status, rule, path, confidence)
    rows, next_cursor = await service.scan_findings(target, filters, page)
    return Page(
        items=[ScanFindingRead.of(row, current, reason) for row, current, reason in rows], next_cursor=next_cursor
    )


@router.get(
    "/scans/{scan_id}/sarif",
    summary="One scan's findings as SARIF 2.1.0",
    response_class=Response,
    responses={200: {"content": {SARIF_MEDIA_TYPE: {"schema": {"type": "object"}}}, "description": "A SARIF log."}},
)
async def get_scan_sarif(target: ScanViewer, service: ScanServiceDep) -> Response:
    """A SARIF 2.1.0 log GitHub code scanning accepts (upload it with `github/codeql-action/upload-sarif`)."""
    document = await service.sarif(target)
    return Response(
        content=json.dumps(document, separators=(",", ":")),
        media_type=SARIF_MEDIA_TYPE,
        headers={"Content-Disposition": f'attachment; filename="codepulse-scan-{target.scan.id}.sarif"'},
    )


@router.get("/repositories/{repository_id}/findings", summary="A repository's findings, as they stand")
async def list_repository_findings(
    target: RepositoryViewer,
    service: ScanServiceDep,
    page: PageParams,
    severity: SeverityFilter = None,
    status: Annotated[
        list[FindingStatus] | None,
        Query(description="Only these statuses (repeatable); `open` and `in_history` when omitted."),
    ] = None,
    rule: RuleFilter = None,
    path: PathFilter = None,
    confidence: ConfidenceFilter = None,
) -> Page[FindingRead]:
    """Most severe first; from the default branch's scans and triage."""
    filters = _filters(severity, status, rule, path, confidence)
    findings, next_cursor = await service.repository_findings(target, filters, page)
    return Page(items=[FindingRead.model_validate(finding) for finding in findings], next_cursor=next_cursor)


@router.patch("/findings/{finding_id}", summary="Triage a finding (member+)")
async def update_finding(
    body: FindingUpdate, request: Request, target: FindingMemberAccess, service: ScanServiceDep
) -> FindingRead:
    """`ignored` or `false_positive` with a `reason` dismiss it: later scans keep it dismissed.
    `open` reopens a dismissed finding (as `in_history` when the last scan that saw it found it
    only in the history). Audit-logged as `finding.status_changed`."""
    return FindingRead.model_validate(await service.update_finding(target, body, _ip(request)))
