"""Request and response bodies of the repositories domain."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from codepulse.integrations.github import GitHubRepositoryPage
from codepulse.repositories.models import (
    BRANCH_MAX_LENGTH,
    NAME_MAX_LENGTH,
    URL_MAX_LENGTH,
    Provider,
    Repository,
    ScanSchedule,
)
from codepulse.text import NO_CONTROL, Line


@dataclass(frozen=True)
class GitHubListing:
    """A page of the GitHub repositories a user may import, and which are connected already."""

    page: GitHubRepositoryPage
    connected: dict[int, uuid.UUID]
    """GitHub repository id -> the repository connected to this organization."""


MAX_IMPORT = 50
_BRANCH_FORBIDDEN = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]")
_FULL_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})/[A-Za-z0-9._-]{1,100}$")


def _branch(value: str) -> str:
    """A branch name git accepts (`git check-ref-format --branch`) that cannot read as an option."""
    if (
        not value
        or value.startswith(("-", "/", "."))
        or value.endswith(("/", ".", ".lock"))
        or _BRANCH_FORBIDDEN.search(value)
        or any(bad in value for bad in ("..", "//", "@{", "/."))
        or value == "@"
    ):
        raise ValueError("not a valid branch name")
    return value


def _full_name(value: str) -> str:
    if not _FULL_NAME.match(value):
        raise ValueError("use GitHub's owner/repository form")
    return value


RepositoryName = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=NAME_MAX_LENGTH), NO_CONTROL
]
CloneUrlIn = Annotated[
    Line,
    Field(
        min_length=1,
        max_length=URL_MAX_LENGTH,
        description="https://host/path or SSH (git@host:path, ssh://git@host/path); no credentials.",
    ),
]
Branch = Annotated[str, Field(max_length=BRANCH_MAX_LENGTH), AfterValidator(_branch)]
FullName = Annotated[str, Field(max_length=140), AfterValidator(_full_name)]


class RepositoryCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"clone_url": "https://github.com/octo/engine.git", "scan_schedule": "daily"}]},
    )

    clone_url: CloneUrlIn
    name: RepositoryName | None = Field(default=None, description="Display name; defaults to the URL's path.")
    provider: Provider | None = Field(default=None, description="Inferred from the host when omitted.")
    default_branch: Branch | None = Field(default=None, description="Omit to scan the remote's default (HEAD).")
    private: bool = False
    scan_schedule: ScanSchedule = ScanSchedule.NONE


class RepositoryUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"scan_schedule": "weekly"}]})

    name: RepositoryName | None = None
    clone_url: CloneUrlIn | None = None
    provider: Provider | None = None
    default_branch: Branch | None = Field(default=None, description="null goes back to the remote's default.")
    private: bool | None = None
    scan_schedule: ScanSchedule | None = None
    archived: bool | None = Field(default=None, description="Archived repositories are not scanned or counted.")


class OpenFindings(BaseModel):
    critical: int
    high: int
    medium: int
    low: int


class LastScan(BaseModel):
    id: uuid.UUID | None
    status: str
    finished_at: datetime | None
    open_findings: OpenFindings


class RepositoryOut(BaseModel):
    id: uuid.UUID
    org_id: uuid.UUID
    name: str
    provider: Provider
    clone_url: str
    canonical_url: str
    default_branch: str | None
    external_id: str | None
    private: bool
    scan_schedule: ScanSchedule
    archived: bool
    created_by: uuid.UUID | None
    credential_user_id: uuid.UUID | None = Field(
        description="Whose linked GitHub account clones it (granted by a GitHub import for this repository only; "
        "dropped when its URL or provider changes). null: cloned anonymously."
    )
    created_at: datetime
    updated_at: datetime
    last_scan: LastScan | None = Field(description="null until the repository is first scanned.")

    @classmethod
    def of(cls, repository: Repository) -> RepositoryOut:
        last_scan = None
        if repository.last_scan_status is not None:
            last_scan = LastScan(
                id=repository.last_scan_id,
                status=repository.last_scan_status,
                finished_at=repository.last_scan_finished_at,
                open_findings=OpenFindings(
                    critical=repository.open_critical,
                    high=repository.open_high,
                    medium=repository.open_medium,
                    low=repository.open_low,
                ),
            )
        return cls(
            id=repository.id,
            org_id=repository.org_id,
            name=repository.name,
            provider=Provider(repository.provider),
            clone_url=repository.clone_url,
            canonical_url=repository.canonical_url,
            default_branch=repository.default_branch,
            external_id=repository.external_id,
            private=repository.private,
            scan_schedule=ScanSchedule(repository.scan_schedule),
            archived=repository.archived,
            created_by=repository.created_by,
            credential_user_id=repository.credential_user_id,
            created_at=repository.created_at,
            updated_at=repository.updated_at,
            last_scan=last_scan,
        )


class RepositorySort(StrEnum):
    NAME = "name"
    LAST_SCAN = "last_scan"
    OPEN_FINDINGS = "open_findings"


class GitHubRepositoryOut(BaseModel):
    id: int = Field(description="GitHub's repository id.")
    full_name: str
    name: str
    owner: str
    private: bool
    archived: bool
    default_branch: str | None
    description: str | None
    html_url: str
    clone_url: str
    connected: bool = Field(description="Already connected to this organization.")
    repository_id: uuid.UUID | None = Field(description="The connected repository, when connected.")


class GitHubRepositoryList(BaseModel):
    items: list[GitHubRepositoryOut]
    page: int
    next_page: int | None = Field(description="Pass as `page` for the next page; null on the last page.")
    private_access: bool | None = Field(
        description="Whether the linked GitHub token may read private repositories (the `repo` scope); "
        "null when GitHub does not say."
    )

    @classmethod
    def of(cls, listing: GitHubListing, page: int) -> GitHubRepositoryList:
        items = [
            GitHubRepositoryOut(
                id=repo.id,
                full_name=repo.full_name,
                name=repo.name,
                owner=repo.owner,
                private=repo.private,
                archived=repo.archived,
                default_branch=repo.default_branch,
                description=repo.description,
                html_url=repo.html_url,
                clone_url=repo.clone_url,
                connected=repo.id in listing.connected,
                repository_id=listing.connected.get(repo.id),
            )
            for repo in listing.page.items
        ]
        scopes = listing.page.scopes
        return cls(
            items=items,
            page=page,
            next_page=listing.page.next_page,
            private_access=None if scopes is None else "repo" in scopes,
        )


class GitHubImport(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"full_names": ["octo/engine", "octo/loom"]}]})

    full_names: list[FullName] = Field(
        min_length=1, max_length=MAX_IMPORT, description="`owner/repository`; case-insensitive, repeats ignored."
    )
    scan_schedule: ScanSchedule = ScanSchedule.NONE


class GitHubImportResult(BaseModel):
    imported: list[RepositoryOut]
    already_connected: list[RepositoryOut] = Field(description="Asked for, but connected before: left as they were.")
