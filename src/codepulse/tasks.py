"""Durable task queue: background work that survives a crash of the process that runs it.

- `enqueue(session, kind, payload, ...)` adds a task inside the caller's transaction, so the task
  exists if and only if the business write committed. Handlers are registered per kind by the
  domain that owns them (`register_tasks(registry)` in `codepulse.<domain>.jobs`).
- A `Worker` claims due tasks with a lease (`claim_rows` in db.py: SKIP LOCKED on PostgreSQL, the
  BEGIN IMMEDIATE write lock on SQLite), renews the lease while the handler runs, and records the
  outcome. Every write after the claim is fenced on (id, locked_by, attempts, status=running): a
  worker whose lease expired, and whose task was handed to someone else, cannot overwrite the
  newer run — its result is logged and dropped.
- A handler exception retries with exponential backoff until max_attempts, then the task is
  `dead`; `PermanentTaskError` fails it at once. A reaper (scheduler job) re-queues tasks whose
  lease expired (their worker died) the same way, and prunes old finished tasks.
- Wake-up: PostgreSQL NOTIFY from enqueue (delivered at commit) to a LISTEN connection per worker,
  with polling every TASK_POLL_SECONDS as the fallback; SQLite polls.

Delivery is at least once: a handler must be idempotent (a crash after its work committed but
before the task was marked succeeded runs it again).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any, cast

import structlog
from sqlalchemy import JSON, ColumnElement, Index, Integer, Result, String, Table, Text, delete, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from codepulse.clock import ClockFunc, utcnow
from codepulse.config import Settings
from codepulse.db import Base, Database, Listener, Timestamps, UUIDPrimaryKey, claim_rows, listen, notify, upsert
from codepulse.scheduler import domain_jobs_modules

if TYPE_CHECKING:
    from codepulse.scheduler import JobContext, Scheduler

log = structlog.get_logger("codepulse.tasks")

# NOTIFY channel; the payload is the task's kind.
CHANNEL = "codepulse_tasks"
ERROR_MAX_LENGTH = 4000
# Retry delays double per attempt up to this ceiling (a task with many attempts still retries daily).
MAX_RETRY_DELAY = timedelta(days=1)
# How often the reaper looks for expired leases (it also bounds how late after expiry it acts).
REAP_EVERY = timedelta(seconds=30)
REAP_BATCH = 500


class TaskStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"
    DEAD = "dead"


# Statuses in which a unique_key is taken: a second enqueue with the key returns the active task.
ACTIVE_STATUSES = (TaskStatus.QUEUED.value, TaskStatus.RUNNING.value)
FINISHED_STATUSES = (
    TaskStatus.SUCCEEDED.value,
    TaskStatus.FAILED.value,
    TaskStatus.CANCELED.value,
    TaskStatus.DEAD.value,
)
# The partial unique index's predicate; ON CONFLICT must repeat it to target that index.
_ACTIVE_PREDICATE = text("status IN ('queued', 'running') AND unique_key IS NOT NULL")


class Task(UUIDPrimaryKey, Timestamps, Base):
    __tablename__ = "tasks"
    __table_args__ = (
        # The claim scans queued tasks by due time; the reaper looks at running ones by lease.
        Index("ix_tasks_status_run_at", "status", "run_at"),
        Index("ix_tasks_finished_at", "finished_at"),
        # At most one active task per unique_key, enforced by the database so concurrent
        # enqueues cannot both insert (enqueue uses it as its ON CONFLICT target).
        Index(
            "uq_tasks_active_unique_key",
            "unique_key",
            unique=True,
            postgresql_where=_ACTIVE_PREDICATE,
            sqlite_where=_ACTIVE_PREDICATE,
        ),
    )

    kind: Mapped[str] = mapped_column(String(100))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(20))
    priority: Mapped[int] = mapped_column(Integer, default=0)
    run_at: Mapped[datetime]
    # Claims so far, the current one included (a lease released at shutdown gives its claim back).
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # NULL: TASK_MAX_ATTEMPTS of the worker that handles it.
    max_attempts: Mapped[int | None] = mapped_column(Integer)
    locked_by: Mapped[str | None] = mapped_column(String(200))
    locked_until: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    unique_key: Mapped[str | None] = mapped_column(String(255))
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


TASKS = cast(Table, Task.__table__)


class PermanentTaskError(Exception):
    """Raised by a handler for a failure that retrying cannot fix: the task fails at once."""


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
    statement = upsert(session, TASKS, conflict=["unique_key"], index_where=_ACTIVE_PREDICATE)
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
    return _rowcount(result) == 1


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
    return _rowcount(result) == 1


async def complete_task(session: AsyncSession, claimed: ClaimedTask, *, now: datetime) -> bool:
    """running -> succeeded; False (nothing written) when the lease is no longer ours."""
    result = await session.execute(
        update(TASKS)
        .where(*_held(claimed))
        .values(status=TaskStatus.SUCCEEDED.value, locked_until=None, finished_at=now, updated_at=now)
    )
    return _rowcount(result) == 1


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
    return status if _rowcount(result) == 1 else None


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
    return _rowcount(result) == 1


async def reap_expired(
    session: AsyncSession, *, now: datetime, backoff_seconds: float, default_max_attempts: int, limit: int = REAP_BATCH
) -> int:
    """Tasks whose lease expired (their worker died or hung): queued again with backoff, or `dead`
    after their last attempt. Returns how many were reaped."""
    expired = (
        await session.execute(
            select(TASKS.c.id, TASKS.c.kind, TASKS.c.attempts, TASKS.c.max_attempts, TASKS.c.locked_by)
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
        values: dict[str, Any] = {
            "locked_by": None,
            "locked_until": None,
            "updated_at": now,
            "last_error": f"lease expired: worker {row.locked_by} stopped renewing it",
        }
        if row.attempts >= max_attempts:
            values.update(status=TaskStatus.DEAD.value, finished_at=now)
        else:
            values.update(status=TaskStatus.QUEUED.value, run_at=now + retry_delay(backoff_seconds, row.attempts))
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
        if _rowcount(result) == 1:
            reaped += 1
            log.warning(
                "task.lease_expired",
                task_id=str(row.id),
                kind=row.kind,
                attempt=row.attempts,
                worker=row.locked_by,
                status=values["status"],
            )
    return reaped


async def prune_finished(session: AsyncSession, *, before: datetime) -> int:
    """Delete finished tasks (succeeded, failed, canceled, dead) that finished before `before`."""
    result = await session.execute(
        delete(TASKS).where(TASKS.c.status.in_(FINISHED_STATUSES), TASKS.c.finished_at < before)
    )
    return _rowcount(result)


def _rowcount(result: Result[Any]) -> int:
    return int(getattr(result, "rowcount", 0) or 0)


# --- handlers ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskContext:
    """What a handler receives. It opens its own sessions (`database.transaction()`) per unit of
    work; `attempt` counts from 1."""

    task_id: uuid.UUID
    kind: str
    payload: dict[str, Any]
    attempt: int
    database: Database
    settings: Settings
    clock: ClockFunc
    worker_id: str


TaskHandler = Callable[[TaskContext], Awaitable[None]]


class TaskRegistry:
    """Handlers by task kind. Workers claim only the kinds they have a handler for."""

    def __init__(self) -> None:
        self._handlers: dict[str, TaskHandler] = {}

    def register(self, kind: str, handler: TaskHandler) -> None:
        if kind in self._handlers:
            raise ValueError(f"task kind {kind!r} is already registered")
        self._handlers[kind] = handler

    def get(self, kind: str) -> TaskHandler | None:
        return self._handlers.get(kind)

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(sorted(self._handlers))


def discover_task_handlers(registry: TaskRegistry) -> None:
    """Call `register_tasks(registry)` of every `codepulse.<domain>.jobs` module that has one."""
    for jobs_module in domain_jobs_modules():
        register_tasks = getattr(jobs_module, "register_tasks", None)
        if register_tasks is not None:
            register_tasks(registry)


# --- scheduler jobs: the reaper and retention ---------------------------------------------------


def register_jobs(scheduler: Scheduler) -> None:
    """The queue's periodic jobs (called by `discover_jobs`)."""
    scheduler.add("tasks.reap_expired", reap_expired_job, every=REAP_EVERY)
    scheduler.add("tasks.prune", prune_tasks_job, cron="29 3 * * *")


