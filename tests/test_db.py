from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI, Response
from sqlalchemy import event, func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from codepulse.config import Settings
from codepulse.db import Database, DbSession, SessionRoute, bulk_insert, create_engine, try_advisory_xact_lock
from codepulse.errors import Conflict
from codepulse.scheduler import JobRun
from codepulse.tasks.models import TASKS
from tests.databases import DatabaseServer, build_settings
from tests.factories import JobRunFactory
from tests.helpers import with_api_prefix


async def test_datetimes_come_back_aware_utc(session: AsyncSession) -> None:
    paris = timezone(timedelta(hours=1))
    run = JobRunFactory.create(scheduled_for=datetime(2026, 3, 1, 12, 30, tzinfo=paris))
    await session.flush()
    session.expunge_all()
    loaded = await session.get(JobRun, run.id)
    assert loaded is not None
    assert loaded.scheduled_for == datetime(2026, 3, 1, 11, 30, tzinfo=UTC)
    assert loaded.scheduled_for.tzinfo is UTC


async def test_naive_datetimes_are_refused(session: AsyncSession) -> None:
    JobRunFactory.create(scheduled_for=datetime(2026, 3, 1, 12, 30))  # noqa: DTZ001 - the point of the test
    with pytest.raises(Exception, match="naive datetime"):
        await session.flush()


async def test_sqlite_engine_pragmas(tmp_path: Path) -> None:
    engine = create_engine(build_settings(f"sqlite+aiosqlite:///{tmp_path / 'p.db'}", SQLITE_BUSY_TIMEOUT_MS=4321))
    try:
        async with engine.connect() as connection:
            values = [
                (await connection.exec_driver_sql(f"PRAGMA {name}")).scalar()
                for name in ("journal_mode", "foreign_keys", "busy_timeout", "synchronous")
            ]
    finally:
        await engine.dispose()
    assert values == ["wal", 1, 4321, 1]


async def test_sqlite_concurrent_writers_wait_instead_of_failing(tmp_path: Path) -> None:
    """Read-then-write transactions on two connections: with deferred BEGIN the second upgrade to a
    write lock fails at once (SQLITE_BUSY, no retry); BEGIN IMMEDIATE makes it wait its turn."""
    database = Database.from_settings(build_settings(f"sqlite+aiosqlite:///{tmp_path / 'w.db'}"))
    try:
        async with database.transaction() as session:
            await session.execute(text("CREATE TABLE counter (n INTEGER NOT NULL)"))
            await session.execute(text("INSERT INTO counter VALUES (0)"))

        writers = 10
        begun = 0
        all_begun = asyncio.Event()

        @event.listens_for(database.engine.sync_engine, "before_cursor_execute")
        def _count_begins(*args: Any) -> None:
            nonlocal begun
            if args[2].startswith("BEGIN"):
                begun += 1
                if begun == writers:
                    all_begun.set()

        holding = False

        async def increment() -> None:
            nonlocal holding
            async with database.transaction(write=True) as session:
                current = (await session.execute(text("SELECT n FROM counter"))).scalar_one()
                if not holding:
                    # The first reader holds its transaction until every other writer has asked for
                    # one: with a deferred BEGIN they would all read 0 now and then collide.
                    holding = True
                    await asyncio.wait_for(all_begun.wait(), 30)
                await session.execute(text("UPDATE counter SET n = :n"), {"n": current + 1})

        await asyncio.gather(*(increment() for _ in range(writers)))
        async with database.transaction(write=False) as session:
            assert (await session.execute(text("SELECT n FROM counter"))).scalar_one() == 10
    finally:
        await database.dispose()


def _uow_router() -> APIRouter:
    router = APIRouter(prefix="/_test", tags=["test"], route_class=SessionRoute)

    @router.post("/runs/{job_id}")
    async def create_run(job_id: str, session: DbSession, fail: bool = False) -> dict[str, str]:
        run = JobRunFactory.build(job_id=job_id)
        session.add(run)
        await session.flush()
        if fail:
            raise Conflict("refused after a write")
        return {"id": str(run.id)}

    @router.post("/answered/{job_id}")
    async def answered_with_an_error(job_id: str, session: DbSession) -> Response:
        session.add(JobRunFactory.build(job_id=job_id))
        await session.flush()
        return Response("the form's errors", status_code=422)  # returned, not raised

    @router.post("/duplicate")
    async def duplicate(session: DbSession) -> dict[str, str]:
        # Nothing is flushed here: the unique constraint fails inside the dependency's commit.
        first = JobRunFactory.build(job_id="dup")
        session.add(first)
        session.add(JobRunFactory.build(job_id="dup", scheduled_for=first.scheduled_for))
        return {"status": "not reached"}

    return router


