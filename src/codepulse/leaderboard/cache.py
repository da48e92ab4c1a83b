"""Board pages kept in this process's memory for LEADERBOARD_CACHE_SECONDS.

A snapshot never changes once computed, so a page only goes stale when a new snapshot is swapped
in or a ranked account leaves the boards (made private, excluded, deleted). This process clears
the cache itself on those events; other replicas see them within the cache's lifetime.
"""

from __future__ import annotations

import time
from collections.abc import Hashable
from typing import Any

MAX_ENTRIES = 4096


class PageCache:
    def __init__(self) -> None:
        self._entries: dict[Hashable, tuple[float, Any]] = {}

    def get(self, key: Hashable, max_age: float) -> Any | None:
        entry = self._entries.get(key)
        if entry is None or time.monotonic() - entry[0] > max_age:
            return None
        return entry[1]

    def put(self, key: Hashable, value: Any) -> None:
        if len(self._entries) >= MAX_ENTRIES:
            self._entries.clear()
        self._entries[key] = (time.monotonic(), value)

    def clear(self) -> None:
        self._entries.clear()


board_cache = PageCache()
