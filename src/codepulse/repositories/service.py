"""Connected repositories: the rules, and the domain's interface to other domains.

For other slices (the scans slice above all; routes guard repositories with the
`Repository...` aliases of `codepulse.repositories.dependencies`):

- `Repository`, `ScanSchedule`: the types other slices receive (never from `repositories.models`).
- `get_repository(session, id)`: a repository without an access check (background work).
- `validate_clone_url(url, settings)`: the same clone URL checks as on create and update; call it
  right before cloning, because DNS can change. It answers the addresses the host resolved to,
  so a clone can be pinned to them (`git -c http.curloptResolve=<host>:443:<address>`).
- `update_scan_summary(...)`: keep the last-scan summary current, inside the scan's unit of work.
- `clone_credential(...)` then `verify_clone_credential(...)`: the GitHub token a private GitHub
  repository is cloned with, checked against the database and then GitHub (see
  `codepulse.repositories.credentials`); `CredentialRefused` when there is none to use. Never to
  be put in a URL or a log.
- `scheduled_repositories(session, schedules)`: the active repositories with a scan schedule.

Deleting an organization removes its repositories through the `on_org_delete` hook registered by
`codepulse.repositories.hooks` (see `codepulse.hooks`). Before repositories are deleted, one or an
organization's, the `on_repositories_delete` hooks run (`DeletingRepositories`).
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from codepulse.auth import service as auth_service
from codepulse.auth.service import User
from codepulse.clock import ClockFunc
from codepulse.config import Settings
from codepulse.errors import Conflict, FieldError, ServiceUnavailable, ValidationFailed
from codepulse.integrations.github import (
    GitHubClient,
    GitHubRepository,
    GitHubTokenInvalid,
    GitHubUnavailable,
)
from codepulse.orgs.quotas import QuotaResource, check_quota
from codepulse.orgs.service import OrgAccess, Organization, OrgService, Role, get_membership
from codepulse.pagination import PageRequest, paginate
from codepulse.repositories import credentials
from codepulse.repositories.connecting import CheckedCloneUrl as CheckedCloneUrl
from codepulse.repositories.connecting import Connecting as Connecting
from codepulse.repositories.connecting import connect_hooks, default_name
from codepulse.repositories.connecting import on_repository_connect as on_repository_connect
from codepulse.repositories.connecting import validate_clone_url as validate_clone_url
from codepulse.repositories.credentials import CloneCredential as CloneCredential
from codepulse.repositories.credentials import CredentialRefused as CredentialRefused
from codepulse.repositories.credentials import clone_credential as clone_credential
from codepulse.repositories.credentials import github_hosts, parse
from codepulse.repositories.credentials import verify_clone_credential as verify_clone_credential
from codepulse.repositories.deleting import DeletingRepositories as DeletingRepositories
from codepulse.repositories.deleting import delete_hooks
from codepulse.repositories.deleting import on_repositories_delete as on_repositories_delete
from codepulse.repositories.models import BRANCH_MAX_LENGTH, Provider, Severity
from codepulse.repositories.models import Repository as Repository
from codepulse.repositories.models import ScanSchedule as ScanSchedule
from codepulse.repositories.repository import RepositoryRepository
from codepulse.repositories.schemas import GitHubListing as GitHubListing
from codepulse.repositories.schemas import RepositoryCreate, RepositorySort, RepositoryUpdate
from codepulse.repositories.stats import RepositoryStats as RepositoryStats
from codepulse.repositories.stats import repository_stats as repository_stats
from codepulse.repositories.urls import (
    CloneUrl,
    CloneUrlError,
    Resolver,
    provider_for_host,
    system_resolver,
)
from codepulse.security import SecretBox

log = structlog.get_logger("codepulse.repositories")


@dataclass(frozen=True)
class RepositoryAccess:
    """A repository and the caller's access to its organization."""

    repository: Repository
    org: OrgAccess


@dataclass(frozen=True)
class ImportResult:
    imported: list[Repository] = field(default_factory=list)
    already_connected: list[Repository] = field(default_factory=list)


