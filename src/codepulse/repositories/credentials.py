"""Clone credentials: whose GitHub token may clone a repository, and only that repository.

A GitHub import grants the importer's linked GitHub token to the repositories it connects, bound
to each one's GitHub id and canonical URL (`bind`). Changing a repository's clone URL or provider
drops the credential (`drop`): the token was granted for a repository, not for whatever URL an
admin later types, and nobody may borrow another member's GitHub access by editing a URL.

Before a scan hands a token to git (`clone_credential`, then `verify_clone_credential`), all of
this must still hold, else the scan fails with `repository_credentials_missing`:
- the binding still describes the repository (same GitHub id, same canonical URL, provider
  github, the clone URL on a GitHub host and of that canonical URL);
- the user is still a member of the repository's organization and still has a linked GitHub
  account with a token;
- GitHub, asked with that token, still shows the user that repository (same id and URL).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from codepulse.auth import service as auth_service
from codepulse.config import Settings
from codepulse.integrations.github import GitHubClient, GitHubTokenInvalid, GitHubUnavailable
from codepulse.orgs import service as orgs_service
from codepulse.repositories.models import Provider, Repository
from codepulse.repositories.urls import CASE_INSENSITIVE_HOSTS, CloneUrl, CloneUrlError, parse_clone_url
from codepulse.security import SecretBox

log = structlog.get_logger("codepulse.repositories")

CREDENTIALS_MISSING = "repository_credentials_missing"
_REIMPORT = "Import it again from GitHub as a member whose GitHub account reaches it."


def github_hosts(settings: Settings) -> frozenset[str]:
    """Hosts whose repositories are GitHub's: github.com, and GITHUB_URL's (GitHub Enterprise)."""
    host = urlsplit(settings.GITHUB_URL).hostname
    return frozenset({"github.com", host} if host else {"github.com"})


def parse(raw: str, settings: Settings) -> CloneUrl:
    return parse_clone_url(raw, case_insensitive_hosts=CASE_INSENSITIVE_HOSTS | github_hosts(settings))


@dataclass(frozen=True)
class CloneCredential:
    """A member's GitHub token for one repository (GitHub id `github_id`, `full_name`)."""

    user_id: uuid.UUID
    token: str = field(repr=False)  # keeps it out of logs and tracebacks
    github_id: int
    full_name: str


class CredentialRefused(Exception):
    """No usable credential: the scan fails with `code` (repository_credentials_missing, or
    github_unavailable when GitHub could not be asked)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def bind(repository: Repository, user_id: uuid.UUID, github_id: int, canonical_url: str) -> None:
    repository.credential_user_id = user_id
    repository.credential_external_id = str(github_id)
    repository.credential_canonical_url = canonical_url


def drop(repository: Repository) -> bool:
    """Forget the repository's credential; answers whether it had one."""
    had = repository.credential_user_id is not None
    repository.credential_user_id = None
    repository.credential_external_id = None
    repository.credential_canonical_url = None
    return had


def needs_credential(repository: Repository) -> bool:
    """Private GitHub repositories are cloned with a credential; everything else anonymously."""
    return repository.private and repository.provider == Provider.GITHUB.value


def _missing(reason: str, repository: Repository) -> CredentialRefused:
    log.info("repository.credentials_missing", repository_id=str(repository.id), reason=reason)
    return CredentialRefused(
        CREDENTIALS_MISSING,
        f"This private repository has no usable GitHub credential ({reason}). {_REIMPORT}",
    )


def _bound_name(repository: Repository, settings: Settings) -> tuple[int, str] | None:
    """(GitHub id, owner/name) when the binding still describes the repository, else None."""
    if (
        repository.provider != Provider.GITHUB.value
        or repository.credential_external_id is None
        or not repository.credential_external_id.isdigit()
        or repository.credential_external_id != repository.external_id
        or repository.credential_canonical_url != repository.canonical_url
    ):
        return None
    try:
        url = parse(repository.clone_url, settings)
    except CloneUrlError:
        return None
    if url.canonical != repository.canonical_url or url.host not in github_hosts(settings):
        return None
    owner, _, name = url.path.partition("/")
    if not owner or not name or "/" in name:
        return None
    return int(repository.credential_external_id), url.path


async def clone_credential(
    session: AsyncSession, repository: Repository, settings: Settings, box: SecretBox
) -> CloneCredential | None:
    """The credential to clone `repository` with, from the database: None when it is cloned
    anonymously (not a private GitHub repository). Raises CredentialRefused. The token must still
    pass `verify_clone_credential` (GitHub) before git sees it."""
    if not needs_credential(repository):
        return None
    user_id = repository.credential_user_id
    if user_id is None:
        raise _missing("none was granted, or the URL or provider changed since", repository)
    bound = _bound_name(repository, settings)
    if bound is None:
        raise _missing("it was granted for another repository", repository)
    if await orgs_service.get_membership(session, repository.org_id, user_id) is None:
        raise _missing("whoever granted it is no longer a member", repository)
    link = await auth_service.github_link(session, user_id, box)
    if link is None or link.access_token is None:
        raise _missing("whoever granted it no longer has a linked GitHub account", repository)
    github_id, full_name = bound
    return CloneCredential(user_id=user_id, token=link.access_token, github_id=github_id, full_name=full_name)


async def verify_clone_credential(
    credential: CloneCredential, repository: Repository, settings: Settings, github: GitHubClient
) -> None:
    """GitHub still shows the credential's account this very repository (id and URL). Raises
    CredentialRefused: repository_credentials_missing, or github_unavailable."""
    try:
        found = (await github.get_repositories(credential.token, [credential.full_name])).get(credential.full_name)
    except GitHubTokenInvalid:
        raise _missing("GitHub refuses the linked account's token", repository) from None
    except GitHubUnavailable:
        raise CredentialRefused("github_unavailable", "GitHub did not answer; try again shortly.") from None
    if found is None or found.id != credential.github_id:
        raise _missing("the linked GitHub account no longer reaches it", repository)
    try:
        canonical = parse(found.clone_url, settings).canonical
    except CloneUrlError:
        canonical = None
    if canonical != repository.canonical_url:
        raise _missing("GitHub now has it under another URL", repository)
