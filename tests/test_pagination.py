"""Keyset pagination: every row exactly once in order, bounded limits, refused foreign or edited cursors."""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from enum import IntEnum
from typing import Any, Literal, cast

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from itsdangerous import BadSignature
from pydantic import BaseModel, ConfigDict
from sqlalchemy import Select, func, literal_column, select
from sqlalchemy.ext.asyncio import AsyncSession

from codepulse.config import Settings
from codepulse.db import DbSession, SessionRoute
from codepulse.errors import ValidationFailed
from codepulse.pagination import (
    DEFAULT_LIMIT,
    MAX_CURSOR_LENGTH,
    MAX_LIMIT,
    Keyset,
    Page,
    PageParams,
    PageRequest,
    SortKey,
    cursor_signer,
    paginate,
    paginate_rows,
)
from codepulse.scheduler import JobRun, JobRunStatus
from tests.factories import JobRunFactory

PROBLEM = "application/problem+json"
# Every query filters on this runner, so rows other tests might leave behind can't leak in.
RUNNER = "pagination-test"
BASE = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)

# (attribute, descending) pairs; the expected order appends `id` in the last key's direction.
Spec = list[tuple[str, bool]]


async def make_runs(session: AsyncSession, count: int) -> list[JobRun]:
    """Runs with deliberate ties on every sort column and NULLs in the nullable ones."""
    runs = [
        cast(
            JobRun,
            JobRunFactory(
                job_id=f"job.{i % 4}",
                scheduled_for=BASE + timedelta(seconds=i),
                started_at=BASE + timedelta(minutes=i % 3),
                finished_at=None if i % 5 == 0 else BASE + timedelta(hours=i % 4),
                status=(JobRunStatus.FAILED, JobRunStatus.SUCCEEDED)[i % 2].value,
                error=None if i % 3 else f"error {i % 2}",
                runner=RUNNER,
            ),
        )
        for i in range(count)
    ]
    await session.flush()
    return runs


def runs_stmt() -> Select[JobRun]:
    return select(JobRun).where(JobRun.runner == RUNNER)


def sort_keys(spec: Spec) -> list[SortKey]:
    return [SortKey(getattr(JobRun, attr), "desc" if descending else "asc") for attr, descending in spec]


def _null_greatest(value: Any) -> tuple[bool, Any]:
    return (value is None, 0 if value is None else value)


def expected_ids(runs: Sequence[JobRun], spec: Spec) -> list[uuid.UUID]:
    """The order the database must produce: the keys, NULLs greatest, then `id` as tiebreaker.

    Python orders UUIDs like both databases do (by their 128-bit value) and the job ids and
    statuses are ASCII with a common shape, so no collation can disagree."""
    ordered = list(runs)
    # Stable sorts from the least significant key up give the combined order.
    for attr, descending in reversed(spec):
        ordered.sort(key=lambda run: _null_greatest(getattr(run, attr)), reverse=descending)
    return [run.id for run in ordered]


def with_tiebreaker(spec: Spec) -> Spec:
    return [*spec, ("id", spec[-1][1])]


async def walk(
    session: AsyncSession, order: Sequence[SortKey], limit: int, stmt: Select[JobRun] | None = None
) -> list[list[JobRun]]:
    pages: list[list[JobRun]] = []
    cursor: str | None = None
    while True:
        items, cursor = await paginate(
            session, stmt if stmt is not None else runs_stmt(), order=order, params=PageRequest(limit, cursor)
        )
        pages.append(items)
        if cursor is None:
            return pages
        assert len(pages) < 100, "pagination does not terminate"


ORDERS: dict[str, Spec] = {
    "asc": [("started_at", False)],
    "desc": [("started_at", True)],
    "mixed": [("job_id", False), ("started_at", True)],
    "mixed-reversed": [("status", True), ("scheduled_for", False)],
    "nullable-asc": [("finished_at", False)],
    "nullable-desc": [("finished_at", True)],
    "nullable-mixed": [("error", True), ("finished_at", False)],
}


@pytest.mark.parametrize("limit", [1, 4, 17])
@pytest.mark.parametrize("name", list(ORDERS))
async def test_walking_all_pages_yields_every_row_once_in_order(session: AsyncSession, name: str, limit: int) -> None:
    spec = ORDERS[name]
    runs = await make_runs(session, 17)
    pages = await walk(session, sort_keys(spec), limit)
    seen = [run.id for page in pages for run in page]
    assert seen == expected_ids(runs, with_tiebreaker(spec))
    # Full pages up to the last, which is never empty: the extra row detects the end exactly.
    assert [len(page) for page in pages[:-1]] == [limit] * (len(pages) - 1)
    assert 1 <= len(pages[-1]) <= limit


