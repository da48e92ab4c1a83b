"""Dialect helpers: advisory locks, upsert, the work queue claim and date arithmetic, one branch per
dialect each."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import date, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Date,
    Integer,
    MetaData,
    Row,
    Select,
    Table,
    cast,
    column,
    func,
    literal,
    literal_column,
    select,
    table,
    text,
)
from sqlalchemy import update as sa_update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import BIT
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import InstrumentedAttribute
from sqlalchemy.schema import CreateTableAs, DropTable
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.dml import Insert
from sqlalchemy.sql.elements import TextClause
from sqlalchemy.sql.expression import TableClause
from sqlalchemy.sql.functions import FunctionElement


def advisory_lock_key(name: str) -> int:
    """A stable signed 64-bit key for PostgreSQL advisory locks. PostgreSQL scopes the lock to the
    current database (its lock tag holds the database's OID), so deployments sharing a server do
    not contend and the key needs no database in it (tests/test_db.py holds that)."""
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
    session: AsyncSession | Connection,
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
    `session` may also be a (sync) Connection, as ORM flush events receive one.
    """
    dialect = session.dialect if isinstance(session, Connection) else session.get_bind().dialect
    statement: postgresql.Insert | sqlite.Insert = (
        postgresql.insert(table) if dialect.name == "postgresql" else sqlite.insert(table)
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


def is_postgresql(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "postgresql"


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
    if is_postgresql(session):
        candidates = candidates.with_for_update(skip_locked=True)
    statement = (
        sa_update(table).where(key.in_(candidates)).values(dict(values)).returning(*(table.c[n] for n in returning))
    )
    return list((await session.execute(statement)).all())


def day_number(session: AsyncSession, day: ColumnElement[Any]) -> ColumnElement[int]:
    """A DATE column as days since 1970-01-01, for day arithmetic (streaks, windows) in SQL.

    PostgreSQL subtracts dates to an integer; SQLite stores ISO dates and counts with julianday.
    """
    if is_postgresql(session):
        return cast(day - literal_column("DATE '1970-01-01'"), Integer)
    return cast(func.julianday(day) - 2440587.5, Integer)


async def set_local_bulk_query_settings(
    session: AsyncSession, work_mem_megabytes: int, *, eager_parallel: bool = False
) -> None:
    """Settings for one large set-based statement in this transaction (PostgreSQL; SQLite has
    none): `work_mem` for its sorts and hashes, so they are not spilled to disk, and no JIT, whose
    compilation of a statement of many wide expressions costs more than it saves.

    `eager_parallel`: parallel workers are costed as free to start and to pass rows on, so a scan
    that groups millions of rows into a few hundred thousand runs in parallel (the default costs
    chose one process, twice as slow on a 10-million-row grouping)."""
    if is_postgresql(session):
        await session.execute(text(f"SET LOCAL work_mem = '{int(work_mem_megabytes)}MB'"))
        await session.execute(text("SET LOCAL jit = off"))
        if eager_parallel:
            await session.execute(text("SET LOCAL parallel_setup_cost = 0"))
            await session.execute(text("SET LOCAL parallel_tuple_cost = 0"))


async def create_temporary_table(session: AsyncSession, name: str, query: Select[Any]) -> Table:
    """`query`'s rows in a temporary table of the session's connection (CREATE TEMPORARY TABLE ...
    AS), analysed for the planner; drop it with `drop_temporary_table` (a rolled-back transaction
    drops it too). PostgreSQL may compute a CREATE TABLE AS in parallel, which it never does for
    the SELECT of an INSERT."""
    statement = CreateTableAs(query, name, temporary=True, metadata=MetaData())
    await session.execute(statement)
    if is_postgresql(session):
        await session.execute(text(f'ANALYZE "{name}"'))
    return statement.table


async def drop_temporary_table(session: AsyncSession, table: Table) -> None:
    await session.execute(DropTable(table))


def list_partitioned(session: AsyncSession) -> bool:
    """Whether tables declared `PARTITION BY LIST` are partitioned here (PostgreSQL); on SQLite they
    are plain tables."""
    return is_postgresql(session)


async def create_partition_table(session: AsyncSession, parent: Table, name: str) -> TableClause:
    """A new, empty table shaped like the list-partitioned `parent` (columns, types, collations,
    NOT NULL), without indexes: fill it, then `attach_partition` builds them in bulk, which costs a
    fraction of keeping them up to date row by row. PostgreSQL only."""
    await session.execute(text(f'CREATE TABLE "{name}" (LIKE "{parent.name}")'))
    return table(name, *(column(parent_column.name) for parent_column in parent.columns))


async def attach_partition(session: AsyncSession, parent: Table, name: str, value: uuid.UUID) -> None:
    """Attach the table `name` to `parent` as the partition of the list value `value`, building the
    parent's indexes on it, and analyse it for the planner. Readers keep reading the parent (the
    lock is SHARE UPDATE EXCLUSIVE) and see the partition once the transaction commits."""
    # DDL takes no bound parameters; a UUID's text is safe to inline.
    await session.execute(text(f'ALTER TABLE "{parent.name}" ATTACH PARTITION "{name}" FOR VALUES IN (\'{value}\')'))
    await session.execute(text(f'ANALYZE "{name}"'))


class PartitionState(StrEnum):
    ATTACHED = "attached"
    DETACH_PENDING = "detach_pending"  # a concurrent detach was interrupted: finalize it
    DETACHED = "detached"  # a table of the partitions' name that is not (or no longer) one


async def partition_tables(connection: AsyncConnection, parent: str, pattern: str) -> dict[str, PartitionState]:
    """The tables whose names match the regular expression `pattern` (PostgreSQL), the partitions of
    `parent` among them or not: {name: state}."""
    rows = await connection.execute(
        text(
            "SELECT tables.relname, inherits.inhdetachpending FROM pg_class AS tables "
            "LEFT JOIN pg_inherits AS inherits ON inherits.inhrelid = tables.oid "
            "AND inherits.inhparent = CAST(:parent AS regclass) "
            "WHERE tables.relkind = 'r' AND tables.relpersistence = 'p' AND pg_table_is_visible(tables.oid) "
            "AND tables.relname ~ :pattern"
        ),
        {"parent": f'"{parent}"', "pattern": pattern},
    )
    return {
        name: PartitionState.DETACHED
        if pending is None
        else (PartitionState.DETACH_PENDING if pending else PartitionState.ATTACHED)
        for name, pending in rows.all()
    }


async def drop_partition(connection: AsyncConnection, parent: str, name: str, state: PartitionState) -> None:
    """Drop the table `name` with its rows, first detaching it from `parent` without blocking the
    parent's readers. `connection` must be in autocommit mode: a concurrent detach runs in two
    transactions of its own (after waiting for the queries that may still read the partition)."""
    if state is not PartitionState.DETACHED:
        mode = "FINALIZE" if state is PartitionState.DETACH_PENDING else "CONCURRENTLY"
        await connection.execute(text(f'ALTER TABLE "{parent}" DETACH PARTITION "{name}" {mode}'))
    await connection.execute(text(f'DROP TABLE IF EXISTS "{name}"'))


def bytewise(session: AsyncSession, text_column: ColumnElement[str]) -> ColumnElement[str]:
    """`text_column` compared byte by byte, so an order on it is the same on both dialects (SQLite's
    default BINARY collation; PostgreSQL's database collation may be a locale's)."""
    if is_postgresql(session):
        return text_column.collate("C")
    return text_column


def bit_or_aggregate(session: AsyncSession, flags: ColumnElement[int]) -> ColumnElement[int]:
    """The bitwise OR of `flags` over a group. PostgreSQL has `bit_or`; SQLite has none, but when
    every value is a single bit (a power of two), the sum of the distinct values is their OR."""
    if is_postgresql(session):
        return func.bit_or(flags)
    return func.sum(flags.distinct())


def bit_count(session: AsyncSession, value: ColumnElement[int], bits: int = 63) -> ColumnElement[int]:
    """How many of the low `bits` bits of a non-negative integer are set."""
    if is_postgresql(session):
        return func.bit_count(cast(value, BIT(64)))
    total: ColumnElement[int] = value.op("&")(1)
    for shift in range(1, bits):
        total = total + value.op(">>")(shift).op("&")(1)
    return total


class add_days(FunctionElement[date]):  # noqa: N801 - a SQL function, named like one
    """`add_days(date_expression, n)`: the date n days later (earlier when n < 0), as a date a
    comparison with a date column can use an index for. PostgreSQL adds an integer to a date;
    SQLite stores dates as ISO text, moved with date()'s day modifier."""

    type = Date()
    name = "add_days"
    inherit_cache = True

    def __init__(self, day: ColumnElement[date], days: int) -> None:
        super().__init__(day, literal(days, Integer))


@compiles(add_days, "postgresql")
def _add_days_postgresql(element: add_days, compiler: SQLCompiler, **kw: Any) -> str:
    day, days = element.clauses.clauses
    return f"({compiler.process(day, **kw)} + {compiler.process(days, **kw)})"


@compiles(add_days, "sqlite")
def _add_days_sqlite(element: add_days, compiler: SQLCompiler, **kw: Any) -> str:
    day, days = element.clauses.clauses
    return f"date({compiler.process(day, **kw)}, {compiler.process(days, **kw)} || ' days')"


class utc_day_number(FunctionElement[int]):  # noqa: N801 - a SQL function, named like one
    """`utc_day_number(timestamp)`: the UTC date of a timestamp column as days since 1970-01-01
    (an integer on both dialects, for GROUP BY day; `epoch_day` turns it back into a date).
    PostgreSQL reads the timestamptz at UTC whatever the connection's time zone; SQLite stores
    UTC without an offset, counted with julianday (CAST truncates: floor after 1970)."""

    type = Integer()
    name = "utc_day_number"
    inherit_cache = True

    def __init__(self, timestamp: ColumnElement[Any] | InstrumentedAttribute[Any]) -> None:
        super().__init__(timestamp)


@compiles(utc_day_number, "postgresql")
def _utc_day_number_postgresql(element: utc_day_number, compiler: SQLCompiler, **kw: Any) -> str:
    (timestamp,) = element.clauses.clauses
    return f"(CAST(({compiler.process(timestamp, **kw)} AT TIME ZONE 'UTC') AS DATE) - DATE '1970-01-01')"


@compiles(utc_day_number, "sqlite")
def _utc_day_number_sqlite(element: utc_day_number, compiler: SQLCompiler, **kw: Any) -> str:
    (timestamp,) = element.clauses.clauses
    return f"CAST(julianday({compiler.process(timestamp, **kw)}) - 2440587.5 AS INTEGER)"


EPOCH = date(1970, 1, 1)


def epoch_day(number: int) -> date:
    """A `utc_day_number` (or `day_number`) back as a date."""
    return EPOCH + timedelta(days=int(number))
