"""Small helpers shared by tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi import APIRouter

from codepulse.api import build_api_router
from codepulse.config import Settings


def with_api_prefix(router: APIRouter, settings: Settings) -> APIRouter:
    """Mount a test-only router the way domain routers are mounted: under /api/v1, with the
    API router's defaults (body limit, problem responses)."""
    api = APIRouter()
    wrapper = build_api_router(settings)
    wrapper.routes.clear()
    wrapper.include_router(router)
    api.include_router(wrapper)
    return api


class FakeClock:
    """`now` for the app under test; starts at the real time and moves only when told."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now
