"""The /api/v1 router: every domain's router is included here, and only here."""

from __future__ import annotations

from fastapi import APIRouter

from codepulse.errors import PROBLEM_RESPONSES
from codepulse.health.router import router as health_router

API_PREFIX = "/api/v1"


def build_api_router() -> APIRouter:
    api = APIRouter(prefix=API_PREFIX, responses=PROBLEM_RESPONSES)
    api.include_router(health_router)
    return api
