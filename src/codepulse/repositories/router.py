"""HTTP endpoints of the repositories domain: /orgs/{org}/repositories, /repositories/{id}, and the
GitHub import under /orgs/{org}/github/repositories."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query, Request, Response, status

from codepulse.auth.dependencies import device_of
from codepulse.orgs.dependencies import OrgAdmin, OrgViewer
from codepulse.pagination import Page, PageParams
from codepulse.repositories.dependencies import (
    GitHubClientDep,
    RepositoryAdmin,
    RepositoryServiceDep,
    RepositoryViewer,
    SecretBoxDep,
)
from codepulse.repositories.models import Provider
from codepulse.repositories.schemas import (
    GitHubImport,
    GitHubImportResult,
    GitHubRepositoryList,
    RepositoryCreate,
    RepositoryOut,
    RepositorySort,
    RepositoryUpdate,
)
from codepulse.routing import DomainRouter

router = DomainRouter(tags=["repositories"])


def _ip(request: Request) -> str | None:
    return device_of(request).ip


def _link_url(request: Request) -> str:
    """Where a browser starts linking GitHub (the auth domain's route)."""
    return str(request.url_for("github_link_start"))


@router.post(
    "/orgs/{org}/repositories", status_code=status.HTTP_201_CREATED, summary="Connect a repository by URL (admin+)"
)
async def create_repository(
    body: RepositoryCreate, request: Request, access: OrgAdmin, service: RepositoryServiceDep
) -> RepositoryOut:
    """The clone URL must be https:// or SSH, without credentials, on a public host (see the
    README's Repositories section). 409 `repository_exists` when its canonical URL is already
    connected; 402 `quota_exceeded` when the plan's repository count is reached."""
    return RepositoryOut.of(await service.create(access, body, _ip(request)))


@router.get("/orgs/{org}/repositories", summary="The organization's repositories")
async def list_repositories(
    access: OrgViewer,
    service: RepositoryServiceDep,
    page: PageParams,
    q: Annotated[str | None, Query(max_length=200, description="Part of the name or URL.")] = None,
    provider: Provider | None = None,
    archived: Annotated[bool | None, Query(description="Only archived (true) or active (false) ones.")] = None,
    sort: Annotated[
        RepositorySort,
        Query(
            description="`name` (A-Z), `last_scan` (most recent first, never scanned last) or "
            "`open_findings` (most critical, then high, medium, low first)."
        ),
    ] = RepositorySort.NAME,
) -> Page[RepositoryOut]:
    repositories, next_cursor = await service.list_repositories(
        access, q=q, provider=provider, archived=archived, sort=sort, page=page
    )
    return Page(items=[RepositoryOut.of(r) for r in repositories], next_cursor=next_cursor)


@router.get("/repositories/{repository_id}", summary="One repository")
async def get_repository(target: RepositoryViewer) -> RepositoryOut:
    return RepositoryOut.of(target.repository)


@router.patch("/repositories/{repository_id}", summary="Update a repository (admin+)")
async def update_repository(
    body: RepositoryUpdate, request: Request, target: RepositoryAdmin, service: RepositoryServiceDep
) -> RepositoryOut:
    return RepositoryOut.of(await service.update(target, body, _ip(request)))


@router.delete(
    "/repositories/{repository_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Remove a repository with its scans and findings (admin+)",
)
async def delete_repository(request: Request, target: RepositoryAdmin, service: RepositoryServiceDep) -> Response:
    await service.delete(target, _ip(request))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/orgs/{org}/github/repositories", summary="GitHub repositories I can import (admin+)")
async def list_github_repositories(
    request: Request,
    access: OrgAdmin,
    service: RepositoryServiceDep,
    github: GitHubClientDep,
    box: SecretBoxDep,
    page: Annotated[int, Query(ge=1, le=10_000, description="GitHub's page number, from 1.")] = 1,
    per_page: Annotated[int, Query(ge=1, le=100)] = 50,
) -> GitHubRepositoryList:
    """Through my linked GitHub account (409 `github_not_linked` without one, 409
    `github_reauth_required` when GitHub refuses its token; both carry `link_url`)."""
    listing = await service.github_repositories(
        access, github, box, page=page, per_page=per_page, link_url=_link_url(request)
    )
    return GitHubRepositoryList.of(listing, page)


@router.post("/orgs/{org}/github/repositories/import", summary="Connect GitHub repositories (admin+)")
async def import_github_repositories(
    body: GitHubImport,
    request: Request,
    access: OrgAdmin,
    service: RepositoryServiceDep,
    github: GitHubClientDep,
    box: SecretBoxDep,
) -> GitHubImportResult:
    """All or nothing: a name GitHub does not show me (422), an unsafe clone URL (422) or the
    quota (402) refuses the whole request. Repositories already connected are reported in
    `already_connected` and left as they are."""
    result = await service.import_from_github(
        access, github, box, body.full_names, body.scan_schedule, link_url=_link_url(request), ip=_ip(request)
    )
    return GitHubImportResult(
        imported=[RepositoryOut.of(r) for r in result.imported],
        already_connected=[RepositoryOut.of(r) for r in result.already_connected],
    )
