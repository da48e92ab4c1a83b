"""Fixtures: one migrated test database per run, a rolled-back transaction per test.

- `db`: a Database bound to a connection whose transaction is rolled back after the test;
  sessions opened from it (the app's per-request sessions too) commit into savepoints.
- `session`: an AsyncSession on that connection; factories add to it.
- `make_user` / `make_org` / `make_member`: signed-in users, organizations and members built
  directly in that session (tests/factories.py), for tests about a rule rather than a sign-up.
- `app` / `client`: the real app (lifespan run) over `db`, and an httpx client on it.
- `database_server.clone()`: a fresh database with real commits, for workers and concurrency.

SQLite by default; PostgreSQL when TEST_DATABASE_URL is set. Tests marked `postgres_only` are
deselected (not skipped) on SQLite: they run in the PostgreSQL pass of CI.
"""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from codepulse.app import create_app
from codepulse.config import Settings
from codepulse.db import Database, create_engine
from codepulse.logging import configure_logging
from tests import factories
from tests.databases import DatabaseServer, build_settings
from tests.helpers import FakeClock, Mailbox
from tests.stubs.smtp import SmtpServer


class _LeakedConnections(logging.Handler):
    """Records SQLAlchemy's "garbage collector is trying to clean up non-checked-in connection":
    a connection someone took and never gave back. Any such record fails the test it shows up in,
    and the run (pytest_sessionfinish collects garbage once more at the end)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "non-checked-in connection" in message:
            self.messages.append(message)


_leaks = _LeakedConnections()
logging.getLogger("sqlalchemy.pool").addHandler(_leaks)


@pytest.fixture(autouse=True)
def _no_leaked_connections() -> Iterator[None]:
    yield
    if _leaks.messages:
        leaked, _leaks.messages[:] = list(_leaks.messages), []
        pytest.fail("a pooled connection was never checked in:\n" + "\n".join(leaked))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    gc.collect()
    workeroutput: dict[str, object] | None = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:  # an xdist worker: its exit status is not the run's; tell the controller
        workeroutput["leaked_connections"] = list(_leaks.messages)
        return
    if _leaks.messages:
        print("\nLEAKED CONNECTIONS:\n" + "\n".join(_leaks.messages))
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: object, error: object) -> None:
    """An xdist worker is done: the leaks it found at its end are this run's (pytest_sessionfinish)."""
    workeroutput = getattr(node, "workeroutput", {})
    _leaks.messages.extend(workeroutput.get("leaked_connections", []))


def _test_database_url() -> str | None:
    url = os.environ.get("TEST_DATABASE_URL", "").strip()
    return url or None


# `-n auto` (addopts): at most this many pytest-xdist workers. Each has its own test databases
# (tests/databases.py names them after its process), its own loopback stubs on ports the OS picks,
# its own tmp_path; PostgreSQL scopes advisory locks to a database, so workers never share one.
MAX_WORKERS = 2
PARALLEL_FROM_FILES = 6

# Modules that take longest (Chromium against a real server, the API fuzz, CLI subprocesses),
# handed out first under xdist so the run does not end waiting on one of them.
SLOW_FIRST = ("tests/web/test_browser", "tests/test_fuzz.py", "tests/test_cli.py")


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """Workers for `-n auto`: none for a run of fewer than PARALLEL_FROM_FILES test files (a file,
    a test, a small folder), which would take longer to start two workers (a migrated template
    database each) than they save; else the cores, up to MAX_WORKERS. `-n N`, `-n 0` or
    PYTEST_XDIST_AUTO_NUM_WORKERS decide instead."""
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return None  # xdist's own hook reads it
    if config.args_source == pytest.Config.ArgsSource.ARGS:
        files = 0
        for arg in config.args:
            path = config.invocation_params.dir / arg.split("::", 1)[0]
            files += sum(1 for _ in path.rglob("test_*.py")) if path.is_dir() else 1
        if files < PARALLEL_FROM_FILES:
            return 0
    return min(MAX_WORKERS, os.cpu_count() or 1)


def _slow_first(items: list[pytest.Item]) -> None:
    """Whole modules move (a module-scoped fixture is set up once per worker that runs it)."""
    items.sort(key=lambda item: not item.nodeid.startswith(SLOW_FIRST))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if hasattr(config, "workerinput"):  # an xdist worker: every worker sorts alike
        _slow_first(items)
    if _test_database_url() is not None:
        return
    selected = [item for item in items if item.get_closest_marker("postgres_only") is None]
    deselected = [item for item in items if item.get_closest_marker("postgres_only") is not None]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = selected


