"""The `on_repositories_delete` hook: upper slices react to repositories about to be deleted (one,
or every repository of an organization being deleted), in the deletion's transaction, while the
rows that cascade with them are still there."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from codepulse.hooks import HookRegistry


@dataclass(frozen=True)
class DeletingRepositories:
    """The repository `repository_id` of `org_id` is about to be deleted, or every repository of
    `org_id` when it is None."""

    org_id: uuid.UUID
    repository_id: uuid.UUID | None = None


delete_hooks: HookRegistry[DeletingRepositories] = HookRegistry("repositories.delete")
on_repositories_delete = delete_hooks.register
"""Register `async (session, deleting) -> None`, run before repositories are deleted (their scans
and findings go with them, by foreign keys): the scans slice takes their scans out of its
per-day counts."""
