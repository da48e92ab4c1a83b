"""Dependencies of the repository routes, offered to other slices too:

    @router.get("/repositories/{repository_id}/scans")
    async def list_scans(target: RepositoryViewer) -> ...     # any member of its organization
    async def update(target: RepositoryAdmin) -> ...          # admin or owner

The guards come from `codepulse.orgs.dependencies.org_scoped_guard`: an outsider (or a missing
repository) gets 404 `repository_not_found`, a member below the role 403 `insufficient_role`;
superusers pass.

`host_resolver` is the one place clone URL checks get their DNS resolver: tests override it with
`app.dependency_overrides[host_resolver] = ...` to resolve names without a network.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Depends, Path, Request

from codepulse.db import DbSession
from codepulse.integrations.github import GitHubClient
from codepulse.orgs.dependencies import org_scoped_guard
from codepulse.orgs.service import Role
from codepulse.repositories.service import Repository, RepositoryAccess, RepositoryService, get_repository
from codepulse.repositories.urls import Resolver, system_resolver
from codepulse.security import SecretBox

RepositoryId = Annotated[uuid.UUID, Path(description="The repository's id.")]


async def host_resolver() -> Resolver:
    return system_resolver


async def repository_service(
    request: Request, session: DbSession, resolver: Annotated[Resolver, Depends(host_resolver)]
) -> RepositoryService:
    state = request.app.state
    return RepositoryService(session, state.settings, state.clock, resolver=resolver)


RepositoryServiceDep = Annotated[RepositoryService, Depends(repository_service)]


async def find_repository(repository_id: RepositoryId, session: DbSession) -> Repository | None:
    return await get_repository(session, repository_id)


def _org_of(repository: Repository) -> uuid.UUID:
    return repository.org_id


RepositoryMember = org_scoped_guard("repository", find_repository, org_of=_org_of, grant=RepositoryAccess)

RepositoryViewer = Annotated[RepositoryAccess, RepositoryMember(Role.VIEWER)]
RepositoryMemberAccess = Annotated[RepositoryAccess, RepositoryMember(Role.MEMBER)]
RepositoryAdmin = Annotated[RepositoryAccess, RepositoryMember(Role.ADMIN)]


async def _github_client(request: Request) -> GitHubClient:
    client: GitHubClient = request.app.state.github_client
    return client


async def _secret_box(request: Request) -> SecretBox:
    box: SecretBox = request.app.state.secret_box
    return box


GitHubClientDep = Annotated[GitHubClient, Depends(_github_client)]
SecretBoxDep = Annotated[SecretBox, Depends(_secret_box)]
