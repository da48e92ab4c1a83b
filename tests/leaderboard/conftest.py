"""Leaderboard fixtures: a fixed clock (Thursday 2026-12-03, noon UTC) and the recompute over the
test's database."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import pytest

from codepulse.config import Settings
from codepulse.db import Database
from codepulse.leaderboard.cache import board_cache
from codepulse.leaderboard.ranking import RecomputeResult, recompute_rankings
from tests.helpers import FakeClock

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)

Recompute = Callable[..., Awaitable[RecomputeResult]]


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    board_cache.clear()


@pytest.fixture
def now(clock: FakeClock) -> datetime:
    clock.now = NOW
    return NOW


@pytest.fixture
def recompute(db: Database, settings: Settings, now: datetime) -> Recompute:
    async def run(at: datetime | None = None) -> RecomputeResult:
        return await recompute_rankings(db, settings, at or now)

    return run
