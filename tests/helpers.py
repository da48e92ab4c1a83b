"""Small helpers shared by tests."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from email.message import Message

import uvicorn
from fastapi import APIRouter, FastAPI

from codepulse.api import build_api_router
from codepulse.clock import ClockFunc
from codepulse.config import Settings
from codepulse.db import Database
from codepulse.mail import jobs as mail_jobs
from codepulse.notifications import jobs as notifications_jobs
from codepulse.tasks import TaskRegistry, Worker
from tests.stubs.smtp import SmtpServer


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


class Mailbox:
    """The loopback SMTP server's inbox, and `deliver()`: run the mail outbox the way a worker
    does (`notifications.mail` and `mail.deliver` tasks, until none is due), since tests run no
    worker of their own."""

    def __init__(self, server: SmtpServer, database: Database, settings: Settings, clock: ClockFunc) -> None:
        self.server = server
        self.database = database
        self.settings = settings
        self.clock = clock

    async def deliver(self) -> int:
        registry = TaskRegistry()
        mail_jobs.register_tasks(registry)
        notifications_jobs.register_tasks(registry)
        worker = Worker(self.database, self.settings, registry, clock=self.clock, concurrency=1)
        return await worker.run_until_idle()

    @property
    def messages(self) -> list[Message]:
        return self.server.messages

    def messages_to(self, address: str) -> list[Message]:
        return self.server.messages_to(address)

    def clear(self) -> None:
        self.server.clear()

    link_token = staticmethod(SmtpServer.link_token)
    link_token_in_path = staticmethod(SmtpServer.link_token_in_path)


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # pytest owns the signals


@contextlib.asynccontextmanager
async def served(app: FastAPI, scheme: str = "ws") -> AsyncIterator[str]:
    """The app (whose lifespan the test already runs) on a loopback port; yields its origin,
    ws://127.0.0.1:port (or http:// with `scheme="http"`). Streams still open at the end are cut
    after a second."""
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        lifespan="off",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=1,
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            await task
            raise RuntimeError("uvicorn stopped during start-up")
        await asyncio.sleep(0.005)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"{scheme}://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
