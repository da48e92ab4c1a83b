"""The application factory: middleware, routers, error handlers and the lifespan."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import structlog
from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.sessions import SessionMiddleware

from codepulse import __version__
from codepulse.api import API_PREFIX, mount_api
from codepulse.auth.accounts import ensure_first_superuser
from codepulse.auth.cache import AuthCache
from codepulse.auth.oauth import router as oauth_router
from codepulse.billing.hooks import register_hooks as register_billing_hooks
from codepulse.clock import ClockFunc, utcnow
from codepulse.config import Settings, SettingsError, load_settings
from codepulse.db import Database
from codepulse.errors import document_problem_responses, install_error_handlers
from codepulse.health.service import ReadinessProbe
from codepulse.integrations.github import GitHubClient, build_oauth
from codepulse.integrations.github_app import build_github_app
from codepulse.integrations.github_device import build_github_device
from codepulse.leaderboard.hooks import register_hooks as register_leaderboard_hooks
from codepulse.logging import REQUEST_ID_HEADER, configure_logging
from codepulse.mail.outbox import register_hooks as register_mail_hooks
from codepulse.middleware import HttpLayer, PageOptions
from codepulse.migrations import head_revision
from codepulse.notifications.hooks import register_hooks as register_notifications_hooks
from codepulse.notifications.live import NotificationHub
from codepulse.orgs.hooks import register_hooks as register_orgs_hooks
from codepulse.pagination import cursor_signer
from codepulse.ratelimit import RateLimiter
from codepulse.repositories.hooks import register_hooks as register_repositories_hooks
from codepulse.routing import ApiRoute
from codepulse.scans import runner as scans_runner
from codepulse.scans.hooks import register_hooks as register_scans_hooks
from codepulse.scheduler import Scheduler, discover_jobs
from codepulse.security import PasswordHasher, SecretBox
from codepulse.tasks import TaskRegistry, Worker, discover_task_handlers
from codepulse.usage.hooks import register_hooks as register_usage_hooks
from codepulse.web.pages import mount_web, web_page_options

log = structlog.get_logger("codepulse.app")

OAUTH_COOKIE = "codepulse_oauth"
OAUTH_PATH = API_PREFIX + oauth_router.prefix  # the routes that read and answer the cookie


def operation_id(route: APIRoute) -> str:
    """Stable operation ids: `<tag>_<function name>`, e.g. `health_readiness`."""
    if not route.tags:
        raise RuntimeError(f"route {route.path} has no tag; give its router tags=[...]")
    return f"{route.tags[0]}_{route.name}"


class CodepulseAPI(FastAPI):
    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema is None:
            document_problem_responses(super().openapi())
        return super().openapi()


def register_hooks() -> None:
    """Each slice's reactions to the events of slices below it (see `codepulse.hooks`); idempotent."""
    register_mail_hooks()
    register_orgs_hooks()
    register_repositories_hooks()
    register_usage_hooks()
    register_scans_hooks()
    register_leaderboard_hooks()
    register_billing_hooks()
    register_notifications_hooks()


