"""One scan's page: its status and live progress, cancel (member+), what it found with filters
(severity, status, rule, path; htmx swaps the table), triage (member+: ignore or false positive
with a reason, reopen) and the SARIF download. Through the scans service, as
`/api/v1/scans/{id}`, `/findings`, `/sarif`, `/cancel` and `PATCH /api/v1/findings/{id}` do.

Live progress: `GET /orgs/{slug}/scans/{id}/events` is the scans slice's own Server-Sent Events
stream (`codepulse.scans.live`) for the cookie's session — a browser's EventSource sends the
cookie, never a bearer token; the API's stream keeps accepting bearer tokens only. It ends when the
scan does, or when the web session ends (a `signed_out` event). static/scan.js follows it.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import Depends, Query, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from pydantic import ValidationError

from codepulse.auth import service as auth_service
from codepulse.auth.dependencies import device_of
from codepulse.errors import ValidationFailed
from codepulse.orgs.dependencies import OrgServiceDep
from codepulse.orgs.service import Role
from codepulse.pagination import PageRequest
from codepulse.repositories import service as repositories_service
from codepulse.repositories.schemas import RepositoryOut
from codepulse.routing import DomainRouter
from codepulse.scans.dependencies import ScanServiceDep
from codepulse.scans.live import event_stream_response
from codepulse.scans.schemas import FindingUpdate, ScanFindingRead, ScanRead
from codepulse.scans.service import FindingFilters, ScanAccess, ScanService
from codepulse.web.forms import MAX_FORM_BYTES, FieldErrors, field_errors, read_form, validation_errors
from codepulse.web.rendering import render
from codepulse.web.repositories import PAGE_STYLES, roles, scan_path
from codepulse.web.scoped import finding_access, scan_access
from codepulse.web.session import SessionCsrf, SignedIn

router = DomainRouter(tags=["web"])

SARIF_MEDIA_TYPE = "application/sarif+json"
FINDINGS_LIMIT = 100
SEVERITIES = ("critical", "high", "medium", "low", "info")
STATUSES = ("open", "in_history", "fixed", "ignored", "false_positive")
DISMISSALS = (("false_positive", "False positive"), ("ignored", "Ignore"))
ACTIVE = ("queued", "running")
TEXT_MAX = 1024
# The triage forms carry the table's filters under these names (`status` is the triage's own).
FILTER_PREFIX = "filter_"


@dataclass(frozen=True)
class Filters:
    """The findings table's filters, as the query string (or the triage form) gives them: an
    unknown severity or status means no filter on it."""

    severity: str = ""
    status: str = ""
    rule: str = ""
    path: str = ""

    @classmethod
    def of(cls, values: dict[str, str]) -> Filters:
        def text(name: str) -> str:
            return (values.get(name) or "").strip()[:TEXT_MAX]

        severity, status_ = text("severity"), text("status")
        return cls(
            severity=severity if severity in SEVERITIES else "",
            status=status_ if status_ in STATUSES else "",
            rule=text("rule"),
            path=text("path"),
        )

    def service(self) -> FindingFilters:
        return FindingFilters(
            severities=[self.severity] if self.severity else [],
            statuses=[self.status] if self.status else [],
            rule=self.rule or None,
            path=self.path or None,
        )

    def query(self, **extra: str) -> str:
        pairs = {k: v for k, v in {**self.__dict__, **extra}.items() if v}
        return urlencode(pairs)

    @property
    def active(self) -> bool:
        return any(self.__dict__.values())


def _filters_of_query(severity: str | None, status_: str | None, rule: str | None, path: str | None) -> Filters:
    return Filters.of({"severity": severity or "", "status": status_ or "", "rule": rule or "", "path": path or ""})


async def _findings_context(
    service: ScanService, target: ScanAccess, filters: Filters, cursor: str | None
) -> dict[str, Any]:
    rows, next_cursor = await service.scan_findings(
        target, filters.service(), PageRequest(limit=FINDINGS_LIMIT, cursor=cursor)
    )
    slug = target.org.org.slug
    findings = [ScanFindingRead.of(row, current, reason) for row, current, reason in rows]
    return {
        "findings": findings,
        "dismissals": await _dismissals(service, target, findings),
        "next_cursor": next_cursor,
        "filters": filters,
        "findings_url": f"{scan_path(slug, target.scan.id)}/findings",
        "severities": SEVERITIES,
        "statuses": STATUSES,
        "dismiss_as": DISMISSALS,
        "triage_errors": {},
        "can_triage": target.org.role.at_least(Role.MEMBER),
        "scan": ScanRead.of(target.scan),
        "org": target.org.org,
    }


@dataclass(frozen=True)
class Dismissal:
    """Why, by whom and when a finding of the table was dismissed (the template escapes them)."""

    reason: str | None
    by: str | None
    """The dismisser's username; None once that account is gone."""
    at: datetime | None


