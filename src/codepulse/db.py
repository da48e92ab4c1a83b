"""Engines for SQLite and PostgreSQL, the session factory, the declarative Base and the dialect helpers.

Every dialect difference lives here, in a named helper, so domains stay portable.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from sqlalchemy import DateTime, MetaData, event, text
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.types import TypeDecorator

from codepulse.clock import utcnow
from codepulse.config import Settings

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# Execution option read by the SQLite "begin" hook: IMMEDIATE takes the write lock up front,
# so concurrent writers queue on busy_timeout instead of failing with SQLITE_BUSY on upgrade.
SQLITE_BEGIN_OPTION = "codepulse_sqlite_begin"


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both dialects (SQLite stores no offset, so we restore it)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; codepulse stores timezone-aware UTC only")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime()}


class UUIDPrimaryKey:
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)


class Timestamps:
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


def _configure_sqlite(engine: AsyncEngine, settings: Settings) -> None:
    busy_timeout = settings.SQLITE_BUSY_TIMEOUT_MS

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        # Let SQLAlchemy, not the driver, emit BEGIN (pysqlite's implicit transactions break
        # SAVEPOINT and our BEGIN IMMEDIATE).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in (
            "PRAGMA journal_mode=WAL",
            "PRAGMA foreign_keys=ON",
            f"PRAGMA busy_timeout={int(busy_timeout)}",
            "PRAGMA synchronous=NORMAL",
        ):
            cursor.execute(pragma)
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Connection) -> None:
        mode = connection.get_execution_options().get(SQLITE_BEGIN_OPTION, "DEFERRED")
        connection.exec_driver_sql(f"BEGIN {mode}")


def create_engine(settings: Settings) -> AsyncEngine:
    url = settings.database_url
    if settings.is_sqlite:
        engine = create_async_engine(
            url,
            echo=settings.DB_ECHO,
            connect_args={"timeout": settings.SQLITE_BUSY_TIMEOUT_MS / 1000},
        )
        _configure_sqlite(engine, settings)
        return engine
    return create_async_engine(
        url,
        echo=settings.DB_ECHO,
        pool_pre_ping=True,
        pool_size=settings.DB_POOL_SIZE,
        max_overflow=settings.DB_MAX_OVERFLOW,
        pool_timeout=settings.DB_POOL_TIMEOUT_SECONDS,
        pool_recycle=settings.DB_POOL_RECYCLE_SECONDS,
        connect_args={
            "timeout": settings.DB_CONNECT_TIMEOUT_SECONDS,
            "server_settings": {"application_name": "codepulse"},
        },
    )


class Database:
    """The engine plus two session factories: reads, and writes (which lock up front on SQLite)."""

    def __init__(self, engine: AsyncEngine, *, bind: AsyncEngine | AsyncConnection | None = None) -> None:
        self.engine = engine
        target = bind if bind is not None else engine
        write_target = target
        if isinstance(target, AsyncEngine) and engine.dialect.name == "sqlite":
            write_target = target.execution_options(**{SQLITE_BEGIN_OPTION: "IMMEDIATE"})
        # Bound to an open connection (tests): sessions work in savepoints of its transaction.
        options: dict[str, Any] = {"expire_on_commit": False}
        if isinstance(target, AsyncConnection):
            options["join_transaction_mode"] = "create_savepoint"
        self._read_sessions: async_sessionmaker[AsyncSession] = async_sessionmaker(target, **options)
        self._write_sessions: async_sessionmaker[AsyncSession] = async_sessionmaker(write_target, **options)

    @classmethod
    def from_settings(cls, settings: Settings) -> Database:
        return cls(create_engine(settings))

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def session(self, *, write: bool = True) -> AsyncSession:
        return (self._write_sessions if write else self._read_sessions)()

    @asynccontextmanager
    async def transaction(self, *, write: bool = True) -> AsyncIterator[AsyncSession]:
        """One unit of work: commits when the block ends, rolls back if it raises."""
        async with self.session(write=write) as session:
            try:
                yield session
            except BaseException:
                await session.rollback()
                raise
            await session.commit()

    async def dispose(self) -> None:
        await self.engine.dispose()


READ_ONLY_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_WRITES_ATTRIBUTE = "__codepulse_writes__"

_Endpoint = TypeVar("_Endpoint", bound=Callable[..., Any])


def writes(endpoint: _Endpoint) -> _Endpoint:
    """Mark a GET endpoint that writes (an OAuth callback): its session then locks up front on
    SQLite like a POST's, instead of failing to upgrade a read transaction."""
    setattr(endpoint, _WRITES_ATTRIBUTE, True)
    return endpoint


def is_write_request(request: Request) -> bool:
    return request.method not in READ_ONLY_METHODS or bool(
        getattr(request.scope.get("endpoint"), _WRITES_ATTRIBUTE, False)
    )


async def _request_session(request: Request) -> AsyncIterator[AsyncSession]:
    database: Database = request.app.state.database
    async with database.transaction(write=is_write_request(request)) as session:
        yield session


# scope="function": the commit runs when the endpoint returns, before the response is sent,
# so a failed commit becomes an error response instead of a lie.
DbSession = Annotated[AsyncSession, Depends(_request_session, scope="function")]


# --- dialect helpers -------------------------------------------------------------------------


def advisory_lock_key(name: str) -> int:
    """A stable signed 64-bit key for PostgreSQL advisory locks."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)


_process_locks: dict[str, asyncio.Lock] = {}


async def try_advisory_xact_lock(session: AsyncSession, name: str) -> bool:
    """Take a lock named `name` until the session's transaction ends; False if someone holds it.

    PostgreSQL: pg_try_advisory_xact_lock, visible to every replica. SQLite: a single process
    owns the database file in practice, and write transactions are serialised by BEGIN IMMEDIATE,
    so the transaction itself is the lock.
    """
    if session.get_bind().dialect.name == "postgresql":
        result = await session.execute(text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": advisory_lock_key(name)})
        return bool(result.scalar_one())
    return True


def process_lock(name: str) -> asyncio.Lock:
    """An in-process lock by name, for guards that must also hold between tasks of one process."""
    lock = _process_locks.get(name)
    if lock is None:
        lock = _process_locks[name] = asyncio.Lock()
    return lock
