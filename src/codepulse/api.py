"""The /api/v1 router: every domain's router is included here, and only here."""

from __future__ import annotations

from fastapi import APIRouter

from codepulse.auth.oauth import router as oauth_router
from codepulse.auth.router import router as auth_router
from codepulse.auth.router import users_router
from codepulse.config import Settings
from codepulse.errors import PROBLEM_RESPONSES
from codepulse.health.router import router as health_router
from codepulse.orgs.router import invitations_router
from codepulse.orgs.router import router as orgs_router
from codepulse.repositories.router import router as repositories_router
from codepulse.usage.router import pricing_router
from codepulse.usage.router import router as usage_router

API_PREFIX = "/api/v1"


def build_api_router(settings: Settings) -> APIRouter:
    # The body limit sits on this router, not the app: FastAPI's app-level limiter answers from
    # outside our middleware. A route that accepts more (usage sync) sets its own max_body_size.
    api = APIRouter(prefix=API_PREFIX, responses=PROBLEM_RESPONSES, max_body_size=settings.MAX_REQUEST_BODY_BYTES)
    api.include_router(health_router)
    api.include_router(auth_router)
    api.include_router(oauth_router)
    api.include_router(users_router)
    api.include_router(orgs_router)
    api.include_router(invitations_router)
    api.include_router(repositories_router)
    api.include_router(usage_router)
    api.include_router(pricing_router)
    return api
