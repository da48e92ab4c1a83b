"""The page cache: requests that miss together share one load; a failed load is not shared."""

from __future__ import annotations

import asyncio

import pytest

from codepulse.leaderboard.cache import PageCache


async def test_requests_missing_together_share_one_load() -> None:
    cache = PageCache()
    started, release = asyncio.Event(), asyncio.Event()
    loads = 0

    async def load() -> bytes:
        nonlocal loads
        loads += 1
        started.set()
        await release.wait()
        return b"page"

    readers = [asyncio.create_task(cache.get_or_load("k", 60, load)) for _ in range(8)]
    await started.wait()
    release.set()
    assert await asyncio.gather(*readers) == [b"page"] * 8
    assert loads == 1
    assert await cache.get_or_load("k", 60, load) == b"page"
    assert loads == 1
    cache.clear()
    assert await cache.get_or_load("k", 60, load) == b"page"
    assert loads == 2


async def test_a_failed_load_is_not_shared_and_leaves_nothing_behind() -> None:
    cache = PageCache()
    started, release = asyncio.Event(), asyncio.Event()
    calls = 0

    async def load() -> bytes:
        nonlocal calls
        calls += 1
        if calls == 1:
            started.set()
            await release.wait()
            raise ConnectionError("database gone")
        return b"page"

    first = asyncio.create_task(cache.get_or_load("k", 60, load))
    await started.wait()
    follower = asyncio.create_task(cache.get_or_load("k", 60, load))
    await asyncio.sleep(0)  # the follower reaches the wait on the first load
    release.set()
    with pytest.raises(ConnectionError):
        await first
    assert await follower == b"page"
    assert calls == 2
    assert not cache._loading


async def test_a_full_cache_drops_the_least_recently_used_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("codepulse.leaderboard.cache.MAX_ENTRIES", 2)
    cache = PageCache()
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a", 60) == 1  # "a" is now the most recently used
    cache.put("c", 3)
    assert (cache.get("a", 60), cache.get("b", 60), cache.get("c", 60)) == (1, None, 3)
