"""Engines for SQLite and PostgreSQL, the `Database` (engine + session factories) and units of work."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import anyio
from sqlalchemy import event
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Session
from sqlalchemy.pool import ConnectionPoolEntry

from codepulse.config import Settings

# Execution option read by the SQLite "begin" hook: IMMEDIATE takes the write lock up front,
# so concurrent writers queue on busy_timeout instead of failing with SQLITE_BUSY on upgrade.
SQLITE_BEGIN_OPTION = "codepulse_sqlite_begin"


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


def _connect_failures_as_operational_errors(engine: AsyncEngine) -> None:
    """asyncpg raises bare OSError / TimeoutError when the server cannot be reached (SQLAlchemy
    wraps only the driver's own exceptions): re-raise them as SQLAlchemy's OperationalError, so
    "the database is unavailable" is one exception family whatever the driver (a 503)."""

    @event.listens_for(engine.sync_engine, "do_connect")
    def _connect(dialect: Dialect, _record: ConnectionPoolEntry, cargs: Any, cparams: Any) -> Any:
        try:
            return dialect.connect(*cargs, **cparams)
        except dialect.loaded_dbapi.Error:
            raise  # SQLAlchemy wraps these itself
        except Exception as error:
            raise OperationalError(None, None, error, connection_invalidated=True) from error


def create_engine(settings: Settings) -> AsyncEngine:
    url = settings.database_url
    # Bound parameters stay out of exception messages (and so out of logs): they hold emails,
    # names and hashes. DB_ECHO, a development switch, shows them on purpose.
    hide_parameters = not settings.DB_ECHO
    if settings.is_sqlite:
        engine = create_async_engine(
            url,
            echo=settings.DB_ECHO,
            hide_parameters=hide_parameters,
            connect_args={"timeout": settings.SQLITE_BUSY_TIMEOUT_MS / 1000},
        )
        _configure_sqlite(engine, settings)
        return engine
    engine = create_async_engine(
        url,
        echo=settings.DB_ECHO,
        hide_parameters=hide_parameters,
        pool_pre_ping=True,
        pool_size=settings.DB_POOL_SIZE,
        max_overflow=settings.DB_MAX_OVERFLOW,
        pool_timeout=settings.DB_POOL_TIMEOUT_SECONDS,
        pool_recycle=settings.DB_POOL_RECYCLE_SECONDS,
        connect_args={
            "timeout": settings.DB_CONNECT_TIMEOUT_SECONDS,
            # No JIT: our queries are short, and compiling them costs more than it saves (the
            # admin statistics' 30-day answer: 75 -> 58 ms; the leaderboard recompute unchanged).
            "server_settings": {"application_name": "codepulse", "jit": "off"},
        },
    )
    _connect_failures_as_operational_errors(engine)
    return engine


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

    def transaction(self, *, write: bool = True) -> AbstractAsyncContextManager[AsyncSession]:
        """One unit of work: commits when the block ends, rolls back if it raises.

        A session that was never used (a request answered from caches) costs no commit and no
        close: both are greenlet hops that would dominate such requests.
        """
        return unit_of_work(self.session(write=write))

    @asynccontextmanager
    async def autocommit(self) -> AsyncIterator[AsyncConnection]:
        """A connection of the engine's own in autocommit mode (each statement its own transaction,
        outside any session's), for the statements no transaction block may hold."""
        async with self.engine.connect() as connection:
            yield await connection.execution_options(isolation_level="AUTOCOMMIT")

    async def dispose(self) -> None:
        await self.engine.dispose()


@asynccontextmanager
async def unit_of_work(session: AsyncSession) -> AsyncIterator[AsyncSession]:
    """One unit of work on `session`: commit when the block ends, roll back if it raises, and
    always give the connection back (the close is shielded from cancellation)."""
    try:
        yield session
    except BaseException:
        if _used(session):
            await close_shielded(session)
        raise
    if _used(session):
        try:
            await session.commit()
        finally:
            await close_shielded(session)


async def close_shielded(session: AsyncSession) -> None:
    """Roll back what is open and return the connection, even in a cancelled task: inside a
    cancelled anyio scope every await would raise again and the connection would leak."""
    with anyio.CancelScope(shield=True):
        await session.close()


def _used(session: AsyncSession) -> bool:
    return session.in_transaction() or bool(session.new or session.dirty or session.deleted)


def rowcount(result: object) -> int:
    """Rows an UPDATE or DELETE matched (0 for results that carry no count)."""
    return int(getattr(result, "rowcount", 0) or 0)


def after_commit(session: AsyncSession, callback: Callable[[], None]) -> None:
    """Run `callback` (synchronous, no I/O) when `session` next commits, after the commit: for
    in-memory state that must not change before the database does (a request session commits
    once, so a rollback means never)."""

    def run(_session: Session) -> None:
        callback()

    event.listen(session.sync_session, "after_commit", run, once=True)