async def _dismissals(
    service: ScanService, target: ScanAccess, findings: list[ScanFindingRead]
) -> dict[uuid.UUID, Dismissal]:
    """The dismissed findings' triage, by finding id: two short reads, only when some are dismissed."""
    dismissed = {finding.id for finding in findings if finding.id is not None and finding.status.dismissed}
    if not dismissed:
        return {}
    tracked = await service.dismissed_findings(target, dismissed)
    people = await auth_service.users_by_ids(service.session, {f.dismissed_by for f in tracked if f.dismissed_by})
    return {
        finding.id: Dismissal(
            reason=finding.dismissed_reason,
            by=people[finding.dismissed_by].username if finding.dismissed_by in people else None,
            at=finding.dismissed_at,
        )
        for finding in tracked
    }


TextQuery = Annotated[str | None, Query(max_length=TEXT_MAX)]


def _findings_query(
    severity: TextQuery = None,
    status: TextQuery = None,
    rule: TextQuery = None,
    path: TextQuery = None,
    cursor: TextQuery = None,
) -> tuple[Filters, str | None]:
    """The findings table's filters and page, from the scan page's or the table's query string."""
    return _filters_of_query(severity, status, rule, path), cursor


FindingsQuery = Annotated[tuple[Filters, str | None], Depends(_findings_query)]


@router.get("/orgs/{slug}/scans/{scan_id}", include_in_schema=False, response_class=HTMLResponse)
async def scan_page(
    request: Request,
    slug: str,
    scan_id: uuid.UUID,
    viewer: SignedIn,
    orgs: OrgServiceDep,
    service: ScanServiceDep,
    query: FindingsQuery,
) -> HTMLResponse:
    target = await scan_access(orgs, service, viewer, slug, scan_id)
    repository = await repositories_service.get_repository(orgs.session, target.scan.repository_id)
    context = await _findings_context(service, target, *query)
    scan = context["scan"]
    return render(
        request,
        "scan.html",
        repository=RepositoryOut.of(repository) if repository is not None else None,
        live=scan.status.value in ACTIVE,
        stream_url=f"{scan_path(slug, scan_id)}/events",
        page_scripts=("scan.js",),
        page_styles=PAGE_STYLES,
        **(roles(target.org) | context),
    )


@router.get("/orgs/{slug}/scans/{scan_id}/findings", include_in_schema=False, response_class=HTMLResponse)
async def findings_table(
    request: Request,
    slug: str,
    scan_id: uuid.UUID,
    viewer: SignedIn,
    orgs: OrgServiceDep,
    service: ScanServiceDep,
    query: FindingsQuery,
) -> HTMLResponse:
    """The findings table alone, for htmx (the filters, the next page)."""
    target = await scan_access(orgs, service, viewer, slug, scan_id)
    context = await _findings_context(service, target, *query)
    return render(request, "_findings.html", **context)