async def test_an_explicit_trailing_id_is_not_duplicated(session: AsyncSession) -> None:
    runs = await make_runs(session, 9)
    order = [SortKey(JobRun.started_at, "desc"), SortKey(JobRun.id, "asc")]
    pages = await walk(session, order, 2)
    ids = [run.id for page in pages for run in page]
    assert ids == expected_ids(runs, [("started_at", True), ("id", False)])
    _, cursor = await paginate(session, runs_stmt(), order=order, params=PageRequest(2))
    assert cursor is not None
    assert len(_payload(cursor)["v"]) == 2


async def test_an_existing_order_by_is_replaced(session: AsyncSession) -> None:
    runs = await make_runs(session, 6)
    pages = await walk(session, sort_keys(ORDERS["asc"]), 4, stmt=runs_stmt().order_by(JobRun.job_id.desc()))
    assert [run.id for page in pages for run in page] == expected_ids(runs, with_tiebreaker(ORDERS["asc"]))


async def test_empty_list_gives_no_items_and_no_cursor(session: AsyncSession) -> None:
    items, cursor = await paginate(session, runs_stmt(), order=sort_keys(ORDERS["asc"]), params=PageRequest())
    assert (items, cursor) == ([], None)


async def test_last_page_has_no_cursor_when_rows_fill_it_exactly(session: AsyncSession) -> None:
    await make_runs(session, 8)
    order = sort_keys(ORDERS["desc"])
    first, cursor = await paginate(session, runs_stmt(), order=order, params=PageRequest(4))
    assert len(first) == 4
    assert cursor is not None
    second, end = await paginate(session, runs_stmt(), order=order, params=PageRequest(4, cursor))
    assert len(second) == 4
    assert end is None


async def test_paginate_rows_keeps_the_statement_shape(session: AsyncSession) -> None:
    runs = await make_runs(session, 7)
    stmt = select(JobRun.job_id, JobRun.started_at).where(JobRun.runner == RUNNER)
    order = sort_keys(ORDERS["mixed"])
    rows, cursor = await paginate_rows(session, stmt, order=order, params=PageRequest(5))
    rest, end = await paginate_rows(session, stmt, order=order, params=PageRequest(5, cursor))
    assert end is None
    by_id = {run.id: run for run in runs}
    expected = [by_id[id_] for id_ in expected_ids(runs, with_tiebreaker(ORDERS["mixed"]))]
    assert [(row.job_id, row.started_at) for row in [*rows, *rest]] == [(r.job_id, r.started_at) for r in expected]
    assert all(len(row) == 2 for row in rows)


async def test_paginate_rows_over_an_aggregate_subquery_with_explicit_tiebreaker(session: AsyncSession) -> None:
    await make_runs(session, 10)  # job.0: 3 runs, job.1: 3, job.2: 2, job.3: 2
    counts = (
        select(JobRun.job_id, func.count().label("runs"))
        .where(JobRun.runner == RUNNER)
        .group_by(JobRun.job_id)
        .subquery()
    )
    stmt = select(counts.c.job_id, counts.c.runs)
    order = [SortKey(counts.c.runs, "desc")]
    with pytest.raises(ValueError, match="tiebreaker"):
        await paginate_rows(session, stmt, order=order, params=PageRequest(1))
    seen: list[tuple[str, int]] = []
    cursor: str | None = None
    while True:
        rows, cursor = await paginate_rows(
            session, stmt, order=order, params=PageRequest(1, cursor), tiebreaker=[counts.c.job_id]
        )
        seen.extend((row.job_id, row.runs) for row in rows)
        if cursor is None:
            break
    assert seen == [("job.1", 3), ("job.0", 3), ("job.3", 2), ("job.2", 2)]


# --- cursors ---------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _payload(cursor: str) -> dict[str, Any]:
    encoded = cursor.split(".")[0]
    payload: dict[str, Any] = json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
    return payload


# What PageRequests built in code (as these tests do) sign their cursors with.
PROCESS_SIGNER = PageRequest().signer


def _raw(payload: object) -> bytes:
    return payload if isinstance(payload, bytes) else json.dumps(payload, separators=(",", ":")).encode()


def forge(payload: object) -> str:
    """A well-formed cursor signed with the key: what only the server itself can produce, to test
    the decoder's own checks behind the signature."""
    return PROCESS_SIGNER.sign(_b64(_raw(payload))).decode()


