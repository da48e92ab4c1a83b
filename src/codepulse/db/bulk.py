"""Bulk writes and keyed reads: COPY and unnest on PostgreSQL, executemany and row values on SQLite."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import (
    Boolean,
    ColumnElement,
    Row,
    Table,
    bindparam,
    func,
    select,
    true,
    tuple_,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import (
    AsyncSession,
)
from sqlalchemy.sql.selectable import TableValuedAlias

from codepulse.db.base import UTCDateTime
from codepulse.db.dialect import ExcludedColumns, is_postgresql, upsert


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
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    # SQLAlchemy's asyncpg adapter sends BEGIN with the first statement it runs itself: on a
    # session that has run none yet, a statement sent straight to the driver would commit on its
    # own. One statement through the adapter begins the transaction (the attribute is private:
    # where it is missing — another driver, a later version — the statement is sent anyway).
    if getattr(raw.dbapi_connection, "_transaction", None) is None:
        await connection.exec_driver_sql("SELECT 1")
    driver = raw.driver_connection
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
    if is_postgresql(session):
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
    if is_postgresql(session):
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
