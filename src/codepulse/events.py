"""Organization events and shared facts: one slice announces or provides, another reacts or asks,
and neither imports the other.

Slices of the same layer (billing, notifications, leaderboard) may not import each other. When one
has news for an organization's members (billing: a payment failed, the plan changed, a quota is
nearly used up) it `announce`s an `OrgEvent` here, in its own transaction; notifications registers
with `on_org_event` at start-up and turns each event into notifications (`codepulse.hooks`: the
same mechanism, a hook runs in the caller's session and transaction, so a change that rolls back
announces nothing). With nothing registered an event reaches nobody.

Facts go the other way: the leaderboard `provide_best_ranks` at start-up, and notifications' weekly
summary asks `best_ranks(session, user_ids)`; with no provider the answer is empty.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from codepulse.hooks import HookRegistry


@dataclass(frozen=True)
class OrgEvent:
    """News for an organization's members at or above `audience` (a role name), or for `user_ids`."""

    kind: str  # a notification kind (codepulse.notifications.kinds)
    org_id: uuid.UUID
    title: str
    body: str
    dedup_key: str  # the same event announced twice reaches each member once
    now: datetime
    audience: str = "admin"
    data: dict[str, Any] = field(default_factory=dict)
    # Set: exactly these users (e.g. whoever started a scan) instead of the members by role.
    user_ids: tuple[uuid.UUID, ...] = ()


org_event_hooks: HookRegistry[OrgEvent] = HookRegistry("org.event")
on_org_event = org_event_hooks.register


async def announce(session: AsyncSession, event: OrgEvent) -> None:
    await org_event_hooks.run(session, event)


@dataclass(frozen=True)
class BoardRank:
    """A user's best rank on a leaderboard: on the `period` board of `metric`, of `ranked`."""

    period: str
    metric: str
    rank: int
    ranked: int


BestRanks = Callable[[AsyncSession, Sequence[uuid.UUID]], Awaitable[dict[uuid.UUID, BoardRank]]]
_best_rank_providers: list[BestRanks] = []


def provide_best_ranks(provider: BestRanks) -> BestRanks:
    """Register the function answering `best_ranks` (idempotent, like hooks)."""
    if provider not in _best_rank_providers:
        _best_rank_providers.append(provider)
    return provider


async def best_ranks(session: AsyncSession, user_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, BoardRank]:
    """Each user's best rank any provider knows (the better one when two know it)."""
    best: dict[uuid.UUID, BoardRank] = {}
    for provider in tuple(_best_rank_providers):
        for user_id, found in (await provider(session, user_ids)).items():
            if user_id not in best or found.rank < best[user_id].rank:
                best[user_id] = found
    return best
