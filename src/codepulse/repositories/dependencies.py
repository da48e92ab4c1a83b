"""Dependencies of the repository routes, offered to other domains too:

    @router.get("/repositories/{repository_id}/scans")
    async def list_scans(target: RepositoryViewer) -> ...     # any member of its organization
    async def start_scan(target: RepositoryMemberAccess) -> ...

An outsider (or a missing repository) gets 404 `repository_not_found`, a member below the role
403 `insufficient_role`; superusers pass.

`host_resolver` is the one place clone URL checks get their DNS resolver: tests override it with
`app.dependency_overrides[host_resolver] = ...` to resolve names without a network.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import Depends, Path, Request

from codepulse.auth.dependencies import CurrentUser
from codepulse.db import DbSession
from codepulse.integrations.github import GitHubClient
from codepulse.orgs.models import Role
from codepulse.repositories.service import RepositoryAccess, RepositoryService
from codepulse.repositories.urls import Resolver, system_resolver
from codepulse.security import SecretBox

RepositoryId = Annotated[uuid.UUID, Path(description="The repository's id.")]


def host_resolver() -> Resolver:
    return system_resolver


def repository_service(
    request: Request, session: DbSession, resolver: Annotated[Resolver, Depends(host_resolver)]
) -> RepositoryService:
    state = request.app.state
    return RepositoryService(session, state.settings, state.clock, resolver=resolver)


RepositoryServiceDep = Annotated[RepositoryService, Depends(repository_service)]


def RepositoryMember(min_role: Role = Role.VIEWER) -> Any:
    async def dependency(
        repository_id: RepositoryId, user: CurrentUser, service: RepositoryServiceDep
    ) -> RepositoryAccess:
        return await service.access(user, repository_id, min_role)

    dependency.__name__ = f"repository_{min_role.value}"
    return Depends(dependency)


RepositoryViewer = Annotated[RepositoryAccess, RepositoryMember(Role.VIEWER)]
RepositoryMemberAccess = Annotated[RepositoryAccess, RepositoryMember(Role.MEMBER)]
RepositoryAdmin = Annotated[RepositoryAccess, RepositoryMember(Role.ADMIN)]


def _github_client(request: Request) -> GitHubClient:
    client: GitHubClient = request.app.state.github_client
    return client


def _secret_box(request: Request) -> SecretBox:
    box: SecretBox = request.app.state.secret_box
    return box


GitHubClientDep = Annotated[GitHubClient, Depends(_github_client)]
SecretBoxDep = Annotated[SecretBox, Depends(_secret_box)]
