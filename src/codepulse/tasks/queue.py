"""The queue's SQL: enqueue and cancel in the caller's transaction; claim, lease renewal and the
outcome of a claimed task, each write fenced on the lease; the reaper's and retention's statements.

Every write after the claim is fenced on (id, locked_by, attempts, status=running): a worker whose
lease expired, and whose task was handed to someone else, cannot overwrite the newer run.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import ColumnElement, delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from codepulse.clock import utcnow
from codepulse.db import claim_rows, notify, rowcount, upsert
from codepulse.hooks import HookRegistry
from codepulse.tasks.models import (
    ACTIVE_STATUSES,
    ACTIVE_UNIQUE_KEY_PREDICATE,
    FINISHED_STATUSES,
    TASKS,
    Task,
    TaskStatus,
)

log = structlog.get_logger("codepulse.tasks")

# NOTIFY channel; the payload is the task's kind.
CHANNEL = "codepulse_tasks"
ERROR_MAX_LENGTH = 4000
# Retry delays double per attempt up to this ceiling (a task with many attempts still retries daily).
MAX_RETRY_DELAY = timedelta(days=1)
REAP_BATCH = 500


@dataclass(frozen=True)
class EndedTask:
    """A task that ended without succeeding (`dead` after its last attempt, `failed`, or
    `canceled` while queued by a superuser: `tasks.admin.cancel_task`), as the `on_task_ended`
    hooks see it."""

    id: uuid.UUID
    kind: str
    payload: dict[str, Any]
    status: TaskStatus
    error: str
    lease_expired: bool
    """True when its worker stopped renewing the lease (crashed, killed, hung), not a handler error."""
    finished_at: datetime


task_ended_hooks: HookRegistry[EndedTask] = HookRegistry("task.ended")
on_task_ended = task_ended_hooks.register
"""Register `async (session, ended) -> None`: the domain that queued a task settles its own state
(a scan stuck `running` otherwise) in the same transaction that ends the task. A domain's own
cancel (`cancel_queued`, e.g. a scan's) runs no hooks: it settles its state itself."""


@dataclass(frozen=True)
class RetriedTask:
    """A `dead` or `failed` task a superuser queues again (`tasks.admin.retry_task`), as the
    `on_task_retry` hooks see it: already `queued` again in the caller's transaction."""

    id: uuid.UUID
    kind: str
    payload: dict[str, Any]
    previous_status: TaskStatus
    previous_error: str | None
    retried_at: datetime


task_retry_hooks: HookRegistry[RetriedTask] = HookRegistry("task.retry")
on_task_retry = task_retry_hooks.register
"""Register `async (session, retried) -> None`: the domain that queued a task puts its own state
back for the re-run (a scan its dead task failed is queued again) in the retry's transaction. A
hook raising a domain error refuses the retry: nothing of it stays (the task stays as it was)."""


# --- enqueue and cancel (in the caller's transaction) ------------------------------------------


async def enqueue(
    session: AsyncSession,
    kind: str,
    payload: dict[str, Any],
    *,
    now: datetime,
    priority: int = 0,
    run_at: datetime | None = None,
    max_attempts: int | None = None,
    unique_key: str | None = None,
) -> Task:
    """Add a task in the caller's transaction (flushed, not committed); higher `priority` first.

    With `unique_key`, an active (queued or running) task with that key is returned instead of
    adding another. On PostgreSQL, workers are notified when the transaction commits.
    """
    if max_attempts is not None and max_attempts < 1:
        raise ValueError("max_attempts must be at least 1")
    values: dict[str, Any] = {
        "id": uuid.uuid4(),
        "kind": kind,
        "payload": payload,
        "status": TaskStatus.QUEUED.value,
        "priority": priority,
        "run_at": run_at or now,
        "attempts": 0,
        "max_attempts": max_attempts,
        "unique_key": unique_key,
        "created_at": now,
        "updated_at": now,
    }
    task: Task | None
    if unique_key is None:
        task = Task(**values)
        session.add(task)
        await session.flush()
    else:
        task = await _enqueue_unique(session, values, unique_key)
        if task.id != values["id"]:
            return task  # the active task with the key: nothing new to wake workers for
    await notify(session, CHANNEL, kind)
    return task


async def _enqueue_unique(session: AsyncSession, values: dict[str, Any], unique_key: str) -> Task:
    # INSERT ... ON CONFLICT DO NOTHING on the partial unique index: a concurrent enqueue of the
    # same key waits for the other transaction instead of failing (and aborting ours) on commit.
    statement = upsert(session, TASKS, conflict=["unique_key"], index_where=ACTIVE_UNIQUE_KEY_PREDICATE)
    for _ in range(3):
        inserted = (await session.execute(statement.values(values).returning(TASKS.c.id))).scalar_one_or_none()
        if inserted is not None:
            task = await session.get(Task, inserted)
        else:
            task = await session.scalar(
                select(Task).where(Task.unique_key == unique_key, Task.status.in_(ACTIVE_STATUSES))
            )
        if task is not None:
            return task
        # The conflicting task finished between our insert and our read: insert again.
    raise RuntimeError(f"could not enqueue task with unique_key {unique_key!r}")  # pragma: no cover


async def cancel_queued(session: AsyncSession, task_id: uuid.UUID, *, now: datetime | None = None) -> bool:
    """queued -> canceled in the caller's transaction; False when the task is not queued (a
    running task is stopped by its handler, which watches its own domain's state)."""
    moment = now or utcnow()
    result = await session.execute(
        update(Task)
        .where(Task.id == task_id, Task.status == TaskStatus.QUEUED.value)
        .values(status=TaskStatus.CANCELED.value, finished_at=moment, updated_at=moment)
    )
    return rowcount(result) == 1


# --- the worker side: claim, heartbeat, outcome -------------------------------------------------


@dataclass(frozen=True)
class ClaimedTask:
    """A task this worker holds a lease on; (id, worker_id, attempts) fences every later write."""

    id: uuid.UUID
    kind: str
    payload: dict[str, Any]
    attempts: int
    max_attempts: int
    worker_id: str


def retry_delay(backoff_seconds: float, attempts: int) -> timedelta:
    """TASK_RETRY_BACKOFF_SECONDS * 2**(attempts-1), capped at MAX_RETRY_DELAY."""
    exponent = min(max(attempts - 1, 0), 32)  # 2**32 backoffs are far past the cap already
    return min(timedelta(seconds=backoff_seconds * 2**exponent), MAX_RETRY_DELAY)


async def claim_tasks(
    session: AsyncSession,
    *,
    worker_id: str,
    now: datetime,
    lease_seconds: float,
    limit: int,
    default_max_attempts: int,
    kinds: Sequence[str] | None = None,
) -> list[ClaimedTask]:
    """Lease up to `limit` due queued tasks (of `kinds`, if given), highest priority first, then
    oldest run_at. Call in a write session (`Database.transaction()`)."""
    if limit < 1 or (kinds is not None and not kinds):
        return []
    where: list[ColumnElement[bool]] = [TASKS.c.status == TaskStatus.QUEUED.value, TASKS.c.run_at <= now]
    if kinds is not None:
        where.append(TASKS.c.kind.in_(list(kinds)))
    rows = await claim_rows(
        session,
        TASKS,
        where=where,
        order_by=[TASKS.c.priority.desc(), TASKS.c.run_at, TASKS.c.created_at],
        limit=limit,
        values={
            "status": TaskStatus.RUNNING.value,
            "locked_by": worker_id,
            "locked_until": now + timedelta(seconds=lease_seconds),
            "attempts": TASKS.c.attempts + 1,
            "started_at": now,
            "updated_at": now,
        },
        returning=["id", "kind", "payload", "attempts", "max_attempts"],
    )
    return [
        ClaimedTask(
            id=row.id,
            kind=row.kind,
            payload=row.payload,
            attempts=row.attempts,
            max_attempts=row.max_attempts if row.max_attempts is not None else default_max_attempts,
            worker_id=worker_id,
        )
        for row in rows
    ]


def _held(claimed: ClaimedTask) -> list[ColumnElement[bool]]:
    # attempts too: the same worker may re-claim its own task after losing the lease (a stalled
    # heartbeat), and the stale run must not settle the new one.
    return [
        TASKS.c.id == claimed.id,
        TASKS.c.locked_by == claimed.worker_id,
        TASKS.c.attempts == claimed.attempts,
        TASKS.c.status == TaskStatus.RUNNING.value,
    ]


async def renew_lease(session: AsyncSession, claimed: ClaimedTask, *, now: datetime, lease_seconds: float) -> bool:
    """Extend the lease; False when it is no longer ours (expired and reaped, or re-claimed)."""
    result = await session.execute(
        update(TASKS).where(*_held(claimed)).values(locked_until=now + timedelta(seconds=lease_seconds), updated_at=now)
    )
    return rowcount(result) == 1


async def complete_task(session: AsyncSession, claimed: ClaimedTask, *, now: datetime) -> bool:
    """running -> succeeded; False (nothing written) when the lease is no longer ours."""
    result = await session.execute(
        update(TASKS)
        .where(*_held(claimed))
        .values(status=TaskStatus.SUCCEEDED.value, locked_until=None, finished_at=now, updated_at=now)
    )
    return rowcount(result) == 1


async def fail_task(
    session: AsyncSession,
    claimed: ClaimedTask,
    *,
    now: datetime,
    error: str,
    backoff_seconds: float,
    permanent: bool = False,
) -> TaskStatus | None:
    """Record a failed attempt: `failed` when permanent, `dead` after the last attempt, otherwise
    queued again after the backoff. None (nothing written) when the lease is no longer ours."""
    values: dict[str, Any] = {"last_error": error[:ERROR_MAX_LENGTH], "locked_until": None, "updated_at": now}
    if permanent:
        status = TaskStatus.FAILED
    elif claimed.attempts >= claimed.max_attempts:
        status = TaskStatus.DEAD
    else:
        status = TaskStatus.QUEUED
        values.update(run_at=now + retry_delay(backoff_seconds, claimed.attempts), locked_by=None)
    if status is not TaskStatus.QUEUED:
        values["finished_at"] = now
    result = await session.execute(update(TASKS).where(*_held(claimed)).values(status=status.value, **values))
    if rowcount(result) != 1:
        return None
    if status is not TaskStatus.QUEUED:
        ended = EndedTask(claimed.id, claimed.kind, claimed.payload, status, values["last_error"], False, now)
        await run_ended_hooks(session, ended)
    return status


async def release_task(session: AsyncSession, claimed: ClaimedTask, *, now: datetime) -> bool:
    """Give the task back unfinished (worker shutdown): queued again at once, and the attempt is
    not counted — the handler did not fail, it was interrupted."""
    result = await session.execute(
        update(TASKS)
        .where(*_held(claimed))
        .values(
            status=TaskStatus.QUEUED.value,
            attempts=TASKS.c.attempts - 1,
            run_at=now,
            locked_by=None,
            locked_until=None,
            updated_at=now,
        )
    )
    return rowcount(result) == 1


# --- the reaper and retention (run as scheduler jobs, see jobs.py) -------------------------------


async def reap_expired(
    session: AsyncSession, *, now: datetime, default_max_attempts: int, limit: int = REAP_BATCH
) -> int:
    """Tasks whose lease expired (their worker died or hung): queued again at once (a crash is not
    a failure of the task: no backoff), or `dead` after their last attempt, which runs the
    `on_task_ended` hooks in this transaction. Returns how many were reaped."""
    expired = (
        await session.execute(
            select(TASKS.c.id, TASKS.c.kind, TASKS.c.payload, TASKS.c.attempts, TASKS.c.max_attempts, TASKS.c.locked_by)
            .where(TASKS.c.status == TaskStatus.RUNNING.value, TASKS.c.locked_until < now)
            .order_by(TASKS.c.id)
            .limit(limit)
            # PostgreSQL: reapers on several replicas split the rows instead of queueing on them.
            # SQLite ignores it (the write transaction is the lock).
            .with_for_update(skip_locked=True)
        )
    ).all()
    reaped = 0
    for row in expired:
        max_attempts = row.max_attempts if row.max_attempts is not None else default_max_attempts
        error = f"lease expired: worker {row.locked_by} stopped renewing it"
        values: dict[str, Any] = {"locked_by": None, "locked_until": None, "updated_at": now, "last_error": error}
        dead = row.attempts >= max_attempts
        if dead:
            values.update(status=TaskStatus.DEAD.value, finished_at=now)
        else:
            values.update(status=TaskStatus.QUEUED.value, run_at=now)
        result = await session.execute(
            update(TASKS)
            .where(
                TASKS.c.id == row.id,
                TASKS.c.status == TaskStatus.RUNNING.value,
                TASKS.c.attempts == row.attempts,
                TASKS.c.locked_until < now,
            )
            .values(values)
        )
        if rowcount(result) != 1:
            continue
        reaped += 1
        log.warning(
            "task.lease_expired",
            task_id=str(row.id),
            kind=row.kind,
            attempt=row.attempts,
            worker=row.locked_by,
            status=values["status"],
        )
        if dead:
            ended = EndedTask(row.id, row.kind, dict(row.payload or {}), TaskStatus.DEAD, error, True, now)
            await run_ended_hooks(session, ended)
    return reaped


async def run_ended_hooks(session: AsyncSession, ended: EndedTask) -> None:
    """The hooks, in a savepoint of the caller's transaction: a failing hook is logged and undone,
    and never keeps the task from ending (nor the reaper from reaping the others)."""
    try:
        async with session.begin_nested():
            await task_ended_hooks.run(session, ended)
    except Exception:
        log.exception("task.ended_hook_failed", task_id=str(ended.id), kind=ended.kind)


async def task_status(session: AsyncSession, task_id: uuid.UUID) -> TaskStatus | None:
    """A task's status; None when there is no such task (never queued, or pruned)."""
    status = await session.scalar(select(TASKS.c.status).where(TASKS.c.id == task_id))
    return TaskStatus(status) if status is not None else None


async def prune_finished(session: AsyncSession, *, before: datetime) -> int:
    """Delete finished tasks (succeeded, failed, canceled, dead) that finished before `before`."""
    result = await session.execute(
        delete(TASKS).where(TASKS.c.status.in_(FINISHED_STATUSES), TASKS.c.finished_at < before)
    )
    return rowcount(result)
