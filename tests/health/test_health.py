from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from codepulse.config import Settings
from codepulse.db import Database
from codepulse.migrations import head_revision
from tests.stubs.tcp import BlackholeServer

HEALTH_JSON = "application/health+json"


async def test_liveness_passes_without_io(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/health")
    assert response.status_code == 200
    assert response.headers["content-type"] == HEALTH_JSON
    assert response.json() == {"status": "pass"}
    assert response.headers["cache-control"] == "no-store"


async def test_head_works_on_liveness_and_readiness(client: httpx.AsyncClient) -> None:
    live = await client.head("/api/v1/health")
    ready = await client.head("/api/v1/health/ready")
    assert (live.status_code, ready.status_code) == (200, 200)
    assert live.headers["content-type"] == HEALTH_JSON
    assert live.content == b""


async def test_readiness_reports_database_and_schema(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/health/ready")
    assert response.status_code == 200
    assert response.headers["content-type"] == HEALTH_JSON
    body = response.json()
    assert body["status"] == "pass"
    database = body["checks"]["database:responseTime"][0]
    assert database["status"] == "pass"
    assert database["observedUnit"] == "ms"
    assert isinstance(database["observedValue"], float)
    assert "time" in database
    schema = body["checks"]["database:schema"][0]
    assert schema == schema | {"status": "pass", "observedValue": head_revision()}
    # The scheduler is disabled in these settings, so it is not a readiness condition.
    assert "scheduler:running" not in body["checks"]


async def test_readiness_fails_when_schema_is_behind(client: httpx.AsyncClient, db: Database) -> None:
    async with db.transaction() as session:
        await session.execute(text("UPDATE alembic_version SET version_num = 'older'"))
    response = await client.get("/api/v1/health/ready")
    assert response.status_code == 503
    schema = response.json()["checks"]["database:schema"][0]
    assert schema["status"] == "fail"
    assert "codepulse migrate" in schema["output"]


async def test_readiness_fails_while_enabled_scheduler_is_not_running(
    make_settings: Callable[..., Settings], app_factory: Callable[[Settings], FastAPI]
) -> None:
    app = app_factory(make_settings(SCHEDULER_ENABLED=True))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        # No lifespan: the scheduler was never started.
        stopped = await client.get("/api/v1/health/ready")
        async with app.router.lifespan_context(app):
            running = await client.get("/api/v1/health/ready")
    assert stopped.status_code == 503
    assert stopped.json()["checks"]["scheduler:running"][0]["status"] == "fail"
    assert running.status_code == 200
    assert running.json()["checks"]["scheduler:running"][0]["observedValue"] is True


async def test_readiness_says_how_mail_goes_out(
    client: httpx.AsyncClient, make_settings: Callable[..., Settings], app_factory: Callable[[Settings], FastAPI]
) -> None:
    configured = (await client.get("/api/v1/health/ready")).json()["checks"]["mail:backend"][0]
    assert (configured["status"], configured["observedValue"]) == ("pass", "smtp")  # the suite's SMTP stub
    app = app_factory(make_settings(MAIL_DISABLED=True))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as disabled:
        response = await disabled.get("/api/v1/health/ready")
    # Ready (200), but an operator's dashboard sees that nothing is mailed.
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "warn"
    mail = body["checks"]["mail:backend"][0]
    assert (mail["status"], mail["observedValue"]) == ("warn", "disabled")
    assert "MAIL_DISABLED" in mail["output"]


async def test_readiness_answers_503_within_two_seconds_when_database_hangs(
    make_settings: Callable[..., Settings],
) -> None:
    """A database that accepts connections and never answers (a black hole) fails fast."""
    from codepulse.app import create_app

    async with BlackholeServer() as blackhole:
        settings = make_settings(
            DATABASE_URL=f"postgresql+asyncpg://codepulse@127.0.0.1:{blackhole.port}/codepulse",
            READINESS_TIMEOUT_SECONDS=1.0,
        )
        app = create_app(settings)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
        ):
            started = time.monotonic()
            response = await client.get("/api/v1/health/ready")
            elapsed = time.monotonic() - started
    assert response.status_code == 503
    assert elapsed < 2.0
    check = response.json()["checks"]["database:responseTime"][0]
    assert check["status"] == "fail"
    assert "no answer within 1 s" in check["output"]


@pytest.mark.postgres_only
async def test_readiness_recovers_when_the_database_comes_back(
    make_settings: Callable[..., Settings], database_url: str
) -> None:
    """Through a TCP proxy we can cut: ready, cut -> 503 fast, restored -> ready again."""
    from sqlalchemy.engine import make_url

    from codepulse.app import create_app
    from tests.stubs.tcp import TcpProxy

    target = make_url(database_url)
    async with TcpProxy(target.host or "127.0.0.1", target.port or 5432) as proxy:
        proxied = target.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        app = create_app(make_settings(DATABASE_URL=proxied, READINESS_TIMEOUT_SECONDS=1.0))
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
        ):
            assert (await client.get("/api/v1/health/ready")).status_code == 200
            await proxy.cut()
            started = time.monotonic()
            down = await client.get("/api/v1/health/ready")
            assert down.status_code == 503
            assert time.monotonic() - started < 2.0
            proxy.restore()
            up = await client.get("/api/v1/health/ready")
            assert up.status_code == 200, up.json()
