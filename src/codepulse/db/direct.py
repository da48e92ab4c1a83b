"""Hot statements, built once from a table and its column names, sent straight to the driver on
PostgreSQL and written with SQLAlchemy Core on SQLite.

Each helper here is a statement that a request runs on every call of a hot path (a sync, say):
building and compiling its SQLAlchemy form costs more than PostgreSQL takes to run it, so its SQL
text is generated once, when the helper is created, from the table's metadata, and executed
through the session's asyncpg connection (in the session's transaction; asyncpg prepares and
caches it by its text). On SQLite the same statement is the portable Core one. Same statements,
same results. Names in the SQL text come from the table's metadata, never from input; values are
always parameters.

    InsertIfAbsent   INSERT ... ON CONFLICT DO NOTHING RETURNING: whether the row was new
    AddToRows        INSERT ... SELECT FROM unnest ... ON CONFLICT DO UPDATE SET c = c + excluded.c
    GroupedSums      SELECT g, sum(a + b), sum(c) ... WHERE k = $1 GROUP BY g ORDER BY g
    LockUnlessFound  an advisory transaction lock, unless a row with one of some keys is stored
    insert_all_or_nothing   `bulk_insert` in a savepoint: False, having written nothing, on a duplicate
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import Any

from sqlalchemy import BigInteger, Column, ColumnElement, String, Table, cast, func, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from codepulse.db.base import UTCDateTime
from codepulse.db.bulk import bulk_insert, bulk_upsert, driver_connection, rows_by_keys
from codepulse.db.dialect import advisory_lock_key, advisory_xact_lock, is_postgresql, upsert

_PG = postgresql.dialect()  # type: ignore[no-untyped-call]


def _pg_type(column: Column[Any]) -> str:
    """The column's PostgreSQL type, for casts of parameters: strings as `text`, as a cast to
    `varchar(n)` would cut a longer value short instead of refusing it."""
    if isinstance(column.type, String):
        return "text"
    return str(column.type.compile(dialect=_PG)).lower()


def _check_aware(table: Table, columns: Sequence[str], values: Sequence[Any]) -> None:
    """What UTCDateTime's bind processor checks, for values sent without it."""
    for name, value in zip(columns, values, strict=True):
        if isinstance(table.c[name].type, UTCDateTime) and value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given; codepulse stores timezone-aware UTC only")


class InsertIfAbsent:
    """Insert one row of `columns` unless one with the same `conflict` columns is stored: True when
    this call inserted it (a concurrent transaction inserting the same key is waited for)."""

    def __init__(self, table: Table, columns: Sequence[str], *, conflict: Sequence[str]) -> None:
        self.table = table
        self.columns = tuple(columns)
        self.conflict = tuple(conflict)

    @cached_property
    def sql(self) -> str:
        placeholders = ", ".join(f"${index}" for index in range(1, len(self.columns) + 1))
        return (
            f"INSERT INTO {self.table.name} ({', '.join(self.columns)}) VALUES ({placeholders})\n"  # noqa: S608
            f"ON CONFLICT ({', '.join(self.conflict)}) DO NOTHING\n"
            f"RETURNING {self.conflict[0]}"
        )

    async def __call__(self, session: AsyncSession, *values: Any) -> bool:
        if is_postgresql(session):
            _check_aware(self.table, self.columns, values)
            driver = await driver_connection(session)
            return await driver.fetchrow(self.sql, *values) is not None
        statement = upsert(session, self.table, conflict=self.conflict).returning(self.table.c[self.conflict[0]])
        params = dict(zip(self.columns, values, strict=True))
        return (await session.execute(statement, params)).first() is not None


