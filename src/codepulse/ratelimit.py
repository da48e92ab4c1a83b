"""Rate limits on top of the `limits` library: in-process by default, a shared store when configured.

Usage: `await limiter.check("login", [ip_rule, account_rule])` before the guarded work, and
`await limiter.hit(...)` for what counts (every attempt, or only failures). Over a limit raises
RateLimited (429 with Retry-After).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

from limits import RateLimitItem, parse_many
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string

from codepulse.errors import RateLimited


@dataclass(frozen=True)
class Rule:
    """`limits` like "5/minute;20/hour" applied to one key (an IP, an account, a user id)."""

    scope: str
    key: str
    limits: str

    @property
    def items(self) -> list[RateLimitItem]:
        return parse_many(self.limits)


class RateLimiter:
    def __init__(self, storage_url: str = "memory://", *, enabled: bool = True) -> None:
        uri = storage_url if storage_url.startswith("async+") else f"async+{storage_url}"
        self._strategy = MovingWindowRateLimiter(storage_from_string(uri))
        self.enabled = enabled

    async def check(self, rules: Sequence[Rule]) -> None:
        """Raise RateLimited if any rule is already exhausted (does not count this call)."""
        if not self.enabled:
            return
        for rule in rules:
            for item in rule.items:
                if not await self._strategy.test(item, rule.scope, rule.key):
                    raise RateLimited(await self._retry_after(item, rule))

    async def hit(self, rules: Sequence[Rule]) -> None:
        """Count one event against every rule; raise RateLimited if that goes over a limit."""
        if not self.enabled:
            return
        exceeded: tuple[RateLimitItem, Rule] | None = None
        for rule in rules:
            for item in rule.items:
                if not await self._strategy.hit(item, rule.scope, rule.key) and exceeded is None:
                    exceeded = (item, rule)
        if exceeded is not None:
            raise RateLimited(await self._retry_after(*exceeded))

    async def _retry_after(self, item: RateLimitItem, rule: Rule) -> int:
        stats = await self._strategy.get_window_stats(item, rule.scope, rule.key)
        return max(1, math.ceil(stats.reset_time - time.time()))
