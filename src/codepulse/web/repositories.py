"""An organization's repositories: the list (last scan, open findings by severity; archived ones
hidden unless asked for), connecting one by URL (admin+; the API's validation, errors beside the
fields), importing from GitHub when the integration is configured (admin+), one repository's page
with its recent scans, scan now (member+; the head, or the history) and archive / unarchive
(admin+). Through the repositories and scans services, as `/api/v1/orgs/{org}/repositories`,
`/api/v1/repositories/{id}` and `/api/v1/repositories/{id}/scans` do.
"""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from codepulse.auth.dependencies import device_of
from codepulse.errors import Conflict, FieldError, QuotaExceeded, ValidationFailed
from codepulse.orgs.dependencies import OrgServiceDep
from codepulse.orgs.service import OrgAccess, Role
from codepulse.pagination import PageRequest
from codepulse.repositories.dependencies import GitHubClientDep, RepositoryServiceDep, SecretBoxDep
from codepulse.repositories.schemas import (
    GitHubImport,
    RepositoryCreate,
    RepositoryOut,
    RepositorySort,
    RepositoryUpdate,
)
from codepulse.routing import DomainRouter
from codepulse.scans.dependencies import ScanServiceDep
from codepulse.scans.schemas import ScanCreate, ScanRead
from codepulse.web.forms import MAX_FORM_BYTES, FieldErrors, field_errors, read_form, validation_errors
from codepulse.web.rendering import render
from codepulse.web.scoped import org_access, repository_access
from codepulse.web.session import SessionCsrf, SignedIn

router = DomainRouter(tags=["web"])

LIST_LIMIT = 50
RECENT_SCANS = 20
PAGE_STYLES = ("repos.css",)


def repositories_path(slug: str) -> str:
    return f"/orgs/{slug}/repositories"


def repository_path(slug: str, repository_id: uuid.UUID) -> str:
    return f"{repositories_path(slug)}/{repository_id}"


def scan_path(slug: str, scan_id: uuid.UUID) -> str:
    return f"/orgs/{slug}/scans/{scan_id}"


def _see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=status.HTTP_303_SEE_OTHER)


def roles(access: OrgAccess) -> dict[str, Any]:
    """What a page may offer: scans and triage (member+), connecting and archiving (admin+)."""
    return {
        "org": access.org,
        "role": access.role.value,
        "can_scan": access.role.at_least(Role.MEMBER),
        "can_admin": access.role.at_least(Role.ADMIN),
    }


# --- the list ----------------------------------------------------------------------------------


@router.get("/repositories", include_in_schema=False, response_class=HTMLResponse)
async def my_repositories(request: Request, viewer: SignedIn, orgs: OrgServiceDep) -> Response:
    """The header's link: the repositories of my first organization (or how to get one)."""
    mine, _ = await orgs.list_mine(viewer.user, PageRequest(limit=1))
    if mine:
        return _see_other(repositories_path(mine[0][0].slug))
    return render(request, "repositories_none.html", page_styles=PAGE_STYLES)


async def _list_page(
    request: Request,
    access: OrgAccess,
    service: RepositoryServiceDep,
    *,
    status_code: int = 200,
    include_archived: bool = False,
    cursor: str | None = None,
    **context: Any,
) -> HTMLResponse:
    repositories, next_cursor = await service.list_repositories(
        access,
        q=None,
        provider=None,
        archived=None if include_archived else False,
        sort=RepositorySort.NAME,
        page=PageRequest(limit=LIST_LIMIT, cursor=cursor),
    )
    context.setdefault("values", {})
    context.setdefault("errors", {})
    context.setdefault("import_errors", {})
    context.setdefault("imported", None)
    settings = request.app.state.settings
    return render(
        request,
        "repositories.html",
        status_code=status_code,
        repositories=[RepositoryOut.of(r) for r in repositories],
        next_cursor=next_cursor,
        include_archived=include_archived,
        github_import=bool(settings.GITHUB_CLIENT_ID),
        local_allowed=settings.ALLOW_LOCAL_REPOSITORIES,
        page_styles=PAGE_STYLES,
        **roles(access),
        **context,
    )


@router.get("/orgs/{slug}/repositories", include_in_schema=False, response_class=HTMLResponse)
async def repositories_page(
    request: Request,
    slug: str,
    viewer: SignedIn,
    orgs: OrgServiceDep,
    service: RepositoryServiceDep,
    archived: bool = False,
    cursor: str | None = None,
) -> HTMLResponse:
    access = await org_access(orgs, viewer, slug)
    return await _list_page(request, access, service, include_archived=archived, cursor=cursor)


def _optional(value: str | None) -> str | None:
    value = (value or "").strip()
    return value or None


@router.post(
    "/orgs/{slug}/repositories", include_in_schema=False, response_class=HTMLResponse, max_body_size=MAX_FORM_BYTES
)
async def connect_repository(
    request: Request, slug: str, viewer: SessionCsrf, orgs: OrgServiceDep, service: RepositoryServiceDep
) -> Response:
    access = await org_access(orgs, viewer, slug, Role.ADMIN)
    form = await read_form(request)
    values = {name: form.get(name, "") for name in ("clone_url", "name", "default_branch")}
    errors: FieldErrors
    try:
        body = RepositoryCreate.model_validate(
            {
                "clone_url": values["clone_url"],
                "name": _optional(values["name"]),
                "default_branch": _optional(values["default_branch"]),
            }
        )
        repository = await service.create(access, body, device_of(request).ip)
    except ValidationError as error:
        errors = validation_errors(error)
    except ValidationFailed as error:
        errors = field_errors(error.errors)
    except Conflict as error:
        errors = {"clone_url": [error.detail or error.title]}
    except QuotaExceeded as error:
        errors = {"form": [error.detail or error.title]}
    else:
        return _see_other(repository_path(slug, repository.id))
    return await _list_page(request, access, service, status_code=422, values=values, errors=errors)