@pytest.fixture
async def uow_client(
    settings: Settings, app_factory: Callable[[Settings], FastAPI]
) -> AsyncIterator[httpx.AsyncClient]:
    app = app_factory(settings)
    app.include_router(with_api_prefix(_uow_router(), settings))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        yield client


async def _count(db: Database, job_id: str) -> int:
    async with db.session() as session:
        return int(await session.scalar(select(func.count()).where(JobRun.job_id == job_id)) or 0)


async def test_request_commits_once_before_the_response(uow_client: httpx.AsyncClient, db: Database) -> None:
    response = await uow_client.post("/api/v1/_test/runs/kept")
    assert response.status_code == 200
    assert await _count(db, "kept") == 1


async def test_request_error_rolls_back_every_write(uow_client: httpx.AsyncClient, db: Database) -> None:
    response = await uow_client.post("/api/v1/_test/runs/lost", params={"fail": "true"})
    assert response.status_code == 409
    assert await _count(db, "lost") == 0


async def test_an_error_status_returned_without_raising_keeps_no_write(
    uow_client: httpx.AsyncClient, db: Database
) -> None:
    """A dashboard page answers a refused form with its errors (a 4xx it returns): what the request
    wrote before the refusal is rolled back as if it had raised."""
    response = await uow_client.post("/api/v1/_test/answered/unkept")
    assert response.status_code == 422
    assert await _count(db, "unkept") == 0


async def test_failed_commit_is_an_error_response_not_a_lie(uow_client: httpx.AsyncClient, db: Database) -> None:
    """The commit happens before the response: a constraint failing at commit is a 409, not a 200."""
    response = await uow_client.post("/api/v1/_test/duplicate")
    assert response.status_code == 409
    assert response.json()["code"] == "conflict"
    assert "uq_job_runs" not in response.text
    assert await _count(db, "dup") == 0


async def test_a_driver_level_write_on_a_new_session_is_in_its_transaction(engine: AsyncEngine) -> None:
    """The hot paths write through the driver's own connection (COPY, unnest upserts on
    PostgreSQL). On a session that has run nothing yet, SQLAlchemy's asyncpg adapter has not begun
    its transaction (it begins at the first statement it runs itself): such a write would commit on
    its own and survive a rollback."""
    kind = f"probe-{uuid.uuid4().hex}"
    now = datetime.now(UTC)
    async with AsyncSession(engine) as session:
        await bulk_insert(
            session,
            TASKS,
            ("id", "kind", "payload", "status", "priority", "run_at", "attempts", "created_at", "updated_at"),
            [(uuid.uuid4(), kind, {}, "queued", 0, now, 0, now, now)],
        )
        assert await session.scalar(select(func.count()).select_from(TASKS).where(TASKS.c.kind == kind)) == 1
        await session.rollback()
    async with AsyncSession(engine) as session:
        assert await session.scalar(select(func.count()).select_from(TASKS).where(TASKS.c.kind == kind)) == 0


@pytest.mark.postgres_only
async def test_an_advisory_lock_is_scoped_to_its_database(database_server: DatabaseServer) -> None:
    """PostgreSQL keys an advisory lock by the database it is taken in (not only by its number):
    deployments sharing a server, and the suite's parallel workers (a database each), never wait
    on one another's locks, while two sessions on one database still exclude each other."""
    engines = [create_engine(build_settings(await database_server.clone("lock"))) for _ in range(2)]
    try:
        here, elsewhere = (Database(engine) for engine in engines)
        async with here.transaction() as holder:
            assert await try_advisory_xact_lock(holder, "job:scheduler.prune_job_runs")
            async with here.transaction() as same_database:
                assert not await try_advisory_xact_lock(same_database, "job:scheduler.prune_job_runs")
            async with elsewhere.transaction() as other_database:
                assert await try_advisory_xact_lock(other_database, "job:scheduler.prune_job_runs")
    finally:
        for engine in engines:
            await engine.dispose()


@pytest.mark.postgres_only
async def test_the_engine_turns_postgresql_jit_off(engine: AsyncEngine) -> None:
    """The server's default (on) compiles any query estimated expensive: for our short queries
    the compilation costs more than it saves."""
    async with engine.connect() as connection:
        assert await connection.scalar(text("SHOW jit")) == "off"
        assert await connection.scalar(text("SHOW application_name")) == "codepulse"
