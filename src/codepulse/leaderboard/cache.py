"""Board pages kept in this process's memory for LEADERBOARD_CACHE_SECONDS.

A snapshot never changes once computed, so a page only goes stale when a new snapshot is swapped
in or a ranked account leaves the boards (made private, excluded, deleted). This process clears
the cache itself on those events; other replicas see them within the cache's lifetime.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

# Pages and viewers' own standings (`me`, a few hundred bytes each); the least recently used go
# first when full.
MAX_ENTRIES = 16384


class PageCache:
    def __init__(self) -> None:
        self._entries: OrderedDict[Hashable, tuple[float, Any]] = OrderedDict()
        self._loading: dict[Hashable, asyncio.Event] = {}

    async def get_or_load(self, key: Hashable, max_age: float, load: Callable[[], Awaitable[Any]]) -> Any:
        """The entry for `key`, loaded by `load()` when missing or older than `max_age`. Requests
        that miss together wait for the first one's load instead of each reading the database
        (when an entry expires under load, every request in flight misses it at once); if that
        load fails, each loads for itself."""
        cached = self.get(key, max_age)
        if cached is not None:
            return cached
        loading = self._loading.get(key)
        if loading is not None:
            await loading.wait()
            cached = self.get(key, max_age)
            if cached is not None:
                return cached
            return await load()
        loading = self._loading[key] = asyncio.Event()
        try:
            value = await load()
            if value is not None:
                self.put(key, value)
            return value
        finally:
            del self._loading[key]
            loading.set()

    def get(self, key: Hashable, max_age: float) -> Any | None:
        entry = self._entries.get(key)
        if entry is None or time.monotonic() - entry[0] > max_age:
            return None
        self._entries.move_to_end(key)
        return entry[1]

    def put(self, key: Hashable, value: Any) -> None:
        self._entries[key] = (time.monotonic(), value)
        self._entries.move_to_end(key)
        if len(self._entries) > MAX_ENTRIES:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()


board_cache = PageCache()
