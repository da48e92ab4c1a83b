"""Keyset (cursor) pagination shared by every list endpoint: `?limit=&cursor=` -> `{items, next_cursor}`.

A repository describes the order of a list with `SortKey`s and calls `paginate`; the router takes
`PageParams` and answers a `Page[Schema]`:

    @router.get("/runs")
    async def list_runs(session: DbSession, page: PageParams) -> Page[RunOut]:
        stmt = select(JobRun).where(JobRun.status == "failed")
        runs, next_cursor = await paginate(session, stmt, order=[SortKey(JobRun.started_at, "desc")], params=page)
        return Page(items=[RunOut.model_validate(run) for run in runs], next_cursor=next_cursor)

How it works: rows come in the given order with the primary key appended as the last key, so the
order is total; a page is `WHERE (keys) after (the last row's keys) ORDER BY keys LIMIT limit+1`,
and the extra row says whether a next page exists. The WHERE is the portable OR-of-ANDs
expansion (`a > x OR (a = x AND b > y) ...`), so mixed directions work on SQLite and PostgreSQL.

The cursor is `base64url(compact JSON).signature`: an itsdangerous HMAC-SHA256 signature keyed
with SECRET_KEY (the app's signer, `request.app.state.cursor_signer`; code that builds a
`PageRequest` itself gets a random per-process key). The JSON holds the last row's key values and
an id of the sort spec, so a cursor from another sort order is refused. Clients cannot forge
cursors, so only values this server produced reach the decoder; it still types and range-checks
them, and anything it cannot decode, edited or not, is a 422 `invalid_cursor` problem, never a 500.

NULLs: a nullable key sorts NULLs after every value (`NULLS LAST` ascending, `NULLS FIRST`
descending: PostgreSQL's default, so its indexes still serve the order; SQLite is told
explicitly). Nullability comes from the column, or `SortKey(nullable=...)` for expressions.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from enum import Enum
from typing import Annotated, Any, Generic, Literal, TypeVar, TypeVarTuple

from fastapi import Depends, Query, Request
from itsdangerous import BadSignature, Signer
from pydantic import BaseModel, Field
from sqlalchemy import Column, ColumnElement, Row, Select, SQLColumnExpression, and_, false, inspect, or_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import Label
from sqlalchemy.types import TypeDecorator, TypeEngine

from codepulse.errors import FieldError, ValidationFailed

DEFAULT_LIMIT = 50
MAX_LIMIT = 100
# Bounds the work spent on a client's string; an encoded cursor never exceeds it (see `Keyset.encode`).
MAX_CURSOR_LENGTH = 1024

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

Direction = Literal["asc", "desc"]


class Page(BaseModel, Generic[T]):
    """One page of a list."""

    items: list[T]
    next_cursor: str | None = Field(
        description="Pass as `cursor` to get the next page; null on the last page.",
    )


def cursor_signer(secret_key: str | bytes) -> Signer:
    """The signer of cursors for this key (built once per app: `app.state.cursor_signer`)."""
    return Signer(secret_key, salt="codepulse.cursor", key_derivation="hmac", digest_method=hashlib.sha256)


# For PageRequests built in code (services, jobs): their cursors only come back within the process.
_PROCESS_SIGNER = cursor_signer(secrets.token_bytes(32))


@dataclass(frozen=True)
class PageRequest:
    """Where a page starts and how long it is; what `PageParams` parses from the query string."""

    limit: int = DEFAULT_LIMIT
    cursor: str | None = None
    signer: Signer = field(default=_PROCESS_SIGNER, compare=False, repr=False)

    def __post_init__(self) -> None:
        # Services and jobs build these directly too; keep the same bounds as the HTTP layer.
        if not 1 <= self.limit <= MAX_LIMIT:
            raise ValueError(f"limit must be within 1..{MAX_LIMIT}, got {self.limit}")


async def page_request(
    request: Request,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description=f"Page size, 1 to {MAX_LIMIT}.")] = DEFAULT_LIMIT,
    cursor: Annotated[
        str | None,
        Query(max_length=MAX_CURSOR_LENGTH, description="The `next_cursor` of the previous page; omit for the first."),
    ] = None,
) -> PageRequest:
    return PageRequest(limit=limit, cursor=cursor, signer=request.app.state.cursor_signer)


PageParams = Annotated[PageRequest, Depends(page_request)]


@dataclass(frozen=True)
class SortKey:
    """One key of a list's order.

    `column`: a mapped attribute (`Scan.created_at`) or a SQL expression usable in WHERE (for an
    aggregate, select from a subquery and sort by its column). `type`: the Python type of its
    values, inferred from the column's SQL type when omitted. `nullable`: inferred from the column;
    expressions that are not plain columns count as nullable unless told otherwise.
    """

    column: SQLColumnExpression[Any]
    direction: Direction = "asc"
    type: type[Any] | None = None
    nullable: bool | None = None


@dataclass(frozen=True)
class _Key:
    expr: ColumnElement[Any]
    descending: bool
    python_type: type[Any]
    nullable: bool


class _InvalidCursor(ValueError):
    pass


_CURSOR_FORMAT = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
_INVALID_DETAIL = "The cursor is malformed or was modified; request the list again without a cursor."
_OTHER_SORT_DETAIL = "The cursor belongs to a different sort order; request the list again without a cursor."
_INT64 = range(-(2**63), 2**63)
# A Decimal beyond this exponent is no position in any real column, and PostgreSQL would reject it.
_MAX_DECIMAL_EXPONENT = 1000


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _expression(column: SQLColumnExpression[Any]) -> ColumnElement[Any]:
    clause = getattr(column, "__clause_element__", None)
    expr = clause() if clause is not None else column
    if isinstance(expr, Label):
        # WHERE can't refer to a select-list label; compare the labelled expression itself.
        expr = expr.element
    if not isinstance(expr, ColumnElement):
        raise TypeError(f"SortKey column must be a mapped attribute or a column expression, got {column!r}")
    return expr


def _python_type(expr: ColumnElement[Any]) -> type[Any] | None:
    sql_type: TypeEngine[Any] = expr.type
    candidates = [sql_type]
    if isinstance(sql_type, TypeDecorator):
        # Decorators such as UTCDateTime rarely declare python_type; their impl does.
        candidates.append(sql_type.impl_instance)
    for candidate in candidates:
        try:
            python_type = candidate.python_type
        except NotImplementedError:  # SQLAlchemy 2.0 raises where 2.1 answers `object`
            continue
        if python_type is not object:
            return python_type
    return None


def _resolve(key: SortKey) -> _Key:
    expr = _expression(key.column)
    python_type = key.type or _python_type(expr)
    if python_type is None:
        raise TypeError(f"cannot infer the Python type of sort key {expr}; pass SortKey(..., type=...)")
    nullable = key.nullable
    if nullable is None:
        nullable = bool(expr.nullable) if isinstance(expr, Column) else True
    return _Key(expr=expr, descending=key.direction == "desc", python_type=python_type, nullable=nullable)


def _encode_value(value: Any, key: _Key) -> Any:
    if value is None:
        if not key.nullable:
            raise TypeError(f"sort key {key.expr} is NULL in a row; declare SortKey(..., nullable=True)")
        return None
    expected = key.python_type
    # bool is an int subclass; a bool is never a valid int key and vice versa.
    if not isinstance(value, expected) or (isinstance(value, bool) and expected is not bool):
        raise TypeError(f"sort key {key.expr} holds {type(value).__name__}, expected {expected.__name__}")
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise TypeError(f"sort key {key.expr} holds {value}, which no cursor can encode")
        return value
    if isinstance(value, Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise TypeError(f"sort key {key.expr} holds a naive datetime; codepulse keys are timezone-aware")
        return value.astimezone(UTC).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    raise TypeError(f"sort key {key.expr} has type {expected.__name__}, which cursors cannot encode")


def _decode_value(raw: Any, key: _Key) -> Any:
    expected = key.python_type
    if raw is None:
        if key.nullable:
            return None
        raise _InvalidCursor("null for a NOT NULL key")
    if issubclass(expected, Enum | bool | int | float):
        return _decode_json_native(raw, expected)
    if not isinstance(raw, str):
        raise _InvalidCursor("expected a string")
    return _decode_string(raw, expected)


def _decode_json_native(raw: Any, expected: type) -> Any:
    """Keys JSON holds as themselves: enums (by value), booleans, 64-bit integers, finite floats."""
    if issubclass(expected, Enum):
        if isinstance(raw, bool) or not isinstance(raw, str | int):
            raise _InvalidCursor("enum value of the wrong JSON type")
        return expected(raw)
    if issubclass(expected, bool):
        if not isinstance(raw, bool):
            raise _InvalidCursor("expected a boolean")
        return raw
    if issubclass(expected, int):
        if type(raw) is not int or raw not in _INT64:
            raise _InvalidCursor("expected a 64-bit integer")
        return raw
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
        raise _InvalidCursor("expected a finite number")
    return float(raw)


def _decode_string(raw: str, expected: type) -> Any:
    """Keys a cursor carries as strings: text, decimals, UUIDs, datetimes and dates."""
    if issubclass(expected, str):
        if "\x00" in raw:  # PostgreSQL text cannot hold NUL, so no row has it
            raise _InvalidCursor("NUL in a string key")
        return raw
    if issubclass(expected, Decimal):
        number = Decimal(raw)
        if not number.is_finite() or abs(number.adjusted()) > _MAX_DECIMAL_EXPONENT:
            raise _InvalidCursor("decimal out of range")
        return number
    if issubclass(expected, uuid.UUID):
        return uuid.UUID(raw)
    if issubclass(expected, datetime):
        moment = datetime.fromisoformat(raw)
        if moment.tzinfo is None:
            raise _InvalidCursor("naive datetime")
        return moment.astimezone(UTC)
    if issubclass(expected, date):
        return date.fromisoformat(raw)
    raise _InvalidCursor(f"unsupported key type {expected.__name__}")


class Keyset:
    """A fully specified order (tiebreaker included): its ORDER BY, its "after" predicate and its
    cursor codec. `paginate` builds one per call; use it directly only for queries it can't run."""

    def __init__(self, keys: Sequence[SortKey]) -> None:
        if not keys:
            raise ValueError("a keyset needs at least one key")
        self.keys = tuple(_resolve(key) for key in keys)
        spec = "|".join(
            f"{key.expr}:{'desc' if key.descending else 'asc'}:{'null' if key.nullable else 'notnull'}:"
            f"{key.python_type.__module__}.{key.python_type.__qualname__}"
            for key in self.keys
        )
        # Short and stable across processes and releases (unless the order itself changes).
        self.spec_id = _b64encode(hashlib.blake2b(spec.encode(), digest_size=6).digest())

    def order_by(self) -> list[ColumnElement[Any]]:
        clauses: list[ColumnElement[Any]] = []
        for key in self.keys:
            clause = key.expr.desc() if key.descending else key.expr.asc()
            if key.nullable:
                # NULLs sort as the greatest value on both dialects (SQLite's default is the least).
                clause = clause.nulls_first() if key.descending else clause.nulls_last()
            clauses.append(clause)
        return clauses

    def after(self, values: Sequence[Any]) -> ColumnElement[bool]:
        """Rows strictly after the row whose keys are `values`, in this order."""
        branches: list[ColumnElement[bool]] = []
        equal_so_far: list[ColumnElement[bool]] = []
        for key, value in zip(self.keys, values, strict=True):
            beyond = self._beyond(key, value)
            if beyond is not None:
                branches.append(and_(*equal_so_far, beyond))
            equal_so_far.append(key.expr.is_(None) if value is None else key.expr == value)
        return or_(false(), *branches)

    @staticmethod
    def _beyond(key: _Key, value: Any) -> ColumnElement[bool] | None:
        """Rows whose `key` comes strictly after `value`, with NULL as the greatest value."""
        if value is None:
            # Descending, NULLs come first and every value follows; ascending, nothing follows them.
            return key.expr.is_not(None) if key.descending else None
        beyond: ColumnElement[bool] = key.expr < value if key.descending else key.expr > value
        if key.nullable and not key.descending:
            beyond = or_(beyond, key.expr.is_(None))
        return beyond

    def encode(self, values: Sequence[Any], signer: Signer) -> str:
        encoded = [_encode_value(value, key) for key, value in zip(self.keys, values, strict=True)]
        payload = json.dumps(
            {"s": self.spec_id, "v": encoded}, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode()
        cursor = signer.sign(_b64encode(payload)).decode("ascii")
        if len(cursor) > MAX_CURSOR_LENGTH:
            # Clients could not send it back; keep string keys short (a 200-character name fits).
            raise ValueError(f"cursor of {len(cursor)} characters exceeds {MAX_CURSOR_LENGTH}")
        return cursor

    def decode(self, cursor: str, signer: Signer) -> tuple[Any, ...]:
        """The key values in `cursor`; raises a 422 `invalid_cursor` problem for anything else."""
        try:
            if len(cursor) > MAX_CURSOR_LENGTH or not _CURSOR_FORMAT.fullmatch(cursor):
                raise _InvalidCursor("not a cursor")
            data = json.loads(_b64decode(signer.unsign(cursor).decode("ascii")))
            if not isinstance(data, dict) or not isinstance(data.get("v"), list):
                raise _InvalidCursor("unexpected shape")
            if data.get("s") != self.spec_id:
                raise invalid_cursor(_OTHER_SORT_DETAIL)
            raw_values: list[Any] = data["v"]
            if len(raw_values) != len(self.keys):
                raise _InvalidCursor("wrong number of keys")
            return tuple(_decode_value(raw, key) for key, raw in zip(self.keys, raw_values, strict=True))
        except (ValueError, TypeError, ArithmeticError, InvalidOperation, binascii.Error, BadSignature) as error:
            # _InvalidCursor, a bad signature, bad base64/UTF-8/JSON, the type constructors' errors
            # and out-of-range values (a datetime whose UTC form is before year 1: OverflowError).
            raise invalid_cursor(_INVALID_DETAIL) from error


def invalid_cursor(detail: str) -> ValidationFailed:
    """The 422 problem for a `cursor` this list did not produce."""
    error = FieldError(field="query.cursor", message=detail, code="invalid_cursor")
    return ValidationFailed([error], detail, code="invalid_cursor")


def _primary_key(stmt: Select[*tuple[Any, ...]]) -> list[SQLColumnExpression[Any]]:
    descriptions = stmt.column_descriptions
    entity = descriptions[0].get("entity") if descriptions else None
    if entity is None:
        raise ValueError("the statement selects no mapped entity; pass tiebreaker=<unique column(s)> to paginate")
    mapper = inspect(entity).mapper
    # Attributes of `entity` itself, so an aliased entity gets the alias's columns.
    return [getattr(entity, mapper.get_property_by_column(column).key) for column in mapper.primary_key]


def _full_order(
    stmt: Select[*tuple[Any, ...]], order: Sequence[SortKey], tiebreaker: Sequence[SQLColumnExpression[Any]] | None
) -> Keyset:
    unique = [_expression(column) for column in (tiebreaker if tiebreaker is not None else _primary_key(stmt))]
    tail = [_expression(key.column) for key in order[len(order) - len(unique) :]] if len(order) >= len(unique) else []
    if tail and all(given.compare(expr) for given, expr in zip(tail, unique, strict=True)):
        return Keyset(order)
    direction: Direction = order[-1].direction if order else "asc"
    # The tiebreaker follows the last key's direction, so one index on (key, id) serves either way.
    return Keyset([*order, *(SortKey(column, direction) for column in unique)])


async def _fetch(
    session: AsyncSession,
    stmt: Select[*tuple[Any, ...]],
    order: Sequence[SortKey],
    params: PageRequest,
    tiebreaker: Sequence[SQLColumnExpression[Any]] | None,
) -> tuple[list[Row[*tuple[Any, ...]]], str | None]:
    keyset = _full_order(stmt, order, tiebreaker)
    if params.cursor is not None:
        # Decoded before any query runs: a bad cursor costs no database work.
        stmt = stmt.where(keyset.after(keyset.decode(params.cursor, params.signer)))
    # The key values ride along as extra trailing columns, so expressions and joins work alike.
    paged = stmt.add_columns(*(key.expr for key in keyset.keys))
    paged = paged.order_by(None).order_by(*keyset.order_by()).limit(params.limit + 1)
    result = await session.execute(paged)
    # Replayed twice: once whole, for the key values; once as the caller's own columns, so items
    # are Rows of the statement's shape (names and all), without the trailing keys.
    frozen = result.freeze()
    rows = frozen().all()
    width = len(stmt.column_descriptions)
    items = list(frozen().columns(*range(width)).all())
    next_cursor = None
    if len(rows) > params.limit:
        items = items[: params.limit]
        next_cursor = keyset.encode(tuple(rows[params.limit - 1])[width:], params.signer)
    return items, next_cursor


async def paginate(
    session: AsyncSession,
    stmt: Select[T],
    *,
    order: Sequence[SortKey],
    params: PageRequest,
    tiebreaker: Sequence[SQLColumnExpression[Any]] | None = None,
) -> tuple[list[T], str | None]:
    """One page of `stmt`, which selects one thing (an entity or a column): `(items, next_cursor)`.

    `order`: the list's sort keys, most significant first. The primary key of the selected entity
    is appended as the final tiebreaker (in the last key's direction) unless `order` already ends
    with it; pass `tiebreaker=[unique columns]` when the statement selects no mapped entity, or
    `tiebreaker=()` when `order` is already total.
    paginate owns the statement's ORDER BY and LIMIT; its WHERE, joins and options are kept.
    Raises a 422 problem `invalid_cursor` for a cursor this order did not produce.
    """
    if len(stmt.column_descriptions) != 1:
        raise ValueError("paginate takes a statement selecting one entity or column; use paginate_rows")
    rows, next_cursor = await _fetch(session, stmt, order, params, tiebreaker)
    return [row[0] for row in rows], next_cursor


async def paginate_rows(
    session: AsyncSession,
    stmt: Select[*Ts],
    *,
    order: Sequence[SortKey],
    params: PageRequest,
    tiebreaker: Sequence[SQLColumnExpression[Any]] | None = None,
) -> tuple[list[Row[*Ts]], str | None]:
    """Like `paginate`, for statements selecting several things: each item is a Row of them."""
    rows, next_cursor = await _fetch(session, stmt, order, params, tiebreaker)
    return rows, next_cursor