async def reap_expired_job(context: JobContext) -> None:
    # The tick's time, not the wall clock: replicas agree on it and tests control it. A lease is
    # reaped within REAP_EVERY of expiring.
    settings = context.settings
    async with context.database.transaction() as session:
        reaped = await reap_expired(
            session,
            now=context.scheduled_for,
            backoff_seconds=settings.TASK_RETRY_BACKOFF_SECONDS,
            default_max_attempts=settings.TASK_MAX_ATTEMPTS,
        )
    if reaped:
        log.info("tasks.reaped", count=reaped)


async def prune_tasks_job(context: JobContext) -> None:
    cutoff = context.scheduled_for - timedelta(days=context.settings.TASKS_RETENTION_DAYS)
    async with context.database.transaction() as session:
        deleted = await prune_finished(session, before=cutoff)
    log.info("tasks.pruned", deleted=deleted)


# --- the worker ----------------------------------------------------------------------------------


def _default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Worker:
    """Runs up to `concurrency` tasks at once in this process's event loop.

    `start()` launches the claim loop (woken by NOTIFY, by a finished task, or every
    TASK_POLL_SECONDS); `stop()` stops claiming, lets running tasks finish within the grace
    period, then cancels the rest and releases their leases. Tests drive it with
    `run_until_idle()` and an injected clock instead.
    """

    def __init__(
        self,
        database: Database,
        settings: Settings,
        registry: TaskRegistry,
        *,
        clock: ClockFunc = utcnow,
        concurrency: int | None = None,
        worker_id: str | None = None,
    ) -> None:
        self.database = database
        self.settings = settings
        self.registry = registry
        self.clock = clock
        self.concurrency = settings.WORKER_CONCURRENCY if concurrency is None else concurrency
        self.worker_id = worker_id or _default_worker_id()
        self._wake = asyncio.Event()
        self._stopping = False
        self._loop_task: asyncio.Task[None] | None = None
        self._running: dict[asyncio.Task[None], ClaimedTask] = {}
        self._listener: Listener | None = None
        self._listener_failed = False
        self._claim_failing = False

    @property
    def running(self) -> bool:
        return self._loop_task is not None and not self._loop_task.done()

    @property
    def active_tasks(self) -> int:
        return len(self._running)

    @property
    def listening(self) -> bool:
        """True while a PostgreSQL LISTEN connection wakes this worker (otherwise it polls)."""
        return self._listener is not None and self._listener.alive

    async def start(self) -> None:
        if self.running:
            return
        if self.concurrency < 1:
            raise ValueError("a worker needs a concurrency of at least 1")
        self._stopping = False
        await self._ensure_listener()
        self._loop_task = asyncio.create_task(self._claim_loop(), name=f"worker:{self.worker_id}")
        log.info(
            "worker.started",
            worker=self.worker_id,
            concurrency=self.concurrency,
            kinds=list(self.registry.kinds),
            wake_up="notify" if self._listener is not None else "poll",
        )

    async def stop(self, grace_seconds: float | None = None) -> None:
        """Stop claiming; give running tasks `grace_seconds` (WORKER_SHUTDOWN_GRACE_SECONDS by
        default) to finish, then cancel them, which releases their leases."""
        if self._loop_task is None:
            return
        grace = self.settings.WORKER_SHUTDOWN_GRACE_SECONDS if grace_seconds is None else grace_seconds
        self._stopping = True
        self._wake.set()
        # The loop exits at its next check; a claim in flight completes, so no lease is orphaned.
        await asyncio.wait({self._loop_task})
        self._loop_task = None
        running = set(self._running)
        if running:
            log.info("worker.draining", worker=self.worker_id, tasks=len(running), grace_seconds=grace)
            _done, pending = await asyncio.wait(running, timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        if self._listener is not None:
            try:
                await self._listener.close()
            except Exception:
                log.warning("worker.listener_close_failed", worker=self.worker_id, exc_info=True)
            self._listener = None
        log.info("worker.stopped", worker=self.worker_id)

    async def run_until_idle(self) -> int:
        """Claim and run due tasks (up to `concurrency` at a time, at least one) until none is
        due at `clock()`; the number run. For tests and one-shot use, without `start()`."""
        done = 0
        while True:
            claimed = await self._claim(max(self.concurrency, 1))
            if not claimed:
                return done
            await asyncio.gather(*(self._execute(task) for task in claimed))
            done += len(claimed)

    # -- internals --

    async def _claim_loop(self) -> None:
        poll = self.settings.TASK_POLL_SECONDS
        while not self._stopping:
            # Cleared before claiming: a NOTIFY that arrives during the claim wakes the next round.
            self._wake.clear()
            free = self.concurrency - len(self._running)
            if free > 0:
                try:
                    claimed = await self._claim(free)
                except Exception:
                    # The database is away: keep polling, and say so once per outage.
                    if not self._claim_failing:
                        log.warning("worker.claim_failed", worker=self.worker_id, exc_info=True)
                    self._claim_failing = True
                    claimed = []
                else:
                    if self._claim_failing:
                        log.info("worker.claim_restored", worker=self.worker_id)
                    self._claim_failing = False
                for task in claimed:
                    self._spawn(task)
                if claimed and len(claimed) == free:
                    continue  # all slots filled; the next finished task wakes us
            if self._stopping:
                break
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=poll)
            except TimeoutError:
                await self._ensure_listener()

    async def _claim(self, limit: int) -> list[ClaimedTask]:
        kinds = self.registry.kinds
        if not kinds:
            return []
        now = self.clock()
        # A read first: an idle worker polling every second must not take SQLite's write lock
        # (BEGIN IMMEDIATE) each time, holding up the API's writers for nothing.
        async with self.database.transaction(write=False) as session:
            due = await session.scalar(
                select(TASKS.c.id)
                .where(TASKS.c.status == TaskStatus.QUEUED.value, TASKS.c.run_at <= now, TASKS.c.kind.in_(kinds))
                .limit(1)
            )
        if due is None:
            return []
        async with self.database.transaction() as session:
            return await claim_tasks(
                session,
                worker_id=self.worker_id,
                now=now,
                lease_seconds=self.settings.TASK_LEASE_SECONDS,
                limit=limit,
                default_max_attempts=self.settings.TASK_MAX_ATTEMPTS,
                kinds=kinds,
            )

    def _spawn(self, claimed: ClaimedTask) -> None:
        task = asyncio.create_task(self._execute(claimed), name=f"task:{claimed.kind}:{claimed.id}")
        self._running[task] = claimed
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.pop(task, None)
        self._wake.set()  # a slot is free

    def _on_notify(self, kind: str) -> None:
        if self.registry.get(kind) is not None:
            self._wake.set()

    async def _ensure_listener(self) -> None:
        """(Re)open the LISTEN connection on PostgreSQL; on failure the worker just polls."""
        if self.database.dialect != "postgresql" or self._stopping:
            return
        if self._listener is not None:
            if self._listener.alive:
                return
            log.warning("worker.listener_lost", worker=self.worker_id)
            try:
                await self._listener.close()
            except Exception:
                log.debug("worker.listener_close_failed", exc_info=True)
            self._listener = None
        try:
            self._listener = await listen(self.database, CHANNEL, self._on_notify)
        except Exception:
            if not self._listener_failed:  # once per outage, not once per poll
                log.warning("worker.listen_failed", worker=self.worker_id, exc_info=True)
            self._listener_failed = True
            return
        if self._listener_failed:
            log.info("worker.listen_restored", worker=self.worker_id)
        self._listener_failed = False

    async def _execute(self, claimed: ClaimedTask) -> None:
        handler = self.registry.get(claimed.kind)
        context = TaskContext(
            task_id=claimed.id,
            kind=claimed.kind,
            payload=claimed.payload,
            attempt=claimed.attempts,
            database=self.database,
            settings=self.settings,
            clock=self.clock,
            worker_id=self.worker_id,
        )
        fields = {"task_id": str(claimed.id), "kind": claimed.kind, "attempt": claimed.attempts}
        log.info("task.started", worker=self.worker_id, **fields)
        current = asyncio.current_task()
        lease_lost = asyncio.Event()
        keeper = asyncio.create_task(self._keep_lease(claimed, current, lease_lost))
        failure: Exception | None = None
        try:
            if handler is None:  # claims are filtered by kind; a registry changed under us
                raise PermanentTaskError(f"no handler for task kind {claimed.kind!r}")
            await handler(context)
        except asyncio.CancelledError:
            keeper.cancel()
            if lease_lost.is_set() and current is not None:
                # We cancelled it ourselves: the task belongs to another run now.
                current.uncancel()
                log.warning("task.abandoned", reason="lease lost", **fields)
                return
            # Shutdown: give the task back for another worker, without counting the attempt.
            await _uninterrupted(self._settle(claimed, None, release=True))
            raise
        except Exception as exc:
            failure = exc
        finally:
            keeper.cancel()
        # A shutdown that cancels us now must not lose the outcome of work already done (the
        # task would run again after its lease expired).
        await _uninterrupted(self._settle(claimed, failure))

    async def _keep_lease(
        self, claimed: ClaimedTask, runner: asyncio.Task[Any] | None, lease_lost: asyncio.Event
    ) -> None:
        # Renew three times per lease, so one slow or failed renewal does not lose it.
        interval = self.settings.TASK_LEASE_SECONDS / 3
        while True:
            await asyncio.sleep(interval)
            try:
                async with self.database.transaction() as session:
                    held = await renew_lease(
                        session, claimed, now=self.clock(), lease_seconds=self.settings.TASK_LEASE_SECONDS
                    )
            except Exception:
                log.warning("task.heartbeat_failed", task_id=str(claimed.id), exc_info=True)
                continue
            if not held:
                # Reaped and possibly running elsewhere: stop duplicating the work.
                lease_lost.set()
                if runner is not None:
                    runner.cancel()
                return

    async def _settle(self, claimed: ClaimedTask, failure: Exception | None, *, release: bool = False) -> None:
        """Record the attempt's outcome; a write the lease no longer allows is logged and dropped."""
        fields = {"task_id": str(claimed.id), "kind": claimed.kind, "attempt": claimed.attempts}
        status: TaskStatus | None
        try:
            async with self.database.transaction() as session:
                now = self.clock()
                if release:
                    status = TaskStatus.QUEUED if await release_task(session, claimed, now=now) else None
                elif failure is None:
                    status = TaskStatus.SUCCEEDED if await complete_task(session, claimed, now=now) else None
                else:
                    status = await fail_task(
                        session,
                        claimed,
                        now=now,
                        error=f"{type(failure).__name__}: {failure}",
                        backoff_seconds=self.settings.TASK_RETRY_BACKOFF_SECONDS,
                        permanent=isinstance(failure, PermanentTaskError),
                    )
        except Exception:
            # The lease runs out and the reaper retries the task: at-least-once holds.
            log.exception("task.settle_failed", **fields)
            return
        if status is None:
            log.warning("task.stale_result_dropped", worker=self.worker_id, **fields)
        elif release:
            log.info("task.released", **fields)
        elif failure is None:
            log.info("task.succeeded", **fields)
        elif isinstance(failure, PermanentTaskError):
            log.warning("task.failed", status=status.value, error=str(failure)[:ERROR_MAX_LENGTH], **fields)
        else:
            log.warning("task.failed", status=status.value, exc_info=failure, **fields)


async def _uninterrupted(work: Awaitable[None]) -> None:
    """Await `work` to the end even if the caller is cancelled meanwhile (then re-raise)."""
    future = asyncio.ensure_future(work)
    try:
        await asyncio.shield(future)
    except asyncio.CancelledError:
        await future
        raise


async def run_worker_process(settings: Settings, *, concurrency: int) -> None:
    """`codepulse worker`: run a Worker until SIGTERM or SIGINT, then stop it gracefully."""
    database = Database.from_settings(settings)
    registry = TaskRegistry()
    discover_task_handlers(registry)
    worker = Worker(database, settings, registry, concurrency=concurrency)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await worker.start()
        await stop.wait()
        log.info("worker.stopping", worker=worker.worker_id)
    finally:
        # Default handling again while draining: a second signal ends the process at once.
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        await worker.stop()
        await database.dispose()