@router.post(
    "/orgs/{slug}/repositories/import",
    include_in_schema=False,
    response_class=HTMLResponse,
    max_body_size=MAX_FORM_BYTES,
)
async def import_repositories(
    request: Request,
    slug: str,
    viewer: SessionCsrf,
    orgs: OrgServiceDep,
    service: RepositoryServiceDep,
    github: GitHubClientDep,
    box: SecretBoxDep,
) -> Response:
    """Connect GitHub repositories by `owner/name` (one a line) through my linked GitHub account."""
    access = await org_access(orgs, viewer, slug, Role.ADMIN)
    form = await read_form(request)
    values = {"full_names": form.get("full_names", "")}
    names = [name.strip() for name in values["full_names"].replace(",", "\n").splitlines() if name.strip()]
    errors: FieldErrors
    try:
        body = GitHubImport.model_validate({"full_names": names})
        result = await service.import_from_github(
            access,
            github,
            box,
            body.full_names,
            body.scan_schedule,
            link_url=str(request.url_for("github_link_start")),
            ip=device_of(request).ip,
        )
    except ValidationError as error:
        errors = validation_errors(error)
    except ValidationFailed as error:
        errors = {"full_names": [e.message for e in error.errors] or [error.detail or error.title]}
    except (Conflict, QuotaExceeded) as error:
        errors = {"full_names": [error.detail or error.title]}
    else:
        imported = [RepositoryOut.of(r) for r in (*result.imported, *result.already_connected)]
        return await _list_page(request, access, service, imported=imported)
    return await _list_page(request, access, service, status_code=422, values=values, import_errors=errors)


# --- one repository ------------------------------------------------------------------------------


@router.get("/orgs/{slug}/repositories/{repository_id}", include_in_schema=False, response_class=HTMLResponse)
async def repository_page(
    request: Request,
    slug: str,
    repository_id: uuid.UUID,
    viewer: SignedIn,
    orgs: OrgServiceDep,
    scans: ScanServiceDep,
) -> HTMLResponse:
    target = await repository_access(orgs, viewer, slug, repository_id)
    recent, _ = await scans.list_scans(
        org=target.org, repository_id=repository_id, statuses=(), page=PageRequest(limit=RECENT_SCANS)
    )
    return render(
        request,
        "repository.html",
        repository=RepositoryOut.of(target.repository),
        scans=[ScanRead.of(scan) for scan in recent],
        page_styles=PAGE_STYLES,
        **roles(target.org),
    )


@router.post(
    "/orgs/{slug}/repositories/{repository_id}/scans",
    include_in_schema=False,
    response_class=HTMLResponse,
    max_body_size=MAX_FORM_BYTES,
)
async def scan_now(
    request: Request,
    slug: str,
    repository_id: uuid.UUID,
    viewer: SessionCsrf,
    orgs: OrgServiceDep,
    scans: ScanServiceDep,
) -> Response:
    """Queue a scan of the default branch (`mode`: head or history) and follow it on its page; a
    scan already queued or running in that mode is the one followed."""
    target = await repository_access(orgs, viewer, slug, repository_id, Role.MEMBER)
    form = await read_form(request)
    try:
        data = ScanCreate.model_validate({"mode": form.get("mode") or "head"})
    except ValidationError:
        message = "Choose head or history."
        raise ValidationFailed(
            [FieldError(field="mode", message=message, code="invalid_mode")], detail=message
        ) from None
    started = await scans.request_scan(target, data)
    return _see_other(scan_path(slug, started.scan.id))


async def _set_archived(
    request: Request, slug: str, repository_id: uuid.UUID, viewer: SessionCsrf, orgs: OrgServiceDep,
    service: RepositoryServiceDep, archived: bool,
) -> Response:  # fmt: skip
    target = await repository_access(orgs, viewer, slug, repository_id, Role.ADMIN)
    await service.update(target, RepositoryUpdate(archived=archived), device_of(request).ip)
    return _see_other(repository_path(slug, repository_id))


@router.post(
    "/orgs/{slug}/repositories/{repository_id}/archive",
    include_in_schema=False,
    response_class=HTMLResponse,
    max_body_size=MAX_FORM_BYTES,
)
async def archive(
    request: Request,
    slug: str,
    repository_id: uuid.UUID,
    viewer: SessionCsrf,
    orgs: OrgServiceDep,
    service: RepositoryServiceDep,
) -> Response:
    return await _set_archived(request, slug, repository_id, viewer, orgs, service, True)


@router.post(
    "/orgs/{slug}/repositories/{repository_id}/unarchive",
    include_in_schema=False,
    response_class=HTMLResponse,
    max_body_size=MAX_FORM_BYTES,
)
async def unarchive(
    request: Request,
    slug: str,
    repository_id: uuid.UUID,
    viewer: SessionCsrf,
    orgs: OrgServiceDep,
    service: RepositoryServiceDep,
) -> Response:
    return await _set_archived(request, slug, repository_id, viewer, orgs, service, False)