def create_app(settings: Settings, *, database: Database | None = None, clock: ClockFunc = utcnow) -> FastAPI:
    """Build the app. Pass `database` to share one the caller owns (tests); otherwise the
    lifespan opens an engine from settings and disposes it on shutdown. `clock` is "now" for
    every rule that depends on time."""
    owns_database = database is None
    register_hooks()
    db = database or Database.from_settings(settings)
    scheduler = Scheduler(db, settings, clock=clock)
    notification_hub = NotificationHub(db)
    discover_jobs(scheduler)
    worker: Worker | None = None
    if settings.WORKER_CONCURRENCY > 0:
        registry = TaskRegistry()
        discover_task_handlers(registry)
        worker = Worker(db, settings, registry, clock=clock)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if worker is not None:
            # Clones left by a process of ours that was killed (they may be private code).
            await asyncio.to_thread(scans_runner.prepare_process, settings)
        await ensure_first_superuser(db, settings, app.state.password_hasher, clock)
        if settings.SCHEDULER_ENABLED:
            scheduler.start()
        if worker is not None:
            await worker.start()
        log.info("app.started", version=__version__, environment=settings.ENVIRONMENT.value, dialect=db.dialect)
        try:
            yield
        finally:
            # Workers first: their tasks may still need the database (and the scheduler's reaper
            # would only find leases they are about to release).
            if worker is not None:
                await worker.stop()
                # Its scans are stopped: the engine pool's processes and the clones go too.
                await asyncio.to_thread(scans_runner.release_process)
            await scheduler.stop()
            await notification_hub.close()
            if owns_database:
                await db.dispose()
            log.info("app.stopped")

    app = CodepulseAPI(
        title="codepulse API",
        version=__version__,
        description="Code scanning and AI coding-assistant usage analytics for software teams.",
        lifespan=lifespan,
        generate_unique_id_function=operation_id,
        # None: FastAPI's defaults (the global providers); otherwise every signal off.
        telemetry=None if settings.OTEL_ENABLED else {"tracing": False, "metrics": False, "logs": False},
        openapi_url="/openapi.json",
        docs_url="/docs",
        redoc_url="/redoc",
    )
    # Every API route owns its request's session (codepulse.db.session); routes added with
    # app.get(...) too.
    app.router.route_class = ApiRoute
    app.state.settings = settings
    app.state.database = db
    app.state.worker = worker
    app.state.clock = clock
    app.state.password_hasher = PasswordHasher(settings)
    app.state.auth_cache = AuthCache(settings.AUTH_CACHE_SECONDS, settings.AUTH_CACHE_MAX_ENTRIES, clock)
    app.state.rate_limiter = RateLimiter(settings.RATE_LIMIT_STORAGE_URL, enabled=settings.RATE_LIMIT_ENABLED)
    app.state.github_oauth = build_oauth(settings)
    app.state.github_client = GitHubClient(settings)
    app.state.github_app = build_github_app(settings)
    app.state.github_device = build_github_device(settings)
    app.state.secret_box = SecretBox(settings.secret_key)
    app.state.cursor_signer = cursor_signer(settings.secret_key)
    app.state.scheduler = scheduler
    app.state.notification_hub = notification_hub
    app.state.readiness = ReadinessProbe(
        database=db,
        expected_revision=head_revision(),
        timeout_seconds=settings.READINESS_TIMEOUT_SECONDS,
        scheduler_enabled=settings.SCHEDULER_ENABLED,
        scheduler_running=lambda: scheduler.running,
        clock=clock,
        mail_backend=settings.mail_backend,
        production=settings.is_production,
    )

    install_error_handlers(app)
    mount_api(app, settings)
    # The browser dashboard: its pages at / beside the API, HTML errors on page paths.
    mount_web(app, settings)

    install_middleware(app, settings, pages=web_page_options())
    return app


def install_middleware(app: FastAPI, settings: Settings, pages: PageOptions | None = None) -> None:
    """Request order, outside in: request id, access line and security headers (the OAuth routes
    also through their cookie session) -> [CORS, when CORS_ORIGINS is set] -> unhandled errors,
    plain-text errors to problems, gzip -> (FastAPI's body limit, on routes with a body) -> the
    route. Without CORS the two halves of our layer run as one."""
    # Only the OAuth flow uses a cookie: its state and PKCE verifier, signed with SECRET_KEY,
    # scoped to the OAuth paths, gone after 10 minutes. SameSite=lax: GitHub's redirect back is a
    # cross-site navigation that must carry it. No other request reads or answers it.
    oauth_session = partial(
        SessionMiddleware,
        secret_key=settings.secret_key,
        session_cookie=OAUTH_COOKIE,
        max_age=600,
        path=OAUTH_PATH,
        same_site="lax",
        https_only=settings.is_production,
    )
    hsts, scoped, gzip_minimum_size = settings.is_production, (OAUTH_PATH, oauth_session), settings.GZIP_MINIMUM_SIZE
    if not settings.CORS_ORIGINS:
        app.add_middleware(HttpLayer, hsts=hsts, scoped=scoped, gzip_minimum_size=gzip_minimum_size, pages=pages)
        return
    # add_middleware wraps: the last added is the outermost.
    app.add_middleware(HttpLayer, outer=False, gzip_minimum_size=gzip_minimum_size, pages=pages)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.CORS_ORIGINS,
        # The dashboard keeps the GitHub link cookie of `POST /auth/oauth/github/link`.
        allow_credentials=True,
        allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"],
        allow_headers=["Authorization", "Content-Type", "Content-Encoding", REQUEST_ID_HEADER],
        expose_headers=[REQUEST_ID_HEADER, "Retry-After", "Location"],
        max_age=600,
    )
    app.add_middleware(HttpLayer, inner=False, hsts=hsts, scoped=scoped, pages=pages)


def create_app_from_env() -> FastAPI:
    """Uvicorn factory entry point (each worker process builds its app from the environment)."""
    try:
        settings = load_settings()
    except SettingsError as error:
        raise SystemExit(f"codepulse: configuration error: {error}") from None
    configure_logging(settings)
    app = create_app(settings)
    # Everything imported and built so far lives as long as the process: keep it out of the
    # cyclic GC's generations, which shortens every collection under load (p99 and throughput).
    gc.freeze()
    return app