def checksummed(payload: object) -> str:
    """The cursor a client that read the format could build: before signing, cursors carried
    a keyless blake2b checksum, which anyone can compute."""
    raw = _raw(payload)
    checksum = hashlib.blake2b(raw, digest_size=8, person=b"codepulse.cursor").digest()
    return f"{_b64(raw)}.{_b64(checksum)}"


def _flip_payload_char(cursor: str) -> str:
    index = len(cursor) // 3
    return cursor[:index] + ("A" if cursor[index] != "A" else "B") + cursor[index + 1 :]


def _with_values(cursor: str, values: list[Any]) -> str:
    return forge({**_payload(cursor), "v": values})


TAMPERINGS: dict[str, Callable[[str], str]] = {
    "empty": lambda _: "",
    "garbage": lambda _: "not-a-cursor",
    "bad alphabet": lambda cursor: cursor.replace(".", "!", 1),
    "two dots": lambda cursor: cursor + ".AAAA",
    "truncated": lambda cursor: cursor[:-3],
    "edited payload": _flip_payload_char,
    "too long": lambda cursor: cursor + "A" * MAX_CURSOR_LENGTH,
    "not json": lambda _: forge(b"{not json"),
    "not utf-8": lambda _: forge(b"\xff\xfe"),
    "json list": lambda cursor: forge([_payload(cursor)["s"], _payload(cursor)["v"]]),
    "no values": lambda cursor: forge({"s": _payload(cursor)["s"]}),
    "too few values": lambda cursor: _with_values(cursor, _payload(cursor)["v"][:1]),
    "too many values": lambda cursor: _with_values(cursor, [*_payload(cursor)["v"], 1]),
    "null for not-null key": lambda cursor: _with_values(cursor, [None, _payload(cursor)["v"][1]]),
    "bad datetime": lambda cursor: _with_values(cursor, ["yesterday", _payload(cursor)["v"][1]]),
    "naive datetime": lambda cursor: _with_values(cursor, ["2025-03-01T12:00:00", _payload(cursor)["v"][1]]),
    "number for datetime": lambda cursor: _with_values(cursor, [1740830400, _payload(cursor)["v"][1]]),
    "bad uuid": lambda cursor: _with_values(cursor, [_payload(cursor)["v"][0], "not-a-uuid"]),
    # Before year 1 in UTC, or after 9999: astimezone raised OverflowError, a 500.
    "datetime before year 1": lambda cursor: _with_values(
        cursor, ["0001-01-01T00:00:00+05:00", _payload(cursor)["v"][1]]
    ),
    "datetime after 9999": lambda cursor: _with_values(cursor, ["9999-12-31T23:59:59-05:00", _payload(cursor)["v"][1]]),
    "unsigned (checksummed)": lambda cursor: checksummed(_payload(cursor)),
    "signed with another key": lambda cursor: (
        cursor_signer("another-key-" + "x" * 40).sign(cursor.split(".")[0]).decode()
    ),
}


@pytest.mark.parametrize("tampering", list(TAMPERINGS))
async def test_malformed_or_edited_cursor_is_invalid_cursor(session: AsyncSession, tampering: str) -> None:
    await make_runs(session, 3)
    order = sort_keys(ORDERS["asc"])
    _, cursor = await paginate(session, runs_stmt(), order=order, params=PageRequest(1))
    assert cursor is not None
    with pytest.raises(ValidationFailed) as raised:
        await paginate(session, runs_stmt(), order=order, params=PageRequest(1, TAMPERINGS[tampering](cursor)))
    assert raised.value.instance_code == "invalid_cursor"
    assert raised.value.status == 422
    assert [error.field for error in raised.value.errors] == ["query.cursor"]


@pytest.mark.parametrize("other", ["desc", "mixed", "nullable-asc"])
async def test_cursor_from_another_sort_is_invalid_cursor(session: AsyncSession, other: str) -> None:
    await make_runs(session, 3)
    _, cursor = await paginate(session, runs_stmt(), order=sort_keys(ORDERS["asc"]), params=PageRequest(1))
    with pytest.raises(ValidationFailed, match="different sort order") as raised:
        await paginate(session, runs_stmt(), order=sort_keys(ORDERS[other]), params=PageRequest(1, cursor))
    assert raised.value.instance_code == "invalid_cursor"


class Priority(IntEnum):
    LOW = 1
    HIGH = 2


def _codec(*types: type[Any], nullable: bool = False) -> Keyset:
    return Keyset([SortKey(literal_column(f"k{i}"), type=t, nullable=nullable) for i, t in enumerate(types)])