class RepositoryService:
    def __init__(
        self, session: AsyncSession, settings: Settings, clock: ClockFunc, *, resolver: Resolver = system_resolver
    ) -> None:
        self.session = session
        self.settings = settings
        self.clock = clock
        self.resolver = resolver
        self.repo = RepositoryRepository(session)
        self.orgs = OrgService(session, settings, clock)

    # --- quota ---------------------------------------------------------------------------

    async def _ensure_quota(self, org: Organization, adding: int) -> None:
        """Room for `adding` more active repositories on the organization's plan."""
        await check_quota(
            self.session, self.settings, org.id, QuotaResource.REPOSITORIES, now=self.clock(), amount=adding
        )

    # --- CRUD ----------------------------------------------------------------------------

    async def check_clone_url(self, url: str, *, field: str = "body.clone_url") -> CheckedCloneUrl:
        return await validate_clone_url(url, self.settings, resolver=self.resolver, field=field)

    async def _ensure_new(self, org_id: uuid.UUID, canonical_url: str) -> None:
        existing = await self.repo.by_canonical_url(org_id, canonical_url)
        if existing is not None:
            raise Conflict(
                f"{canonical_url} is already connected to this organization.",
                code="repository_exists",
                extra={"repository_id": str(existing.id)},
            )

    async def create(self, access: OrgAccess, data: RepositoryCreate, ip: str | None) -> Repository:
        access.require(Role.ADMIN)
        checked = await self.check_clone_url(data.clone_url)
        url = checked.url
        await self._ensure_new(access.org.id, url.canonical)
        await self._ensure_quota(access.org, 1)
        repository = Repository(
            org_id=access.org.id,
            name=data.name or default_name(url),
            provider=data.provider.value if data.provider else provider_for_host(url.host, github_hosts(self.settings)),
            clone_url=url.url,
            canonical_url=url.canonical,
            default_branch=data.default_branch,
            private=data.private,
            scan_schedule=data.scan_schedule.value,
            created_by=access.user.id,
            archived=False,
        )
        await connect_hooks.run(self.session, Connecting(repository, checked, self.settings))
        await self.repo.add(repository)
        await self.orgs.audit(access.org.id, access.user, "repository.created", "repository", repository.id,
                              {"name": repository.name, "canonical_url": repository.canonical_url}, ip)  # fmt: skip
        log.info("repository.created", repository_id=str(repository.id), org_id=str(access.org.id))
        return repository

    async def list_repositories(
        self,
        access: OrgAccess,
        *,
        q: str | None,
        provider: Provider | None,
        archived: bool | None,
        sort: RepositorySort,
        page: PageRequest,
    ) -> tuple[list[Repository], str | None]:
        query = self.repo.list_query(access.org.id, q=q, provider=provider, archived=archived)
        return await paginate(self.session, query, order=self.repo.order(sort), params=page)

    async def update(self, target: RepositoryAccess, data: RepositoryUpdate, ip: str | None) -> Repository:
        target.org.require(Role.ADMIN)
        repository = target.repository
        given = data.model_dump(exclude_unset=True)
        # Only default_branch may be cleared with null; for the other fields null means "unchanged".
        values: dict[str, Any] = {k: v for k, v in given.items() if v is not None or k == "default_branch"}
        if "clone_url" in values:
            url = (await self.check_clone_url(values["clone_url"])).url
            values["clone_url"] = url.url
            if url.canonical != repository.canonical_url:
                await self._ensure_new(repository.org_id, url.canonical)
                values["canonical_url"] = url.canonical
                # Another repository now: the provider's id no longer describes it.
                values["external_id"] = None
                if "provider" not in values:
                    values["provider"] = provider_for_host(url.host, github_hosts(self.settings))
        if values.get("archived") is False and repository.archived:
            await self._ensure_quota(target.org.org, 1)
        values = {k: v.value if isinstance(v, Provider | ScanSchedule) else v for k, v in values.items()}
        changes = {
            k: {"from": getattr(repository, k), "to": v} for k, v in values.items() if getattr(repository, k) != v
        }
        for name, value in values.items():
            setattr(repository, name, value)
        # A credential was granted for one repository: a new URL or provider is another one (the
        # token would go wherever the URL now points), so it must be granted again by an import.
        if {"clone_url", "provider"} & changes.keys() and credentials.drop(repository):
            changes["credential"] = {"from": "granted", "to": None}
        await self.session.flush()
        if changes:
            await self.orgs.audit(repository.org_id, target.org.user, "repository.updated", "repository",
                                  repository.id, changes, ip)  # fmt: skip
        return repository

    async def delete(self, target: RepositoryAccess, ip: str | None) -> None:
        """Removes the repository; its scans and findings go with it (their foreign keys cascade)."""
        target.org.require(Role.ADMIN)
        repository = target.repository
        await self.orgs.audit(repository.org_id, target.org.user, "repository.deleted", "repository", repository.id,
                              {"name": repository.name, "canonical_url": repository.canonical_url}, ip)  # fmt: skip
        await delete_hooks.run(self.session, DeletingRepositories(repository.org_id, repository.id))
        await self.repo.delete(repository)
        log.info("repository.deleted", repository_id=str(repository.id), org_id=str(repository.org_id))

    # --- GitHub import -------------------------------------------------------------------

    async def _github_token(self, user: User, box: SecretBox, link_url: str) -> str:
        link = await auth_service.github_link(self.session, user.id, box)
        if link is None:
            raise Conflict(
                "Link your GitHub account first: POST to link_url to get GitHub's authorization page.",
                code="github_not_linked",
                extra={"link_url": link_url},
            )
        if link.access_token is None:
            raise _reauth(link_url)
        return link.access_token

    async def github_repositories(
        self, access: OrgAccess, github: GitHubClient, box: SecretBox, *, page: int, per_page: int, link_url: str
    ) -> GitHubListing:
        """One page of the GitHub repositories the caller reaches, with those already connected here."""
        access.require(Role.ADMIN)
        token = await self._github_token(access.user, box, link_url)
        try:
            listing = await github.list_repositories(token, page=page, per_page=per_page)
        except GitHubTokenInvalid:
            raise _reauth(link_url) from None
        except GitHubUnavailable:
            raise _github_unavailable() from None
        canonical = {repo.id: self._canonical_or_none(repo.clone_url) for repo in listing.items}
        existing = await self.repo.matching(
            access.org.id,
            github_ids={str(repo.id) for repo in listing.items},
            canonical_urls={url for url in canonical.values() if url is not None},
        )
        connected: dict[int, uuid.UUID] = {}
        for repo in listing.items:
            match = _match(repo, canonical[repo.id], existing)
            if match is not None:
                connected[repo.id] = match.id
        return GitHubListing(listing, connected)

    def _canonical_or_none(self, clone_url: str) -> str | None:
        try:
            return parse(clone_url, self.settings).canonical
        except CloneUrlError:
            return None

    async def import_from_github(
        self,
        access: OrgAccess,
        github: GitHubClient,
        box: SecretBox,
        full_names: Sequence[str],
        schedule: ScanSchedule,
        *,
        link_url: str,
        ip: str | None,
    ) -> ImportResult:
        """Connect several GitHub repositories at once: all of them, or none (unknown names, an
        unsafe URL or the quota refuse the whole request). Those already connected are left as
        they are and reported."""
        access.require(Role.ADMIN)
        # GitHub names are case-insensitive: the first spelling of each counts, at its position.
        positions: dict[str, int] = {}
        for index, name in enumerate(full_names):
            positions.setdefault(name.lower(), index)
        names = [full_names[index] for index in positions.values()]
        token = await self._github_token(access.user, box, link_url)
        try:
            found = await github.get_repositories(token, names)
        except GitHubTokenInvalid:
            raise _reauth(link_url) from None
        except GitHubUnavailable:
            raise _github_unavailable() from None
        missing = [
            FieldError(
                field=f"body.full_names.{positions[name.lower()]}",
                code="github_repository_not_found",
                message=f"{name} does not exist on GitHub or your GitHub account cannot reach it.",
            )
            for name in names
            if found.get(name) is None
        ]
        if missing:
            raise ValidationFailed(missing, detail="Some repositories could not be found on GitHub.")

        wanted: list[tuple[GitHubRepository, CloneUrl]] = []
        seen: set[int] = set()
        for name in names:
            repo = found[name]
            if repo is None or repo.id in seen:  # two names of one repository (a rename)
                continue
            seen.add(repo.id)
            checked = await self.check_clone_url(repo.clone_url, field=f"body.full_names.{positions[name.lower()]}")
            wanted.append((repo, checked.url))
        existing = await self.repo.matching(
            access.org.id,
            github_ids={str(repo.id) for repo, _ in wanted},
            canonical_urls={u.canonical for _, u in wanted},
        )
        result = ImportResult()
        new: list[tuple[GitHubRepository, CloneUrl]] = []
        for repo, url in wanted:
            match = _match(repo, url.canonical, existing)
            if match is not None:
                await self._regrant(access, match, repo, url, box, ip)
                result.already_connected.append(match)
            else:
                new.append((repo, url))
        if not new:
            return result
        await self._ensure_quota(access.org, len(new))
        for repo, url in new:
            repository = Repository(
                org_id=access.org.id,
                name=repo.full_name,
                provider=Provider.GITHUB.value,
                clone_url=url.url,
                canonical_url=url.canonical,
                default_branch=repo.default_branch,
                external_id=str(repo.id),
                private=repo.private,
                scan_schedule=schedule.value,
                created_by=access.user.id,
                archived=False,
            )
            credentials.bind(repository, access.user.id, repo.id, url.canonical)
            await self.repo.add(repository)
            details = {"full_name": repo.full_name, "github_id": repo.id, "private": repo.private}
            await self.orgs.audit(access.org.id, access.user, "repository.imported", "repository", repository.id,
                                  details, ip)  # fmt: skip
            result.imported.append(repository)
        log.info("repository.imported", org_id=str(access.org.id), count=len(result.imported))
        return result

    async def _regrant(
        self,
        access: OrgAccess,
        repository: Repository,
        repo: GitHubRepository,
        url: CloneUrl,
        box: SecretBox,
        ip: str | None,
    ) -> None:
        """Importing a connected repository again grants the importer's credential when it has
        no usable one (dropped by a URL change, its grantor left or unlinked GitHub), GitHub having
        just shown the importer that very repository at that very URL."""
        if repository.provider != Provider.GITHUB.value or repository.canonical_url != url.canonical:
            return
        holder = repository.credential_user_id
        if holder is not None and await get_membership(self.session, repository.org_id, holder) is not None:
            link = await auth_service.github_link(self.session, holder, box)
            if link is not None and link.access_token is not None:
                return
        repository.external_id = str(repo.id)
        credentials.bind(repository, access.user.id, repo.id, url.canonical)
        await self.session.flush()
        await self.orgs.audit(access.org.id, access.user, "repository.credential_granted", "repository",
                              repository.id, {"full_name": repo.full_name, "github_id": repo.id}, ip)  # fmt: skip