def pytest_report_header() -> str:
    url = _test_database_url()
    return f"codepulse test database: {'PostgreSQL (' + url.split('@')[-1] + ')' if url else 'SQLite'}"


@pytest.fixture(scope="session")
async def database_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[DatabaseServer]:
    server = DatabaseServer(_test_database_url(), tmp_path_factory.mktemp("databases"))
    await server.create_template()
    try:
        yield server
    finally:
        await server.drop_all()


@pytest.fixture(scope="session")
async def database_url(database_server: DatabaseServer) -> str:
    return await database_server.clone("main")


@pytest.fixture(scope="session")
def base_settings(database_url: str) -> Settings:
    settings = build_settings(database_url)
    configure_logging(settings)
    return settings


@pytest.fixture
def make_settings(database_url: str, tmp_path: Path, smtp_server: SmtpServer) -> Callable[..., Settings]:
    """Settings with overrides, e.g. make_settings(CORS_ORIGINS="https://app.example")."""

    def make(**overrides: object) -> Settings:
        overrides.setdefault("VAR_DIR", tmp_path / "var")
        for key, value in smtp_server.settings().items():
            overrides.setdefault(key, value)
        url = str(overrides.pop("DATABASE_URL", database_url))
        return build_settings(url, **overrides)

    return make


@pytest.fixture(scope="session")
async def engine(base_settings: Settings) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(base_settings)
    yield engine
    await engine.dispose()


@pytest.fixture
async def db(engine: AsyncEngine) -> AsyncIterator[Database]:
    async with engine.connect() as connection:
        transaction = await connection.begin()
        try:
            yield Database(engine, bind=connection)
        finally:
            await transaction.rollback()


@pytest.fixture
async def session(db: Database) -> AsyncIterator[AsyncSession]:
    async with db.session() as session:
        factories.bind_session(session)
        try:
            yield session
        finally:
            factories.bind_session(None)


@pytest.fixture
def make_user(session: AsyncSession) -> factories.MakeUser:
    """`await make_user("ada", is_superuser=True)`: a user with a bearer token (`.headers`)."""
    return factories.signed_in_user


@pytest.fixture
def make_org(session: AsyncSession) -> factories.MakeOrg:
    """`await make_org(owner, slug="engines")`: an organization, `owner` its owner."""
    return factories.organization


@pytest.fixture
def make_member(session: AsyncSession) -> factories.MakeMember:
    """`await make_member(org, "viewer", "vic")`: a new signed-in user with that role in `org`."""
    return factories.member


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def app_factory(db: Database, clock: FakeClock) -> Callable[..., FastAPI]:
    """Build an app over the test's database, e.g. to add a test-only router or other settings."""

    def make(settings: Settings) -> FastAPI:
        return create_app(settings, database=db, clock=clock)

    return make


@pytest.fixture
async def app(settings: Settings, app_factory: Callable[..., FastAPI]) -> AsyncIterator[FastAPI]:
    application = app_factory(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as client:
        yield client


@pytest.fixture(scope="session")
def smtp_server() -> Iterator[SmtpServer]:
    server = SmtpServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def mailbox(smtp_server: SmtpServer, db: Database, settings: Settings, clock: FakeClock) -> Mailbox:
    """The loopback SMTP server, emptied for this test; the app's settings point at it. Mail
    arrives after `await mailbox.deliver()` (the outbox's worker)."""
    smtp_server.clear()
    return Mailbox(smtp_server, db, settings, clock)


@pytest.fixture
def settings(base_settings: Settings, smtp_server: SmtpServer) -> Settings:
    """Per-test settings: the run's database, mail to the loopback SMTP server."""
    return base_settings.model_copy(update=smtp_server.settings())


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Callable[[str], list[dict[str, object]]]:
    """Structured log events by name: structlog hands the stdlib handler the event dict itself."""
    caplog.set_level(logging.DEBUG)

    def events(name: str) -> list[dict[str, object]]:
        return [
            record.msg for record in caplog.records if isinstance(record.msg, dict) and record.msg.get("event") == name
        ]

    return events