def test_cursor_round_trips_every_supported_type() -> None:
    types: list[type[Any]] = [str, int, Decimal, bool, uuid.UUID, datetime, date, JobRunStatus, Priority, float]
    values = [
        'naïve 名前 "quoted"',
        -(2**63),
        Decimal("12.3400"),
        True,
        uuid.UUID("0b7c8e3c-3c2b-4a8f-9d25-6f0e8e3c9a11"),
        datetime(2025, 3, 1, 13, 30, 0, 123456, tzinfo=timezone(timedelta(hours=1))),
        date(2025, 3, 1),
        JobRunStatus.FAILED,
        Priority.HIGH,
        0.1,
    ]
    codec = _codec(*types)
    decoded = codec.decode(codec.encode(values, PROCESS_SIGNER), PROCESS_SIGNER)
    assert decoded == tuple(values)
    assert [type(value) for value in decoded] == [type(value) for value in values]
    assert decoded[2].as_tuple() == Decimal("12.3400").as_tuple()  # exact, trailing zeros kept
    assert decoded[5].tzinfo == UTC
    nullable = _codec(str, datetime, nullable=True)
    assert nullable.decode(nullable.encode([None, None], PROCESS_SIGNER), PROCESS_SIGNER) == (None, None)


@pytest.mark.parametrize(
    ("python_type", "raw"),
    [
        (int, True),
        (int, 1.5),
        (int, "1"),
        (int, 2**63),
        (bool, 1),
        (float, "0.1"),
        (float, True),
        (Decimal, "NaN"),
        (Decimal, "1e5000"),
        (Decimal, 1.5),
        (str, 5),
        (str, "nul\x00byte"),
        (JobRunStatus, "paused"),
        (date, "2025-13-01"),
        (uuid.UUID, 7),
        (datetime, "0001-01-01T00:00:00+05:00"),
        (datetime, "9999-12-31T23:59:59-05:00"),
    ],
)
def test_forged_values_of_the_wrong_type_are_invalid_cursor(python_type: type[Any], raw: object) -> None:
    codec = _codec(python_type)
    with pytest.raises(ValidationFailed) as raised:
        codec.decode(forge({"s": codec.spec_id, "v": [raw]}), PROCESS_SIGNER)
    assert raised.value.instance_code == "invalid_cursor"


def test_values_a_cursor_cannot_hold_are_programming_errors() -> None:
    with pytest.raises(TypeError, match="naive"):
        _codec(datetime).encode([datetime(2025, 3, 1)], PROCESS_SIGNER)  # noqa: DTZ001 - the naive value is the point
    with pytest.raises(TypeError, match="expected int"):
        _codec(int).encode([True], PROCESS_SIGNER)
    with pytest.raises(TypeError, match="nullable"):
        _codec(str).encode([None], PROCESS_SIGNER)
    with pytest.raises(ValueError, match="exceeds"):
        _codec(str).encode(["x" * MAX_CURSOR_LENGTH], PROCESS_SIGNER)
    with pytest.raises(TypeError, match="type="):
        Keyset([SortKey(literal_column("k"))])


async def test_page_request_bounds() -> None:
    assert PageRequest() == PageRequest(limit=DEFAULT_LIMIT, cursor=None)
    assert PageRequest(MAX_LIMIT).limit == MAX_LIMIT
    for bad in (0, MAX_LIMIT + 1):
        with pytest.raises(ValueError, match="limit"):
            PageRequest(bad)


# --- over HTTP -------------------------------------------------------------------------------


class RunOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    job_id: str
    started_at: datetime


HTTP_SORTS = {"recent": sort_keys([("started_at", True)]), "job": sort_keys(ORDERS["mixed"])}


def _pagination_router() -> APIRouter:
    router = APIRouter(prefix="/api/v1/_test/pagination", tags=["test"], route_class=SessionRoute)

    @router.get("/runs")
    async def list_runs(
        session: DbSession, page: PageParams, sort: Literal["recent", "job"] = "recent"
    ) -> Page[RunOut]:
        runs, next_cursor = await paginate(session, runs_stmt(), order=HTTP_SORTS[sort], params=page)
        return Page(items=[RunOut.model_validate(run) for run in runs], next_cursor=next_cursor)

    return router


