"""A short-lived, in-process cache of authenticated bearer tokens, for read requests.

Authentication is one database round trip per request, which dominates cheap read endpoints.
A read request whose token was seen in the last AUTH_CACHE_SECONDS reuses the (detached,
read-only) session and user loaded then. Write requests never use it: they load fresh objects
into their own transaction. Everything that changes a user or a session in this process
invalidates that user's entries, once more after its transaction commits (`SessionService.forget`);
another replica sees a revocation within AUTH_CACHE_SECONDS. AUTH_CACHE_SECONDS=0 turns it off.

Stale refills: a read that loaded a user's session from the database before a change committed
could store it after the invalidation. So every entry carries the cache's epoch taken before its
database read (`stamp()`), every invalidation records a newer epoch for its user, and a hit is
refused when its user was invalidated after the entry's read began: one dictionary lookup, no
database round trip.

Concurrent misses: when an entry expires under load, every request in flight with that token
misses at once. Only the first reads the database (`loading`); the others wait for it
(`wait_for_load`) and take what it cached, instead of each checking out a connection (a burst
that overflowed the pool and opened new connections every AUTH_CACHE_SECONDS).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

from cachetools import TTLCache

from codepulse.auth.models import AuthSession, User


@dataclass
class CachedAuth:
    """Detached objects, read-only; the touch bookkeeping is tracked beside them so that hits do
    not schedule the same update again."""

    session: AuthSession
    user: User
    last_used_at: datetime
    expires_at: datetime
    stamp: int
    """The cache's epoch before the database read that loaded it."""


class AuthCache:
    def __init__(self, seconds: float, max_entries: int, clock: Callable[[], datetime]) -> None:
        self.enabled = seconds > 0
        self._entries: TTLCache[str, CachedAuth] = TTLCache(
            maxsize=max_entries, ttl=max(seconds, 0.001), timer=lambda: clock().timestamp()
        )
        self._by_user: dict[uuid.UUID, set[str]] = {}
        self._epoch = 0
        # The epoch of each user's last invalidation; forgotten ones count as `_floor`.
        self._invalidated: dict[uuid.UUID, int] = {}
        self._floor = 0
        self._loading: dict[str, asyncio.Future[None]] = {}

    def stamp(self) -> int:
        """The epoch to give an entry whose database read starts now."""
        return self._epoch

    def get(self, token_hash: str) -> CachedAuth | None:
        if not self.enabled:
            return None
        entry = self._entries.get(token_hash)
        if entry is not None and self._invalidated.get(entry.user.id, self._floor) > entry.stamp:
            self._entries.pop(token_hash, None)  # read before its user changed: stale
            return None
        return entry

    def put(self, token_hash: str, entry: CachedAuth) -> None:
        if not self.enabled or self._invalidated.get(entry.user.id, self._floor) > entry.stamp:
            return
        self._entries[token_hash] = entry
        self._by_user.setdefault(entry.user.id, set()).add(token_hash)
        if len(self._by_user) > 2 * self._entries.maxsize:
            # Entries expire inside TTLCache without telling us: rebuild the index now and then.
            live = {key: cached.user.id for key, cached in self._entries.items()}
            self._by_user = {}
            for key, user_id in live.items():
                self._by_user.setdefault(user_id, set()).add(key)

    @contextmanager
    def loading(self, token_hash: str) -> Iterator[None]:
        """A database read of `token_hash` is in flight for the duration: concurrent misses of the
        same token wait for it (`wait_for_load`) instead of reading too."""
        if not self.enabled or token_hash in self._loading:
            yield
            return
        done = asyncio.get_running_loop().create_future()
        self._loading[token_hash] = done
        try:
            yield
        finally:
            del self._loading[token_hash]
            done.set_result(None)

    async def wait_for_load(self, token_hash: str) -> bool:
        """Wait for a read of `token_hash` in flight, if there is one (whether there was)."""
        done = self._loading.get(token_hash)
        if done is None:
            return False
        await asyncio.shield(done)  # a waiter cancelled must not cancel the loader's signal
        return True

    def invalidate_user(self, user_id: uuid.UUID) -> None:
        self._epoch += 1
        if len(self._invalidated) >= self._entries.maxsize:
            # Bounded memory: forget them all, and treat every older entry as stale (a cold cache).
            self._invalidated.clear()
            self._floor = self._epoch
        self._invalidated[user_id] = self._epoch
        for token_hash in self._by_user.pop(user_id, set()):
            self._entries.pop(token_hash, None)

    def __len__(self) -> int:
        return len(self._entries)
