"""Hooks: how a lower slice lets upper slices react to its events without importing them.

Dependencies point down only (auth < orgs < repositories, usage < scans < ...). When a rule of a
lower slice involves an upper one — deleting an account must respect orgs' "last owner" rule,
deleting an organization removes its repositories, scans and cached scan results — the lower
slice owns a `HookRegistry` for the event and calls it; the upper slice registers a hook with it
at start-up:

    # lower slice (codepulse/orgs/service.py)
    org_delete_hooks: HookRegistry[Organization] = HookRegistry("org.delete")
    on_org_delete = org_delete_hooks.register
    ...
    await org_delete_hooks.run(self.session, org)          # inside OrgService.delete

    # upper slice (codepulse/scans/hooks.py)
    async def forget_cached_results(session: AsyncSession, org: Organization) -> None: ...
    def register_hooks() -> None:
        orgs_service.on_org_delete(forget_cached_results)

`create_app` calls each upper slice's `register_hooks()`. A hook is `async (session, obj) -> None`
and runs in the caller's session and transaction: it commits or rolls back with the event (a hook
raising a domain error refuses the whole operation). Work that may take long or must survive a
crash goes on the task queue from the hook, in that same transaction. Registering the same hook
again is a no-op, so building many apps in one process (tests) never runs a hook twice.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

T = TypeVar("T")

Hook = Callable[[AsyncSession, T], Awaitable[None]]


class HookRegistry(Generic[T]):
    """The hooks of one event, run in registration order."""

    def __init__(self, event: str) -> None:
        self.event = event
        self._hooks: list[Hook[T]] = []

    def register(self, hook: Hook[T]) -> Hook[T]:
        """Add `hook` (idempotent: a hook already registered is not added twice). Returns it,
        so it can decorate a function."""
        if hook not in self._hooks:
            self._hooks.append(hook)
        return hook

    @property
    def hooks(self) -> tuple[Hook[T], ...]:
        return tuple(self._hooks)

    async def run(self, session: AsyncSession, obj: T) -> None:
        """Run every hook on `obj` in the caller's session; the first error stops and propagates."""
        for hook in tuple(self._hooks):
            await hook(session, obj)
