"""The superusers' task-queue routes: list with filters and cursors, retry a dead or failed task,
cancel a queued one; each change audited as a platform event. Workers run over the test's
database with the app's clock (`run_until_idle`), so nothing sleeps.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from codepulse.config import Settings
from codepulse.db import Database
from codepulse.orgs.models import AuditEvent
from codepulse.repositories.models import Repository
from codepulse.scans import jobs as scans_jobs
from codepulse.scans.models import Scan, ScanPhase, ScanStatus
from codepulse.scans.service import rebuild_scan_days
from codepulse.tasks import Task, TaskContext, TaskRegistry, TaskStatus, Worker, enqueue
from tests.factories import Account, MakeOrg, MakeUser, RepositoryFactory, ScanFactory
from tests.helpers import FakeClock
from tests.scans.test_scan_days import assert_days_match

TASKS = "/api/v1/admin/tasks"


def _worker(db: Database, settings: Settings, clock: FakeClock, handlers: dict[str, Any]) -> Worker:
    registry = TaskRegistry()
    for kind, handler in handlers.items():
        registry.register(kind, handler)
    return Worker(db, settings, registry, clock=clock, concurrency=1, worker_id="admin-test")


async def _task(session: AsyncSession, task_id: uuid.UUID | str) -> Task:
    statement = select(Task).where(Task.id == uuid.UUID(str(task_id))).execution_options(populate_existing=True)
    task = await session.scalar(statement)
    assert task is not None
    return task


async def _platform_events(session: AsyncSession) -> list[AuditEvent]:
    statement = select(AuditEvent).where(AuditEvent.org_id.is_(None)).order_by(AuditEvent.created_at, AuditEvent.id)
    return list((await session.scalars(statement.execution_options(populate_existing=True))).all())


async def _add(session: AsyncSession, clock: FakeClock, kind: str = "test.job", **values: Any) -> Task:
    """A task in a given state, written directly (tests about a rule build their data)."""
    options = {key: values.pop(key) for key in ("payload", "unique_key", "max_attempts") if key in values}
    task = await enqueue(session, kind, options.pop("payload", {}), now=clock(), **options)
    if values:
        await session.execute(update(Task).where(Task.id == task.id).values(**values))
    return await _task(session, task.id)


async def _admin(make_user: MakeUser) -> Account:
    return await make_user("root", is_superuser=True)


async def test_retry_of_a_dead_task_runs_it_once_and_is_audited(
    client: httpx.AsyncClient,
    session: AsyncSession,
    db: Database,
    settings: Settings,
    clock: FakeClock,
    make_user: MakeUser,
) -> None:
    admin = await _admin(make_user)
    runs: list[TaskContext] = []
    broken = True

    async def flaky(context: TaskContext) -> None:
        runs.append(context)
        if broken:
            raise RuntimeError("upstream down")

    task = await _add(session, clock, "test.flaky", payload={"n": 1}, max_attempts=2)
    worker = _worker(db, settings, clock, {"test.flaky": flaky})
    assert await worker.run_until_idle() == 1
    clock.advance(days=2)  # past the backoff
    assert await worker.run_until_idle() == 1
    dead = await _task(session, task.id)
    assert (dead.status, dead.attempts, len(runs)) == (TaskStatus.DEAD.value, 2, 2)
    assert await worker.run_until_idle() == 0  # dead stays dead

    clock.advance(minutes=5)
    response = await client.post(f"{TASKS}/{task.id}/retry", headers=admin.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "queued"
    assert body["attempts"] == 0
    assert body["last_error"] is None
    assert body["finished_at"] is None
    assert datetime.fromisoformat(body["run_at"]) == clock()  # due now

    broken = False
    assert await worker.run_until_idle() == 1
    assert await worker.run_until_idle() == 0
    assert len(runs) == 3  # exactly once more
    assert runs[-1].attempt == 1
    done = await _task(session, task.id)
    assert (done.status, done.attempts) == (TaskStatus.SUCCEEDED.value, 1)

    events = await _platform_events(session)
    assert [(event.action, event.target_type, event.target_id, event.actor_id) for event in events] == [
        ("task.retried", "task", str(task.id), uuid.UUID(admin.user["id"]))
    ]
    assert events[0].details["previous_status"] == "dead"
    assert events[0].details["previous_attempts"] == 2
    assert events[0].details["previous_error"].startswith("RuntimeError: upstream down")


async def test_a_failed_task_is_retried_too_and_other_statuses_are_refused(
    client: httpx.AsyncClient, session: AsyncSession, clock: FakeClock, make_user: MakeUser
) -> None:
    admin = await _admin(make_user)
    failed = await _add(session, clock, status="failed", attempts=1, last_error="PermanentTaskError: no")
    response = await client.post(f"{TASKS}/{failed.id}/retry", headers=admin.headers)
    assert response.status_code == 200
    assert (response.json()["status"], response.json()["attempts"]) == ("queued", 0)

    for status in ("queued", "running", "succeeded", "canceled"):
        task = await _add(session, clock, status=status)
        response = await client.post(f"{TASKS}/{task.id}/retry", headers=admin.headers)
        assert response.status_code == 409, status
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["code"] == "task_not_retryable"
        assert (await _task(session, task.id)).status == status

    response = await client.post(f"{TASKS}/{uuid.uuid4()}/retry", headers=admin.headers)
    assert (response.status_code, response.json()["code"]) == (404, "task_not_found")
    response = await client.post(f"{TASKS}/not-a-uuid/retry", headers=admin.headers)
    assert response.status_code == 422
    assert [event.action for event in await _platform_events(session)] == ["task.retried"]


async def test_retry_is_refused_while_another_active_task_holds_the_unique_key(
    client: httpx.AsyncClient, session: AsyncSession, clock: FakeClock, make_user: MakeUser
) -> None:
    admin = await _admin(make_user)
    dead = await _add(session, clock, unique_key="report:1", status="dead", attempts=3)
    await _add(session, clock, unique_key="report:1")  # queued after the first one died
    response = await client.post(f"{TASKS}/{dead.id}/retry", headers=admin.headers)
    assert (response.status_code, response.json()["code"]) == (409, "task_duplicate_active")
    assert (await _task(session, dead.id)).status == "dead"
    assert await _platform_events(session) == []


async def test_cancel_a_queued_task_but_not_a_running_or_finished_one(
    client: httpx.AsyncClient,
    session: AsyncSession,
    db: Database,
    settings: Settings,
    clock: FakeClock,
    make_user: MakeUser,
) -> None:
    admin = await _admin(make_user)
    runs: list[TaskContext] = []

    async def handler(context: TaskContext) -> None:
        runs.append(context)

    queued = await _add(session, clock, "test.cancel")
    response = await client.post(f"{TASKS}/{queued.id}/cancel", headers=admin.headers)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "canceled"
    assert response.json()["finished_at"] is not None
    assert await _worker(db, settings, clock, {"test.cancel": handler}).run_until_idle() == 0
    assert runs == []

    again = await client.post(f"{TASKS}/{queued.id}/cancel", headers=admin.headers)
    assert (again.status_code, again.json()["code"]) == (409, "task_finished")
    running = await _add(session, clock, status="running", attempts=1, locked_by="w9")
    response = await client.post(f"{TASKS}/{running.id}/cancel", headers=admin.headers)
    assert (response.status_code, response.json()["code"]) == (409, "task_running")
    assert (await _task(session, running.id)).status == "running"
    for status in ("succeeded", "failed", "dead"):
        task = await _add(session, clock, status=status)
        response = await client.post(f"{TASKS}/{task.id}/cancel", headers=admin.headers)
        assert (response.status_code, response.json()["code"]) == (409, "task_finished"), status
    response = await client.post(f"{TASKS}/{uuid.uuid4()}/cancel", headers=admin.headers)
    assert (response.status_code, response.json()["code"]) == (404, "task_not_found")

    events = await _platform_events(session)
    assert [(event.action, event.target_id, event.details["previous_status"]) for event in events] == [
        ("task.canceled", str(queued.id), "queued")
    ]


async def _queued_scan(session: AsyncSession, make_user: MakeUser, make_org: MakeOrg, **values: Any) -> Scan:
    owner = await make_user("owner")
    org = await make_org(owner, slug="engines")
    repository = RepositoryFactory.create(org=org)
    fields: dict[str, Any] = {
        "repository": repository,
        "status": ScanStatus.QUEUED.value,
        "phase": ScanPhase.QUEUED.value,
        "started_at": None,
        "finished_at": None,
        "duration_ms": None,
    }
    fields.update(values)
    scan = ScanFactory.create(**fields)
    await session.flush()
    await rebuild_scan_days(session)  # the factory writes around the repository's per-day counts
    return scan


async def test_canceling_a_queued_scan_task_cancels_its_scan(
    client: httpx.AsyncClient, session: AsyncSession, clock: FakeClock, make_user: MakeUser, make_org: MakeOrg
) -> None:
    admin = await _admin(make_user)
    scan = await _queued_scan(session, make_user, make_org)
    task = await _add(session, clock, "scans.run", payload={"scan_id": str(scan.id)}, unique_key=f"scan:{scan.id}")
    response = await client.post(f"{TASKS}/{task.id}/cancel", headers=admin.headers)
    assert response.status_code == 200, response.text
    await session.refresh(scan)
    # As its owner's cancel of a queued scan leaves it.
    assert (scan.status, scan.error_code) == (ScanStatus.CANCELED.value, None)
    assert scan.cancel_requested_at == clock()
    assert scan.finished_at == clock()
    repository = await session.get(Repository, scan.repository_id, populate_existing=True)
    assert repository is not None
    assert (repository.last_scan_id, repository.last_scan_status) == (scan.id, ScanStatus.CANCELED.value)
    await assert_days_match(session)


@pytest.mark.parametrize(
    ("status", "error_code"),
    [
        (ScanStatus.FAILED.value, "clone_failed"),  # failed for its own reasons
        (ScanStatus.SUCCEEDED.value, None),
        (ScanStatus.CANCELED.value, None),
    ],
)
async def test_retrying_a_dead_scan_task_whose_scan_settled_on_its_own_does_not_run_the_scan_again(
    client: httpx.AsyncClient,
    session: AsyncSession,
    db: Database,
    settings: Settings,
    clock: FakeClock,
    make_user: MakeUser,
    make_org: MakeOrg,
    status: str,
    error_code: str | None,
) -> None:
    # The scan's outcome is not its task's doing: a retry runs the handler, which finds the scan
    # finished and skips it. The scan stays as it was; a new scan is the way to rescan.
    admin = await _admin(make_user)
    scan = await _queued_scan(
        session, make_user, make_org, status=status, error_code=error_code, finished_at=clock(), duration_ms=5
    )
    task = await _add(
        session, clock, "scans.run", payload={"scan_id": str(scan.id)}, status="dead", attempts=3, finished_at=clock()
    )
    response = await client.post(f"{TASKS}/{task.id}/retry", headers=admin.headers)
    assert response.status_code == 200, response.text
    await session.refresh(scan)
    assert (scan.status, scan.error_code) == (status, error_code)
    registry = TaskRegistry()
    scans_jobs.register_tasks(registry)
    worker = Worker(db, settings, registry, clock=clock, concurrency=1, worker_id="admin-test")
    assert await worker.run_until_idle() == 1
    assert (await _task(session, task.id)).status == TaskStatus.SUCCEEDED.value
    await session.refresh(scan)
    assert (scan.status, scan.error_code, scan.finished_at) == (status, error_code, clock())
    await assert_days_match(session)


async def test_retrying_a_failed_scan_task_queues_its_scan_failed_by_the_task(
    client: httpx.AsyncClient, session: AsyncSession, clock: FakeClock, make_user: MakeUser, make_org: MakeOrg
) -> None:
    # `failed` (not dead) task, its scan failed `internal_error` by the ended hook: queued again as
    # a fresh queued scan has it. (The run to success: tests/scans/test_abandoned.py.)
    admin = await _admin(make_user)
    queued_at = clock()
    scan = await _queued_scan(
        session,
        make_user,
        make_org,
        status=ScanStatus.FAILED.value,
        phase=ScanPhase.SCANNING.value,
        error_code="internal_error",
        error_message="The scan failed unexpectedly.",
        started_at=clock(),
        finished_at=clock(),
        duration_ms=5,
        files_total=3,
        files_done=1,
        queued_at=queued_at,
    )
    task = await _add(
        session, clock, "scans.run", payload={"scan_id": str(scan.id)}, status="failed", finished_at=clock()
    )
    await assert_days_match(session)
    clock.advance(minutes=5)
    response = await client.post(f"{TASKS}/{task.id}/retry", headers=admin.headers)
    assert response.status_code == 200, response.text
    await session.refresh(scan)
    assert (scan.status, scan.phase, scan.error_code, scan.error_message) == ("queued", "queued", None, None)
    assert (scan.started_at, scan.finished_at, scan.duration_ms, scan.cancel_requested_at) == (None,) * 4
    assert (scan.files_total, scan.files_done, scan.queued_at) == (0, 0, queued_at)
    await assert_days_match(session)


async def test_list_filters_pages_and_hides_credentials(
    client: httpx.AsyncClient, session: AsyncSession, clock: FakeClock, make_user: MakeUser
) -> None:
    admin = await _admin(make_user)
    created: list[Task] = []
    for index in range(5):
        clock.advance(seconds=1)
        status = "dead" if index % 2 else "queued"
        created.append(await _add(session, clock, "test.a" if index < 4 else "test.b", status=status))
    secret_error = "HTTPError: GET https://api.example/x?token=s3cr3t-value failed " + "x" * 5000
    clock.advance(seconds=1)
    noisy = await _add(
        session,
        clock,
        "test.c",
        payload={"url": "https://host/cb?code=abc123&state=zzz", "ids": ["cp_abcdefghijklmnop"]},
        status="failed",
        last_error=secret_error,
    )

    response = await client.get(TASKS, headers=admin.headers)
    assert response.status_code == 200, response.text
    items = response.json()["items"]
    assert [item["id"] for item in items] == [str(noisy.id), *(str(task.id) for task in reversed(created))]
    first = items[0]
    assert set(first) == {
        "id",
        "kind",
        "status",
        "priority",
        "attempts",
        "max_attempts",
        "run_at",
        "created_at",
        "started_at",
        "finished_at",
        "last_error",
        "payload",
    }
    for secret in ("s3cr3t", "abc123", "cp_abcdefgh"):
        assert secret not in response.text
    assert len(first["last_error"]) <= 520
    assert first["payload"]["url"].startswith("https://host/cb?code=[redacted]")

    async def ids(query: dict[str, str]) -> list[str]:
        listed = await client.get(TASKS, headers=admin.headers, params=query)
        assert listed.status_code == 200, listed.text
        return [item["id"] for item in listed.json()["items"]]

    assert await ids({"status": "dead"}) == [str(created[3].id), str(created[1].id)]
    assert await ids({"kind": "test.b"}) == [str(created[4].id)]
    assert await ids({"kind": "test.a", "status": "queued"}) == [str(created[2].id), str(created[0].id)]
    assert await ids({"kind": "no.such"}) == []

    seen: list[str] = []
    cursor: str | None = None
    while True:
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        page = await client.get(TASKS, headers=admin.headers, params=params)
        assert page.status_code == 200
        seen += [item["id"] for item in page.json()["items"]]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert seen == [item["id"] for item in items]

    for bad in ({"status": "exploded"}, {"limit": "0"}, {"cursor": "junk"}, {"kind": ""}, {"kind": "a\tb"}):
        response = await client.get(TASKS, headers=admin.headers, params=bad)
        assert response.status_code == 422, bad
        assert response.headers["content-type"].startswith("application/problem+json")


async def test_the_admin_routes_are_documented(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert set(paths[TASKS]) == {"get"}
    assert set(paths[f"{TASKS}/{{task_id}}/retry"]) == {"post"}
    assert set(paths[f"{TASKS}/{{task_id}}/cancel"]) == {"post"}