@router.get(
    "/orgs/{slug}/scans/{scan_id}/events",
    include_in_schema=False,
    response_class=StreamingResponse,
)
async def scan_events(
    request: Request, slug: str, scan_id: uuid.UUID, viewer: SignedIn, orgs: OrgServiceDep, service: ScanServiceDep
) -> StreamingResponse:
    """The scans slice's event stream, for this browser's session."""
    target = await scan_access(orgs, service, viewer, slug, scan_id)
    return event_stream_response(request, target.scan.id, viewer.session_id)


@router.get("/orgs/{slug}/scans/{scan_id}/sarif", include_in_schema=False, response_class=Response)
async def scan_sarif(
    slug: str, scan_id: uuid.UUID, viewer: SignedIn, orgs: OrgServiceDep, service: ScanServiceDep
) -> Response:
    """The same SARIF 2.1.0 log as `GET /api/v1/scans/{id}/sarif`, as a download."""
    target = await scan_access(orgs, service, viewer, slug, scan_id)
    document = await service.sarif(target)
    return Response(
        content=json.dumps(document, separators=(",", ":")),
        media_type=SARIF_MEDIA_TYPE,
        headers={
            "Content-Disposition": f'attachment; filename="codepulse-scan-{target.scan.id}.sarif"',
            "Cache-Control": "no-store",
        },
    )


@router.post(
    "/orgs/{slug}/scans/{scan_id}/cancel",
    include_in_schema=False,
    response_class=HTMLResponse,
    max_body_size=MAX_FORM_BYTES,
)
async def cancel_scan(
    request: Request, slug: str, scan_id: uuid.UUID, viewer: SessionCsrf, orgs: OrgServiceDep, service: ScanServiceDep
) -> Response:
    target = await scan_access(orgs, service, viewer, slug, scan_id, Role.MEMBER)
    await service.cancel(target, device_of(request).ip)
    return RedirectResponse(scan_path(slug, scan_id), status_code=status.HTTP_303_SEE_OTHER)


@router.post(
    "/orgs/{slug}/scans/{scan_id}/findings/{finding_id}",
    include_in_schema=False,
    response_class=HTMLResponse,
    max_body_size=MAX_FORM_BYTES,
)
async def triage(
    request: Request,
    slug: str,
    scan_id: uuid.UUID,
    finding_id: uuid.UUID,
    viewer: SessionCsrf,
    orgs: OrgServiceDep,
    service: ScanServiceDep,
) -> Response:
    """Dismiss (`ignored`, `false_positive`, with a reason) or reopen (`open`) a finding seen by
    this scan. htmx gets the findings table back (filters kept; errors beside the finding's row),
    a plain form a redirect to the scan's page (or the 422 page)."""
    target = await scan_access(orgs, service, viewer, slug, scan_id, Role.MEMBER)
    finding = await finding_access(orgs, service, viewer, slug, finding_id, Role.MEMBER)
    form = await read_form(request)
    filters = Filters.of({k.removeprefix(FILTER_PREFIX): v for k, v in form.items() if k.startswith(FILTER_PREFIX)})
    reason = (form.get("reason") or "").strip() or None
    errors: FieldErrors = {}
    try:
        body = FindingUpdate.model_validate({"status": form.get("status", ""), "reason": reason})
        await service.update_finding(finding, body, device_of(request).ip)
    except ValidationError as error:
        errors = validation_errors(error)
    except ValidationFailed as error:
        errors = field_errors(error.errors)
    htmx = bool(request.headers.get("hx-request"))
    if errors and not htmx:
        message = "; ".join(m for messages in errors.values() for m in messages)
        raise ValidationFailed([], detail=message)
    if not htmx:
        query = filters.query()
        return RedirectResponse(
            scan_path(slug, scan_id) + (f"?{query}" if query else ""), status_code=status.HTTP_303_SEE_OTHER
        )
    context = await _findings_context(service, target, filters, None)
    context["triage_errors"] = {str(finding_id): errors} if errors else {}
    return render(request, "_findings.html", **context)
