"""The per-blob result cache the pipeline asks before any engine call.

Keys are (blob SHA, engine name, engine version): results are reused for any path holding the
blob. `MemoryCache` serves the local CLI and tests; the worker's cache over the database is
`runner.DatabaseResultCache`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from codepulse.scans.engine import RawFinding

CacheKey = tuple[str, str, str]
"""(blob SHA, engine name, engine version)"""


class ResultCache(Protocol):
    async def get_many(self, keys: Sequence[CacheKey]) -> dict[CacheKey, list[RawFinding]]: ...

    async def put_many(self, items: Mapping[CacheKey, list[RawFinding]]) -> None: ...


class MemoryCache:
    """A ResultCache in a dict (the local CLI, tests)."""

    def __init__(self) -> None:
        self.data: dict[CacheKey, list[RawFinding]] = {}

    async def get_many(self, keys: Sequence[CacheKey]) -> dict[CacheKey, list[RawFinding]]:
        return {key: list(self.data[key]) for key in keys if key in self.data}

    async def put_many(self, items: Mapping[CacheKey, list[RawFinding]]) -> None:
        for key, findings in items.items():
            self.data[key] = list(findings)