class AddToRows:
    """Add rows of `columns` to the stored ones: a row whose `key` columns are new is inserted, a
    stored one gets the row's values of `sums` added to its own. Rows must not repeat a key."""

    def __init__(self, table: Table, columns: Sequence[str], *, key: Sequence[str], sums: Sequence[str]) -> None:
        self.table = table
        self.columns = tuple(columns)
        self.key = tuple(key)
        self.sums = tuple(sums)

    @cached_property
    def sql(self) -> str:
        """Types are read on first use: a foreign key column has its type once its target is known."""
        table = self.table
        arrays = ", ".join(f"${index}::{_pg_type(table.c[name])}[]" for index, name in enumerate(self.columns, start=1))
        additions = ",\n    ".join(f"{name} = t.{name} + excluded.{name}" for name in self.sums)
        return (
            f"INSERT INTO {table.name} AS t ({', '.join(self.columns)})\n"
            f"SELECT * FROM unnest({arrays})\n"
            f"ON CONFLICT ({', '.join(self.key)}) DO UPDATE SET\n    {additions}"
        )

    async def __call__(self, session: AsyncSession, rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        if is_postgresql(session):
            driver = await driver_connection(session)
            await driver.execute(self.sql, *(list(values) for values in zip(*rows, strict=True)))
            return
        table = self.table
        await bulk_upsert(
            session,
            table,
            self.columns,
            rows,
            conflict=self.key,
            update=lambda excluded: {name: table.c[name] + excluded[name] for name in self.sums},
        )


class GroupedSums:
    """Per value of `group_by`, in its order, among the rows whose `where` columns equal the given
    values: the sum of each of `sums`, a sum being of the row-wise total of its columns (0 when
    none; ints on both dialects). Rows come back as (group value, sum, sum, ...)."""

    def __init__(self, table: Table, *, where: Sequence[str], group_by: str, sums: Sequence[Sequence[str]]) -> None:
        self.table = table
        self.where = tuple(where)
        self.group_by = group_by
        self.sums = tuple(tuple(columns) for columns in sums)

    @cached_property
    def sql(self) -> str:
        group_by = self.group_by
        totals = ",\n       ".join(f"coalesce(sum({' + '.join(columns)}), 0)::bigint" for columns in self.sums)
        conditions = " AND ".join(f"{name} = ${index}" for index, name in enumerate(self.where, start=1))
        return (
            f"SELECT {group_by},\n       {totals}\n  FROM {self.table.name}\n WHERE {conditions}\n"  # noqa: S608
            f" GROUP BY {group_by}\n ORDER BY {group_by}"
        )

    async def __call__(self, session: AsyncSession, *values: Any) -> list[tuple[Any, ...]]:
        if is_postgresql(session):
            driver = await driver_connection(session)
            return [tuple(row) for row in await driver.fetch(self.sql, *values)]
        table = self.table
        group = table.c[self.group_by]
        totals = []
        for columns in self.sums:
            total: ColumnElement[Any] = table.c[columns[0]]
            for name in columns[1:]:
                total = total + table.c[name]
            # PostgreSQL's sum(bigint) is numeric; cast back so both dialects answer ints.
            totals.append(cast(func.coalesce(func.sum(total), 0), BigInteger))
        query = (
            select(group, *totals)
            .where(*(table.c[name] == value for name, value in zip(self.where, values, strict=True)))
            .group_by(group)
            .order_by(group)
        )
        return [(row[0], *(int(value) for value in row[1:])) for row in await session.execute(query)]


class LockUnlessFound:
    """Take the advisory transaction lock named `name` (see `advisory_xact_lock`) unless a row of
    `table` whose `fixed` columns have the given values has one of `keys` in its `key_columns`. A
    key that is found takes no lock, so a caller with nothing to write does not wait for it.

    With `also` (a table, its columns and the columns to order by), PostgreSQL reads that table's
    rows in the same round trip, as the JSON text of an array of arrays of those columns (datetimes
    as UTC without an offset); SQLite does not, and answers None for them. The keys are probed one
    by one through the table's index (LATERAL ... LIMIT 1, as in `rows_by_keys`)."""

    def __init__(
        self,
        table: Table,
        *,
        fixed: Sequence[str],
        key_columns: Sequence[str],
        also: tuple[Table, Sequence[str], Sequence[str]] | None = None,
    ) -> None:
        self.table = table
        self.fixed = tuple(fixed)
        self.key_columns = tuple(key_columns)
        self.also = also

    @cached_property
    def sql(self) -> str:
        table = self.table
        start = 2 + len(self.fixed)
        arrays = ", ".join(
            f"${index}::{_pg_type(table.c[name])}[]" for index, name in enumerate(self.key_columns, start=start)
        )
        matches = " AND ".join(
            [f"r.{name} = ${index}" for index, name in enumerate(self.fixed, start=2)]
            + [f"r.{name} = k.{name}" for name in self.key_columns]
        )
        read = ""
        if self.also is not None:
            other, columns, order_by = self.also
            values = ", ".join(
                f"o.{name} AT TIME ZONE 'UTC'" if isinstance(other.c[name].type, UTCDateTime) else f"o.{name}"
                for name in columns
            )
            order = ", ".join(f"o.{name}" for name in order_by)
            read = (
                f",\n       (SELECT coalesce(json_agg(json_build_array({values}) ORDER BY {order}), '[]')::text\n"  # noqa: S608
                f"          FROM {other.name} AS o)"
            )
        return (
            f"SELECT pg_advisory_xact_lock($1){read}\n"  # noqa: S608
            f" WHERE NOT EXISTS (\n"
            f"       SELECT 1\n"
            f"         FROM unnest({arrays}) AS k({', '.join(self.key_columns)}),\n"
            f"              LATERAL (SELECT 1 FROM {table.name} AS r WHERE {matches} LIMIT 1) AS found)"
        )

    async def __call__(
        self, session: AsyncSession, name: str, fixed: Sequence[Any], keys: Sequence[Sequence[Any]]
    ) -> tuple[bool, str | None]:
        """(whether the lock was taken, the `also` rows' JSON when they were read with it)."""
        if not is_postgresql(session):
            found = await rows_by_keys(
                session,
                self.table,
                (),
                fixed=dict(zip(self.fixed, fixed, strict=True)),
                key_columns=self.key_columns,
                keys=keys,
            )
            if found:
                return False, None
            await advisory_xact_lock(session, name)
            return True, None
        driver = await driver_connection(session)
        columns = list(zip(*keys, strict=True)) if keys else [() for _ in self.key_columns]
        row = await driver.fetchrow(self.sql, advisory_lock_key(name), *fixed, *(list(values) for values in columns))
        if row is None:
            return False, None
        return True, (row[1] if self.also is not None else None)


_SAVEPOINT = "insert_all_or_nothing"


async def insert_all_or_nothing(
    session: AsyncSession, table: Table, columns: Sequence[str], rows: Sequence[Sequence[Any]]
) -> bool:
    """`bulk_insert` of rows read as new, in a savepoint: False, having written nothing and with
    the transaction still usable, when one of them is stored after all.

    PostgreSQL: a savepoint through the driver, not released (the commit releases it):
    SQLAlchemy's `begin_nested` would cost a round trip more (RELEASE) and its own bookkeeping."""
    if not is_postgresql(session):
        try:
            async with session.begin_nested():
                await bulk_insert(session, table, columns, rows)
        except IntegrityError:
            return False
        return True
    driver = await driver_connection(session)
    await driver.execute(f"SAVEPOINT {_SAVEPOINT}")
    try:
        await bulk_insert(session, table, columns, rows)
    except IntegrityError:
        await driver.execute(f"ROLLBACK TO SAVEPOINT {_SAVEPOINT}")
        return False
    return True