def _match(repo: GitHubRepository, canonical: str | None, existing: Sequence[Repository]) -> Repository | None:
    by_id = next(
        (r for r in existing if r.provider == Provider.GITHUB.value and r.external_id == str(repo.id)),
        None,
    )
    if by_id is not None:
        return by_id
    return next((r for r in existing if canonical is not None and r.canonical_url == canonical), None)


def _reauth(link_url: str) -> Conflict:
    return Conflict(
        "GitHub no longer accepts your linked account's token: link GitHub again (POST to link_url).",
        code="github_reauth_required",
        extra={"link_url": link_url},
    )


def _github_unavailable() -> ServiceUnavailable:
    return ServiceUnavailable("GitHub did not answer; try again shortly.", code="github_unavailable")


# --- for other domains -----------------------------------------------------------------------


async def get_repository(session: AsyncSession, repository_id: uuid.UUID) -> Repository | None:
    return await RepositoryRepository(session).get(repository_id)


async def fill_default_branch(session: AsyncSession, repository_id: uuid.UUID, branch: str) -> None:
    """A scan of the default branch learnt its name: kept when nobody set one."""
    repository = await RepositoryRepository(session).get(repository_id)
    if repository is not None and repository.default_branch is None:
        repository.default_branch = branch[:BRANCH_MAX_LENGTH]
        await session.flush()


