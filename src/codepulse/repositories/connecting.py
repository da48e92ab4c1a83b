"""Connecting a repository by URL: the clone URL's check (parsed, host resolved and checked, or a
local `file://` repository when ALLOW_LOCAL_REPOSITORIES), the default name, and the hooks upper
slices register to look at the remote before it is saved (`on_repository_connect`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import structlog

from codepulse.config import Settings
from codepulse.errors import FieldError, ValidationFailed
from codepulse.hooks import HookRegistry
from codepulse.repositories.credentials import parse
from codepulse.repositories.models import NAME_MAX_LENGTH, Repository
from codepulse.repositories.urls import CloneUrl, CloneUrlError, Resolver, check_host, system_resolver

log = structlog.get_logger("codepulse.repositories")


@dataclass(frozen=True)
class CheckedCloneUrl:
    url: CloneUrl
    addresses: tuple[str, ...]
    """What the host resolved to when checked; empty when the check was waived (ALLOWED_GIT_HOSTS,
    ALLOW_LOCAL_REPOSITORIES)."""


async def validate_clone_url(
    url: str, settings: Settings, *, resolver: Resolver = system_resolver, field: str = "clone_url"
) -> CheckedCloneUrl:
    """Parse `url` and check its host; raises ValidationFailed (one error on `field`, its code
    saying why: credentials_in_url, unsupported_scheme, option_like_url, invalid_clone_url,
    forbidden_host, unresolvable_host)."""
    if settings.ALLOW_LOCAL_REPOSITORIES:
        local = url.strip()
        if local.startswith("/"):
            local = Path(local).as_uri()  # a path on this machine, as the file:// URL git takes
        elif local.startswith(("./", "../", "~")) or local in (".", ".."):
            message = "Give a local repository as an absolute path or a file:///absolute/path URL."
            raise ValidationFailed([FieldError(field=field, message=message, code="invalid_clone_url")], detail=message)
        if local.lower().startswith("file://"):
            return CheckedCloneUrl(_local_clone_url(local, field), ())
    try:
        parsed = parse(url, settings)
        checked = await check_host(
            parsed,
            allowed_hosts=settings.ALLOWED_GIT_HOSTS,
            allow_local=settings.ALLOW_LOCAL_REPOSITORIES,
            resolver=resolver,
        )
    except CloneUrlError as refused:
        log.info("repository.clone_url_refused", reason=refused.code)
        raise ValidationFailed([FieldError(field=field, message=refused.message, code=refused.code)],
                               detail=refused.message) from None  # fmt: skip
    return CheckedCloneUrl(parsed, checked.addresses)


def _local_clone_url(raw: str, field: str) -> CloneUrl:
    """A file:///absolute/path URL: a local repository (ALLOW_LOCAL_REPOSITORIES only; the scans
    tests clone repositories they create on disk)."""
    url = raw.strip()
    parts = urlsplit(url)
    path = parts.path.rstrip("/")
    if parts.netloc or parts.query or parts.fragment or not path or any(ch <= " " or ch == "\x7f" for ch in url):
        message = "A local clone URL looks like file:///absolute/path/to/repository."
        raise ValidationFailed([FieldError(field=field, message=message, code="invalid_clone_url")], detail=message)
    return CloneUrl(url=url, scheme="file", host="", port=None, path=path.strip("/"), canonical=f"file://{path}")


def default_name(url: CloneUrl) -> str:
    """A repository's name when none is given: `owner/name` for a hosted one, the directory's
    name for a local one (not its whole path)."""
    path = url.path.rsplit("/", 1)[-1] if url.scheme == "file" else url.path
    return (path.removesuffix(".git") or path)[:NAME_MAX_LENGTH]


@dataclass(frozen=True)
class Connecting:
    """A repository about to be connected (not saved yet: a hook may fill in what it learns, or
    refuse it) and its checked clone URL."""

    repository: Repository
    checked: CheckedCloneUrl
    settings: Settings


connect_hooks: HookRegistry[Connecting] = HookRegistry("repository.connect")
on_repository_connect = connect_hooks.register
"""Register `async (session, connecting) -> None`, run before a repository is connected by URL:
the scans slice asks the remote whether it is a Git repository and which branch is its default."""