@pytest.fixture
async def client(
    session: AsyncSession, settings: Settings, app_factory: Callable[[Settings], FastAPI]
) -> AsyncIterator[httpx.AsyncClient]:
    app = app_factory(settings)
    app.include_router(_pagination_router())
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as client,
    ):
        yield client


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    assert (body["status"], body["code"], body["type"]) == (status, code, f"urn:codepulse:problem:{code}")
    return body


async def test_http_walk_with_default_limit(client: httpx.AsyncClient, session: AsyncSession) -> None:
    runs = await make_runs(session, DEFAULT_LIMIT + 1)
    first = await client.get("/api/v1/_test/pagination/runs")
    assert first.status_code == 200
    body = first.json()
    assert set(body) == {"items", "next_cursor"}
    assert len(body["items"]) == DEFAULT_LIMIT
    second = await client.get("/api/v1/_test/pagination/runs", params={"cursor": body["next_cursor"]})
    rest = second.json()
    assert len(rest["items"]) == 1
    assert rest["next_cursor"] is None
    ids = [uuid.UUID(item["id"]) for item in [*body["items"], *rest["items"]]]
    assert ids == expected_ids(runs, with_tiebreaker([("started_at", True)]))


@pytest.mark.parametrize("limit", ["0", str(MAX_LIMIT + 1), "-1", "many"])
async def test_http_limit_out_of_bounds_is_validation_failed(client: httpx.AsyncClient, limit: str) -> None:
    response = await client.get("/api/v1/_test/pagination/runs", params={"limit": limit})
    body = assert_problem(response, 422, "validation_failed")
    assert [error["field"] for error in body["errors"]] == ["query.limit"]


async def test_http_limit_bounds_are_inclusive(client: httpx.AsyncClient) -> None:
    for limit in (1, MAX_LIMIT):
        response = await client.get("/api/v1/_test/pagination/runs", params={"limit": limit})
        assert response.status_code == 200
        assert response.json() == {"items": [], "next_cursor": None}


async def test_http_overlong_cursor_is_validation_failed(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/_test/pagination/runs", params={"cursor": "A" * (MAX_CURSOR_LENGTH + 1)})
    body = assert_problem(response, 422, "validation_failed")
    assert [error["field"] for error in body["errors"]] == ["query.cursor"]


async def test_http_tampered_cursor_is_a_422_problem(client: httpx.AsyncClient, session: AsyncSession) -> None:
    await make_runs(session, 3)
    cursor = (await client.get("/api/v1/_test/pagination/runs", params={"limit": 1})).json()["next_cursor"]
    response = await client.get(
        "/api/v1/_test/pagination/runs", params={"limit": 1, "cursor": _flip_payload_char(cursor)}
    )
    body = assert_problem(response, 422, "invalid_cursor")
    assert "without a cursor" in body["detail"]
    assert [error["field"] for error in body["errors"]] == ["query.cursor"]


async def test_http_cursor_from_another_sort_is_a_422_problem(client: httpx.AsyncClient, session: AsyncSession) -> None:
    await make_runs(session, 3)
    cursor = (await client.get("/api/v1/_test/pagination/runs", params={"limit": 1})).json()["next_cursor"]
    response = await client.get("/api/v1/_test/pagination/runs", params={"limit": 1, "cursor": cursor, "sort": "job"})
    body = assert_problem(response, 422, "invalid_cursor")
    assert "different sort order" in body["detail"]


@pytest.mark.parametrize("moment", ["0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00"])
async def test_http_forged_cursor_with_an_extreme_datetime_is_a_422_problem(
    client: httpx.AsyncClient, session: AsyncSession, moment: str
) -> None:
    """The reported attack: a checksummed cursor (the old format anyone could build) holding a
    datetime out of range in UTC answered 500 (OverflowError)."""
    await make_runs(session, 3)
    cursor = (await client.get("/api/v1/_test/pagination/runs", params={"limit": 1})).json()["next_cursor"]
    payload = _payload(cursor)
    forged = checksummed({**payload, "v": [moment, payload["v"][1]]})
    response = await client.get("/api/v1/_test/pagination/runs", params={"limit": 1, "cursor": forged})
    assert_problem(response, 422, "invalid_cursor")


async def test_http_cursors_are_signed_with_the_secret_key(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    await make_runs(session, 3)
    cursor = (await client.get("/api/v1/_test/pagination/runs", params={"limit": 1})).json()["next_cursor"]
    encoded_payload = cursor.split(".")[0]
    assert cursor_signer(settings.secret_key).sign(encoded_payload).decode() == cursor
    with pytest.raises(BadSignature):
        cursor_signer(settings.secret_key).unsign(PROCESS_SIGNER.sign(encoded_payload))