async def update_scan_summary(
    session: AsyncSession,
    repository_id: uuid.UUID,
    *,
    scan_id: uuid.UUID,
    status: str,
    finished_at: datetime,
    open_findings: Mapping[str, int] | None = None,
) -> bool:
    """Record a finished scan's outcome on its repository, in the caller's unit of work (the
    summary describes the last *finished* scan; running ones live in the scans domain).

    `open_findings` maps severities (critical, high, medium, low) to counts, omitted ones count 0;
    None leaves the counts as they are (a failed scan that found nothing new). A summary of a
    scan that finished later is kept (scans can finish out of order). Answers whether the row
    was written.
    """
    values: dict[str, Any] = {
        "last_scan_id": scan_id,
        "last_scan_status": status,
        "last_scan_finished_at": finished_at,
    }
    if open_findings is not None:
        counts = {Severity(key): int(value) for key, value in open_findings.items()}
        if any(count < 0 for count in counts.values()):
            raise ValueError("finding counts cannot be negative")
        for severity in Severity:
            values[f"open_{severity.value}"] = counts.get(severity, 0)
    return await RepositoryRepository(session).set_scan_summary(repository_id, values, finished_at=finished_at)


async def scheduled_repositories(session: AsyncSession, schedules: Collection[ScanSchedule]) -> list[Repository]:
    """Active (not archived) repositories whose scan schedule is one of `schedules`."""
    return await RepositoryRepository(session).with_schedule([schedule.value for schedule in schedules])


async def count_active_repositories(session: AsyncSession, org_id: uuid.UUID) -> int:
    """An organization's connected repositories that are not archived (what its plan limits)."""
    return await RepositoryRepository(session).count_active(org_id)
