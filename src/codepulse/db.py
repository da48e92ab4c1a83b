"""Engines for SQLite and PostgreSQL, the session factory, the declarative Base and the dialect helpers.

Every dialect difference lives here, in a named helper, so domains stay portable.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from sqlalchemy import (
    Boolean,
    ColumnElement,
    DateTime,
    MetaData,
    Row,
    Table,
    bindparam,
    event,
    func,
    select,
    text,
    true,
    tuple_,
)
from sqlalchemy import update as sa_update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.sql.dml import Insert
from sqlalchemy.sql.elements import TextClause
from sqlalchemy.sql.selectable import TableValuedAlias
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

    def transaction(self, *, write: bool = True) -> AbstractAsyncContextManager[AsyncSession]:
        """One unit of work: commits when the block ends, rolls back if it raises.

        A session that was never used (a request answered from caches) costs no commit and no
        close: both are greenlet hops that would dominate such requests.
        """
        return unit_of_work(self.session(write=write))

    async def dispose(self) -> None:
        await self.engine.dispose()


@asynccontextmanager
async def unit_of_work(session: AsyncSession) -> AsyncIterator[AsyncSession]:
    """`Database.transaction()` around a session made elsewhere (a request's, created early)."""
    try:
        yield session
    except BaseException:
        if _used(session):
            try:
                await session.rollback()
            finally:
                await session.close()
        raise
    if _used(session):
        try:
            await session.commit()
        finally:
            await session.close()


def _used(session: AsyncSession) -> bool:
    return session.in_transaction() or bool(session.new or session.dirty or session.deleted)


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


_SESSION_STATE = "db_session"
_ADOPTED_STATE = "db_session_adopted"


def request_session(request: Request) -> AsyncSession:
    """The request's session, created on first use. Authentication calls this on write requests
    so the user it loads belongs to the session the endpoint writes with; `DbSession` then adopts
    that session (one unit of work) instead of making another."""
    session: AsyncSession | None = getattr(request.state, _SESSION_STATE, None)
    if session is None:
        database: Database = request.app.state.database
        session = database.session(write=is_write_request(request))
        setattr(request.state, _SESSION_STATE, session)
    return session


def existing_request_session(request: Request) -> AsyncSession | None:
    session: AsyncSession | None = getattr(request.state, _SESSION_STATE, None)
    return session


async def discard_unadopted_session(request: Request) -> None:
    """For a session `request_session` made that no `DbSession` adopted (an endpoint that needed
    no database after all): end it. Runs after the response."""
    session = existing_request_session(request)
    if session is not None and not getattr(request.state, _ADOPTED_STATE, False):
        await session.close()


async def _request_session(request: Request) -> AsyncIterator[AsyncSession]:
    session = request_session(request)
    setattr(request.state, _ADOPTED_STATE, True)
    async with unit_of_work(session):
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


async def advisory_xact_lock(session: AsyncSession, name: str) -> None:
    """Wait for the lock named `name`; it is held until the session's transaction ends.

    PostgreSQL: pg_advisory_xact_lock, shared by every replica. SQLite: write transactions are
    serialised by BEGIN IMMEDIATE, so a write session already holds the only lock there is.
    """
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": advisory_lock_key(name)})


ExcludedColumns = Any  # the dialect's `insert(...).excluded` collection: `excluded.<column>`


def upsert(
    session: AsyncSession,
    table: Table,
    *,
    conflict: Sequence[str],
    update: Callable[[ExcludedColumns], Mapping[str, Any]] | None = None,
    where: Callable[[ExcludedColumns], ColumnElement[bool]] | None = None,
    index_where: ColumnElement[bool] | TextClause | None = None,
) -> Insert:
    """`INSERT ... ON CONFLICT (conflict) DO UPDATE SET update(excluded) WHERE where(excluded)`,
    or `DO NOTHING` without `update`, for the session's dialect (PostgreSQL and SQLite both
    support it, with RETURNING: only inserted or updated rows come back).

        stmt = upsert(session, Counter.__table__, conflict=["name"],
                      update=lambda excluded: {"value": Counter.value + excluded.value})
        await session.execute(stmt.returning(Counter.name), rows)

    `index_where` names a partial unique index as the conflict target (its WHERE predicate).
    """
    statement: postgresql.Insert | sqlite.Insert = (
        postgresql.insert(table) if session.get_bind().dialect.name == "postgresql" else sqlite.insert(table)
    )
    if update is None:
        return statement.on_conflict_do_nothing(index_elements=list(conflict), index_where=index_where)
    excluded = statement.excluded
    return statement.on_conflict_do_update(
        index_elements=list(conflict),
        index_where=index_where,
        set_=dict(update(excluded)),
        where=where(excluded) if where is not None else None,
    )


def _is_postgresql(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _unnest(
    table: Table, names: Sequence[str], rows: Sequence[Sequence[Any]], alias: str, *, ordinality: str | None = None
) -> TableValuedAlias:
    """PostgreSQL: `unnest($1::type[], $2::type[], ...) [WITH ORDINALITY] AS alias(names...)`, one
    array per column."""
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in names]
    arrays = [
        bindparam(f"{alias}_{name}", list(values), type_=postgresql.ARRAY(table.c[name].type))
        for name, values in zip(names, columns, strict=True)
    ]
    return func.unnest(*arrays).table_valued(*names, with_ordinality=ordinality).render_derived(name=alias)


async def driver_connection(session: AsyncSession) -> Any:
    """The DBAPI driver's own connection under the session (asyncpg's on PostgreSQL), in the
    session's transaction: for the few hot statements where SQLAlchemy's layers cost more than the
    query."""
    driver = (await (await session.connection()).get_raw_connection()).driver_connection
    if driver is None:  # pragma: no cover - a checked-out connection always has one
        raise RuntimeError("no driver connection")
    return driver


async def bulk_insert(
    session: AsyncSession, table: Table, columns: Sequence[str], rows: Sequence[Sequence[Any]]
) -> int:
    """Insert many rows (tuples of `columns`) that the caller knows are new; the number inserted.

    PostgreSQL: COPY into the table through the session's connection and transaction, the
    cheapest way to ship rows to PostgreSQL; constraints are checked as for INSERT, so a row that
    is not new after all fails the whole statement (an IntegrityError), never silently. SQLite:
    executemany of an INSERT.
    """
    if not rows:
        return 0
    connection = await session.connection()
    dialect = connection.dialect
    if dialect.name != "postgresql":
        result = await session.execute(table.insert(), [dict(zip(columns, row, strict=True)) for row in rows])
        return int(getattr(result, "rowcount", len(rows)))
    # Values go to COPY as the column types' bind processors would send them. UTCDateTime only
    # refuses naive values here: PostgreSQL stores any aware datetime as the same instant.
    # On a dialect with native booleans, Boolean's processor only checks the value (and turns 0/1
    # into a bool); asyncpg's encoder refuses anything but a bool anyway, so the callers send
    # bools and every row is spared a copy.
    aware = [index for index, name in enumerate(columns) if isinstance(table.c[name].type, UTCDateTime)]
    processors = [
        (index, process)
        for index, name in enumerate(columns)
        if index not in aware
        and not (dialect.supports_native_boolean and isinstance(table.c[name].type, Boolean))
        and (process := table.c[name].type.dialect_impl(dialect).bind_processor(dialect)) is not None
    ]
    for row in rows:
        for index in aware:
            value = row[index]
            if value is not None and value.tzinfo is None:
                raise ValueError("naive datetime given; codepulse stores timezone-aware UTC only")
    if processors:
        converted = []
        for row in rows:
            values = list(row)
            for index, process in processors:
                values[index] = process(values[index])
            converted.append(values)
        rows = converted
    driver = await driver_connection(session)
    try:
        status = await driver.copy_records_to_table(table.name, records=rows, columns=list(columns))
    except Exception as error:
        if str(getattr(error, "sqlstate", "")).startswith("23"):  # integrity constraint violation
            raise IntegrityError(f"COPY {table.name}", None, error) from error
        raise
    return int(str(status).rsplit(" ", 1)[-1])


async def bulk_upsert(
    session: AsyncSession,
    table: Table,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    conflict: Sequence[str],
    update: Callable[[ExcludedColumns], Mapping[str, Any]] | None = None,
    where: Callable[[ExcludedColumns], ColumnElement[bool]] | None = None,
    returning: Sequence[str] = (),
) -> list[Row[Any]]:
    """`upsert` of many rows (tuples of `columns`) at once; the rows RETURNING gives back.

    PostgreSQL: `INSERT ... SELECT * FROM unnest(<an array per column>) ON CONFLICT ...`: one
    statement whatever the number of rows, prepared once and planned cheaply (a multi-row VALUES
    list carries a bind parameter per value). SQLite: executemany of `upsert` (SQLAlchemy batches
    it into multi-row VALUES statements). Rows must not repeat a key.
    """
    if not rows:
        return []
    if _is_postgresql(session):
        values = _unnest(table, columns, rows, "incoming")
        source = select(*(values.c[name] for name in columns))
        statement = postgresql.insert(table).from_select(list(columns), source)
        if update is None:
            statement = statement.on_conflict_do_nothing(index_elements=list(conflict))
        else:
            excluded = statement.excluded
            statement = statement.on_conflict_do_update(
                index_elements=list(conflict),
                set_=dict(update(excluded)),
                where=where(excluded) if where is not None else None,
            )
        if returning:
            return list((await session.execute(statement.returning(*(table.c[n] for n in returning)))).all())
        await session.execute(statement)
        return []
    generic = upsert(session, table, conflict=conflict, update=update, where=where)
    params = [dict(zip(columns, row, strict=True)) for row in rows]
    if returning:
        return list((await session.execute(generic.returning(*(table.c[n] for n in returning)), params)).all())
    await session.execute(generic, params)
    return []


async def rows_by_keys(
    session: AsyncSession,
    table: Table,
    columns: Sequence[str],
    *,
    fixed: Mapping[str, Any],
    key_columns: Sequence[str],
    keys: Sequence[Sequence[Any]],
) -> list[tuple[int, Sequence[Any]]]:
    """The rows of `table` whose `key_columns` equal one of `keys` (and whose `fixed` columns have
    the given values), as (position of the key in `keys`, row of `columns`), by index lookups
    whatever the table's statistics say. Keys must be distinct.

    PostgreSQL: `unnest` of the keys WITH ORDINALITY joined LATERAL to the table: one unique-index
    probe per key (an `IN (...)` list, or a plain join, on a fresh table without statistics plans
    as a scan of every row with the `fixed` values), and the keys do not travel back. SQLite: a
    row-value `IN (VALUES ...)`, which SQLite serves from the index.
    """
    if not keys:
        return []
    wanted = [table.c[name] for name in columns]
    conditions = [table.c[name] == value for name, value in fixed.items()]
    if _is_postgresql(session):
        source = _unnest(table, key_columns, keys, "wanted", ordinality="position")
        # LATERAL with LIMIT 1 (which keeps the planner from flattening it into a plain join).
        found = (
            select(*wanted)
            .where(*conditions, *(table.c[name] == source.c[name] for name in key_columns))
            .limit(1)
            .lateral("found")
        )
        query = select(source.c.position, *(found.c[name] for name in columns)).select_from(source).join(found, true())
        return [(int(row[0]) - 1, row[1:]) for row in (await session.execute(query)).all()]
    positions = {tuple(key): index for index, key in enumerate(keys)}
    query = select(*(table.c[name] for name in key_columns), *wanted).where(
        *conditions, tuple_(*(table.c[name] for name in key_columns)).in_(keys)
    )
    size = len(key_columns)
    return [(positions[tuple(row[:size])], row[size:]) for row in (await session.execute(query)).all()]


async def claim_rows(
    session: AsyncSession,
    table: Table,
    *,
    where: Sequence[ColumnElement[bool]],
    order_by: Sequence[ColumnElement[Any]],
    limit: int,
    values: Mapping[str, Any],
    returning: Sequence[str],
) -> list[Row[Any]]:
    """Take up to `limit` rows matching `where`, first in `order_by` order, and set `values` on
    them in one statement: `UPDATE table SET values WHERE pk IN (SELECT pk ... ORDER BY ... LIMIT
    n) RETURNING returning` (the work queue's claim).

    PostgreSQL: the subquery locks FOR UPDATE SKIP LOCKED, so concurrent claimers get disjoint
    rows without waiting for each other. SQLite has no row locks: claim in a write session
    (`Database.transaction()`, BEGIN IMMEDIATE), which serialises claimers on the database lock
    instead of failing with SQLITE_BUSY when a read transaction upgrades.
    """
    (key,) = table.primary_key.columns
    candidates = select(key).where(*where).order_by(*order_by).limit(limit)
    if _is_postgresql(session):
        candidates = candidates.with_for_update(skip_locked=True)
    statement = (
        sa_update(table).where(key.in_(candidates)).values(dict(values)).returning(*(table.c[n] for n in returning))
    )
    return list((await session.execute(statement)).all())


async def notify(session: AsyncSession, channel: str, payload: str = "") -> None:
    """PostgreSQL NOTIFY on `channel`, delivered when the session's transaction commits (and
    never if it rolls back). SQLite has no notifications: a no-op, its listeners poll."""
    if _is_postgresql(session):
        await session.execute(select(func.pg_notify(channel, payload)))


class Listener:
    """A dedicated PostgreSQL connection LISTENing on one channel (see `listen`)."""

    def __init__(self, connection: AsyncConnection, driver: Any, channel: str, handler: Any) -> None:
        self._connection = connection
        self._driver = driver
        self._channel = channel
        self._handler = handler

    @property
    def alive(self) -> bool:
        """False once the server connection is gone (a restart): notifications stop arriving."""
        return not self._driver.is_closed()

    async def close(self) -> None:
        try:
            if self.alive:
                await self._driver.remove_listener(self._channel, self._handler)
        finally:
            # Never return a LISTENing connection to the pool: close it instead.
            await self._connection.invalidate()
            await self._connection.close()


async def listen(database: Database, channel: str, callback: Callable[[str], None]) -> Listener | None:
    """Call `callback(payload)` for every NOTIFY on `channel`, on a connection of its own held
    until `Listener.close()`. None on SQLite (no notifications: poll)."""
    if database.dialect != "postgresql":
        return None
    connection = await database.engine.connect()
    try:
        driver = (await connection.get_raw_connection()).driver_connection  # the asyncpg connection
        if driver is None:  # pragma: no cover - a checked-out connection always has one
            raise RuntimeError("no driver connection")

        def handler(_connection: Any, _pid: int, _channel: str, payload: str) -> None:
            callback(payload)

        await driver.add_listener(channel, handler)
    except BaseException:
        await connection.invalidate()
        await connection.close()
        raise
    return Listener(connection, driver, channel, handler)
