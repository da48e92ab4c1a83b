"""codepulse.hooks: the one way a lower slice lets upper slices react to its events."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from codepulse.errors import Conflict
from codepulse.hooks import HookRegistry


async def test_hooks_run_once_each_in_registration_order_in_the_callers_session(session: AsyncSession) -> None:
    registry: HookRegistry[str] = HookRegistry("thing.delete")
    calls: list[tuple[str, str, AsyncSession]] = []

    async def first(given: AsyncSession, thing: str) -> None:
        calls.append(("first", thing, given))

    async def second(given: AsyncSession, thing: str) -> None:
        calls.append(("second", thing, given))

    for hook in (first, second, first, second):
        assert registry.register(hook) is hook
    assert registry.hooks == (first, second)
    await registry.run(session, "x")
    assert calls == [("first", "x", session), ("second", "x", session)]


async def test_a_refusing_hook_stops_the_others_and_propagates(session: AsyncSession) -> None:
    registry: HookRegistry[str] = HookRegistry("thing.delete")
    ran: list[str] = []

    async def refuse(_session: AsyncSession, thing: str) -> None:
        raise Conflict(f"{thing} is still needed.", code="still_needed")

    async def later(_session: AsyncSession, thing: str) -> None:
        ran.append(thing)

    registry.register(refuse)
    registry.register(later)
    with pytest.raises(Conflict):
        await registry.run(session, "x")
    assert ran == []
