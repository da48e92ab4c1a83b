"""An organization's repositories: the list (last scan, open findings by severity; archived ones
hidden unless asked for), connecting one by URL (admin+; the API's validation, errors beside the
fields), importing from GitHub when the integration is configured (admin+), one repository's page
with its recent scans, scan now (member+; the head, or the history) and archive / unarchive
(admin+). Through the repositories and scans services, as `/api/v1/orgs/{org}/repositories`,
`/api/v1/repositories/{id}` and `/api/v1/repositories/{id}/scans` do.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Query, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.types import DecoratedCallable
from pydantic import ValidationError

from codepulse.auth.dependencies import device_of
from codepulse.errors import (
    Conflict,
    DomainError,
    FieldError,
    NotFound,
    QuotaExceeded,
    ServiceUnavailable,
    ValidationFailed,
)
from codepulse.orgs.dependencies import OrgServiceDep
from codepulse.orgs.service import OrgAccess, Role
from codepulse.pagination import PageRequest
from codepulse.repositories.dependencies import GitHubClientDep, RepositoryServiceDep, SecretBoxDep
from codepulse.repositories.schemas import (
    GitHubImport,
    GitHubRepositoryList,
    RepositoryCreate,
    RepositoryOut,
    RepositorySort,
    RepositoryUpdate,
)
from codepulse.routing import DomainRouter
from codepulse.scans.dependencies import ScanServiceDep
from codepulse.scans.schemas import ScanCreate, ScanRead
from codepulse.web.forms import (
    MAX_FORM_BYTES,
    FieldErrors,
    field_errors,
    read_form,
    read_form_list,
    validation_errors,
)
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


def _form_post(path: str) -> Callable[[DecoratedCallable], DecoratedCallable]:
    """The route of one of these pages' forms: an HTML answer, a form-sized body, not in the API's schema."""
    return router.post(path, include_in_schema=False, response_class=HTMLResponse, max_body_size=MAX_FORM_BYTES)


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


# The service's GitHub refusals as the page says them (its own details speak of the API's link_url).
GITHUB_PROBLEMS = {
    "github_not_linked": "Link your GitHub account in Settings first: repositories are imported through it.",
    "github_reauth_required": "GitHub no longer accepts your linked account: link GitHub again in Settings.",
    "github_unavailable": "GitHub did not answer; try again shortly.",
}
# What the forms answer beside their fields rather than as an error page.
FORM_REFUSALS = (ValidationError, ValidationFailed, Conflict, QuotaExceeded)


def _refusal(error: ValidationError | DomainError, field: str) -> FieldErrors:
    """A refused form's messages by field: the API's field errors beside their fields, a conflict
    beside the form's main `field`, anything else (the plan's quota, GitHub) above the form."""
    if isinstance(error, ValidationError):
        return validation_errors(error)
    if isinstance(error, ValidationFailed):
        return field_errors(error.errors) or {field: [error.detail or error.title]}
    message = GITHUB_PROBLEMS.get(error.instance_code, error.detail or error.title)
    return {field if isinstance(error, Conflict) else "form": [message]}


@_form_post("/orgs/{slug}/repositories")
async def connect_repository(
    request: Request, slug: str, viewer: SessionCsrf, orgs: OrgServiceDep, service: RepositoryServiceDep
) -> Response:
    access = await org_access(orgs, viewer, slug, Role.ADMIN)
    form = await read_form(request)
    values = {name: form.get(name, "") for name in ("clone_url", "name", "default_branch")}
    try:
        body = RepositoryCreate.model_validate(
            {
                "clone_url": values["clone_url"],
                "name": _optional(values["name"]),
                "default_branch": _optional(values["default_branch"]),
            }
        )
        repository = await service.create(access, body, device_of(request).ip)
    except FORM_REFUSALS as error:
        errors = _refusal(error, "clone_url")
    else:
        return _see_other(repository_path(slug, repository.id))
    return await _list_page(request, access, service, status_code=422, values=values, errors=errors)


# --- import from GitHub ----------------------------------------------------------------------------

GITHUB_PER_PAGE = 50


def github_list_path(slug: str) -> str:
    return f"{repositories_path(slug)}/github"


@router.get("/orgs/{slug}/repositories/github", include_in_schema=False, response_class=HTMLResponse)
async def github_repositories(
    request: Request,
    slug: str,
    viewer: SignedIn,
    orgs: OrgServiceDep,
    service: RepositoryServiceDep,
    github: GitHubClientDep,
    box: SecretBoxDep,
    page: Annotated[int, Query(ge=1, le=10_000)] = 1,
) -> HTMLResponse:
    """My GitHub repositories to import (admin+), a page at a time: the list page's panel loads it
    (htmx); without JavaScript it is a page of its own. GitHub's refusals (no linked account, a
    token it no longer accepts, no answer) are said in the panel, with the way out."""
    access = await org_access(orgs, viewer, slug, Role.ADMIN)
    if not request.app.state.settings.GITHUB_CLIENT_ID:
        raise NotFound("page")
    context: dict[str, Any] = {"listing": None, "problem": None, "list_url": github_list_path(slug)}
    try:
        listing = await service.github_repositories(
            access, github, box, page=page, per_page=GITHUB_PER_PAGE, link_url=_link_url(request)
        )
    except (Conflict, ServiceUnavailable) as error:
        code = error.instance_code
        context["problem"] = {"code": code, "message": GITHUB_PROBLEMS.get(code, error.detail or error.title)}
    else:
        context["listing"] = GitHubRepositoryList.of(listing, page)
    template = "_github_import.html" if request.headers.get("hx-request") else "github_import.html"
    return render(request, template, page_styles=PAGE_STYLES, **roles(access), **context)


def _link_url(request: Request) -> str:
    return str(request.url_for("github_link_start"))


@_form_post("/orgs/{slug}/repositories/import")
async def import_repositories(
    request: Request,
    slug: str,
    viewer: SessionCsrf,
    orgs: OrgServiceDep,
    service: RepositoryServiceDep,
    github: GitHubClientDep,
    box: SecretBoxDep,
) -> Response:
    """Connect the GitHub repositories checked in the list (`full_names`, repeated) through my
    linked GitHub account: all of them or, refused, none (the reasons above the list)."""
    access = await org_access(orgs, viewer, slug, Role.ADMIN)
    names = [name.strip() for name in await read_form_list(request, "full_names") if name.strip()]
    try:
        if not names:
            raise ValidationFailed([], detail="Choose the repositories to import.")
        body = GitHubImport.model_validate({"full_names": names})
        result = await service.import_from_github(
            access,
            github,
            box,
            body.full_names,
            body.scan_schedule,
            link_url=_link_url(request),
            ip=device_of(request).ip,
        )
    except (*FORM_REFUSALS, ServiceUnavailable) as error:
        errors = _refusal(error, "full_names")
        status_code = 503 if isinstance(error, ServiceUnavailable) else 422
    else:
        imported = [RepositoryOut.of(r) for r in (*result.imported, *result.already_connected)]
        return await _list_page(request, access, service, imported=imported)
    return await _list_page(request, access, service, status_code=status_code, import_errors=errors)


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


@_form_post("/orgs/{slug}/repositories/{repository_id}/scans")
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


def _archiving(archived: bool) -> Callable[..., Awaitable[Response]]:
    """The archive (True) or unarchive (False) form's route (admin+): back to the repository."""

    async def set_archived(
        request: Request,
        slug: str,
        repository_id: uuid.UUID,
        viewer: SessionCsrf,
        orgs: OrgServiceDep,
        service: RepositoryServiceDep,
    ) -> Response:
        target = await repository_access(orgs, viewer, slug, repository_id, Role.ADMIN)
        await service.update(target, RepositoryUpdate(archived=archived), device_of(request).ip)
        return _see_other(repository_path(slug, repository_id))

    set_archived.__name__ = "archive" if archived else "unarchive"
    return set_archived


archive = _form_post("/orgs/{slug}/repositories/{repository_id}/archive")(_archiving(True))
unarchive = _form_post("/orgs/{slug}/repositories/{repository_id}/unarchive")(_archiving(False))
