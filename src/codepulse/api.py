"""The /api/v1 router: every domain's router is included here, and only here."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from codepulse.admin.router import router as admin_tasks_router
from codepulse.admin.stats import admin_stats_router
from codepulse.admin.users import admin_users_router
from codepulse.auth.admin_router import admin_router as auth_admin_router
from codepulse.auth.device_flow import router as device_flow_router
from codepulse.auth.oauth import router as oauth_router
from codepulse.auth.router import router as auth_router
from codepulse.auth.router import users_router
from codepulse.billing.router import router as billing_router
from codepulse.config import Settings
from codepulse.errors import PROBLEM_RESPONSES
from codepulse.health.router import router as health_router
from codepulse.leaderboard.admin_router import admin_router as leaderboard_admin_router
from codepulse.leaderboard.benchmark_router import benchmarks_router
from codepulse.leaderboard.router import router as leaderboard_router
from codepulse.notifications.router import router as notifications_router
from codepulse.orgs.router import invitations_router
from codepulse.orgs.router import router as orgs_router
from codepulse.repositories.router import router as repositories_router
from codepulse.routing import ApiRoute, DomainRouter
from codepulse.scans.live import router as scan_events_router
from codepulse.scans.live import ws_router as scan_socket_router
from codepulse.scans.router import router as scans_router
from codepulse.usage.router import pricing_router
from codepulse.usage.router import router as usage_router

API_PREFIX = "/api/v1"


# Requests are matched against routes in this order: the hottest public reads come first.
DOMAIN_ROUTERS: tuple[DomainRouter, ...] = (
    health_router,
    leaderboard_router,
    auth_router,
    oauth_router,
    device_flow_router,
    users_router,
    orgs_router,
    invitations_router,
    repositories_router,
    scans_router,
    scan_events_router,
    usage_router,
    pricing_router,
    leaderboard_admin_router,
    admin_tasks_router,
    auth_admin_router,
    admin_users_router,
    admin_stats_router,
    benchmarks_router,
    billing_router,
    notifications_router,
)


def build_api_router(settings: Settings) -> APIRouter:
    """An empty router with the API's prefix and defaults, for routes mounted by inclusion."""
    # The body limit sits on this router, not the app: FastAPI's app-level limiter answers from
    # outside our middleware. A route that accepts more (usage sync) sets its own max_body_size.
    return APIRouter(
        prefix=API_PREFIX,
        responses=PROBLEM_RESPONSES,
        max_body_size=settings.MAX_REQUEST_BODY_BYTES,
        route_class=ApiRoute,
    )


def mount_api(app: FastAPI, settings: Settings) -> None:
    """Every domain's routes on the app, under /api/v1 with the API's defaults (the same prefix,
    problem responses and body limit as `build_api_router`), each built once.

    A request is matched against the routes in order: FastAPI's own (/openapi.json, /docs,
    /redoc), registered when the app is made, go behind the API's, which take nearly every request.
    """
    framework_routes = list(app.router.routes)
    del app.router.routes[:]
    for router in DOMAIN_ROUTERS:
        router.build_into(
            app.router,
            prefix=API_PREFIX,
            responses=PROBLEM_RESPONSES,
            max_body_size=settings.MAX_REQUEST_BODY_BYTES,
        )
    # WebSockets live outside /api/v1 (no JSON bodies, no problem responses).
    app.include_router(scan_socket_router)
    app.router.routes.extend(framework_routes)
