"""Operators' actions on the queue: list tasks, retry a dead or failed one, cancel a queued one.

The HTTP routes (superusers only, audited) are `codepulse.admin`; these functions run in the
caller's transaction and raise `codepulse.errors` problems:

- `retry_task`: `dead` or `failed` -> `queued`, due now, attempts 0, lease and last error
  cleared; anything else is 409 `task_not_retryable`. The `on_task_retry` hooks run in the same
  transaction, so the domain that queued it puts its state back for the re-run (a `scans.run`
  whose scan its death failed queues the scan again) or refuses the retry with a problem of its
  own (then nothing changes). Handlers are idempotent and check their own domain's state, so a
  task whose owner settled the outcome for good (a `scans.run` whose scan failed on its own; a
  `mail.deliver` whose message is `failed`) runs and does nothing.
  A task with a `unique_key` that another active task holds now is 409 `task_duplicate_active`.
- `cancel_task`: `queued` -> `canceled` (`cancel_queued`), and the `on_task_ended` hooks run
  with status `canceled`, so the domain that queued it settles its own state (its scan or mail
  does not stay queued forever). `running` is 409 `task_running` (the queue cannot stop a
  handler; the domain's own cancel can, e.g. a scan's); finished is 409 `task_finished`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from codepulse.db import notify, rowcount
from codepulse.errors import Conflict, NotFound
from codepulse.pagination import PageRequest, SortKey, paginate
from codepulse.tasks.models import FINISHED_STATUSES, Task, TaskStatus
from codepulse.tasks.queue import CHANNEL, EndedTask, RetriedTask, cancel_queued, run_ended_hooks, task_retry_hooks

RETRYABLE_STATUSES = (TaskStatus.DEAD.value, TaskStatus.FAILED.value)
CANCELED_ERROR = "canceled by a superuser"


@dataclass(frozen=True)
class TaskChange:
    """A task after an operator's action, and what it was before (for the audit event)."""

    task: Task
    previous_status: TaskStatus
    previous_attempts: int
    previous_error: str | None


async def list_tasks(
    session: AsyncSession, *, params: PageRequest, status: TaskStatus | None = None, kind: str | None = None
) -> tuple[list[Task], str | None]:
    """Newest first (by creation), optionally of one status and one kind."""
    query = select(Task)
    if status is not None:
        query = query.where(Task.status == status.value)
    if kind is not None:
        query = query.where(Task.kind == kind)
    return await paginate(session, query, order=[SortKey(Task.created_at, "desc")], params=params)


async def _get(session: AsyncSession, task_id: uuid.UUID) -> Task:
    task = await session.get(Task, task_id, populate_existing=True)
    if task is None:
        raise NotFound("No task has this id (it may have been pruned).", code="task_not_found")
    return task


async def retry_task(session: AsyncSession, task_id: uuid.UUID, *, now: datetime) -> TaskChange:
    """A `dead` or `failed` task queued again, due now, with its attempts reset; the
    `on_task_retry` hooks run in the same savepoint (one raising refuses the retry)."""
    task = await _get(session, task_id)
    previous = TaskStatus(task.status)
    before = (task.attempts, task.last_error)
    if task.status not in RETRYABLE_STATUSES:
        raise Conflict(
            f"A {task.status} task cannot be retried; only dead or failed ones can.", code="task_not_retryable"
        )
    # One savepoint for the retry and its hooks: a hook refusing it leaves the task as it was,
    # even for a caller that goes on with its transaction.
    async with session.begin_nested():
        try:
            # A savepoint: the unique index refusing the row must not abort the caller's transaction.
            async with session.begin_nested():
                result = await session.execute(
                    update(Task)
                    .where(Task.id == task_id, Task.status.in_(RETRYABLE_STATUSES))
                    .values(
                        status=TaskStatus.QUEUED.value,
                        attempts=0,
                        run_at=now,
                        locked_by=None,
                        locked_until=None,
                        last_error=None,
                        started_at=None,
                        finished_at=None,
                        updated_at=now,
                    )
                    .execution_options(synchronize_session=False)
                )
        except IntegrityError:
            raise Conflict(
                "Another queued or running task holds this task's unique key; it cannot be queued beside it.",
                code="task_duplicate_active",
            ) from None
        if rowcount(result) != 1:  # retried or pruned meanwhile
            raise Conflict("The task changed meanwhile; look at it again.", code="task_not_retryable")
        retried = RetriedTask(task.id, task.kind, dict(task.payload or {}), previous, before[1], now)
        await task_retry_hooks.run(session, retried)
    await notify(session, CHANNEL, task.kind)
    return TaskChange(await _get(session, task_id), previous, *before)


async def cancel_task(session: AsyncSession, task_id: uuid.UUID, *, now: datetime) -> TaskChange:
    """A `queued` task canceled; the `on_task_ended` hooks settle its owner's state."""
    task = await _get(session, task_id)
    before = (task.attempts, task.last_error)
    if not await cancel_queued(session, task_id, now=now):
        status = (await _get(session, task_id)).status
        if status == TaskStatus.RUNNING.value:
            raise Conflict(
                "The task is running; the queue cannot stop its handler (cancel what it works on instead).",
                code="task_running",
            )
        if status in FINISHED_STATUSES:
            raise Conflict(f"The task has already finished ({status}).", code="task_finished")
        raise Conflict("The task changed meanwhile; look at it again.", code="task_conflict")  # pragma: no cover
    payload: dict[str, Any] = dict(task.payload or {})
    ended = EndedTask(task.id, task.kind, payload, TaskStatus.CANCELED, CANCELED_ERROR, False, now)
    await run_ended_hooks(session, ended)
    return TaskChange(await _get(session, task_id), TaskStatus.QUEUED, *before)


STATS_STATUSES = (TaskStatus.QUEUED.value, TaskStatus.RUNNING.value, TaskStatus.DEAD.value)


@dataclass(frozen=True)
class QueueStats:
    by_kind: dict[str, dict[str, int]]  # kind -> status (queued, running, dead) -> tasks
    oldest_due_at: datetime | None  # the earliest due time of a queued task already due


async def queue_stats(session: AsyncSession, *, now: datetime) -> QueueStats:
    """Queued, running and dead tasks per kind (two aggregates on the (status, run_at) index);
    the oldest due time among queued tasks due by `now` (how long the queue has kept one waiting;
    tasks due later, delayed or backing off, are not late)."""
    rows = await session.execute(
        select(Task.kind, Task.status, func.count())
        .where(Task.status.in_(STATS_STATUSES))
        .group_by(Task.kind, Task.status)
    )
    by_kind: dict[str, dict[str, int]] = {}
    for kind, status, count in rows.all():
        by_kind.setdefault(str(kind), dict.fromkeys(STATS_STATUSES, 0))[str(status)] = int(count)
    oldest = await session.scalar(
        select(func.min(Task.run_at)).where(Task.status == TaskStatus.QUEUED.value, Task.run_at <= now)
    )
    return QueueStats(by_kind=dict(sorted(by_kind.items())), oldest_due_at=oldest)
