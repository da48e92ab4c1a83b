"""The worker: claims due tasks with a lease, renews it while the handler runs (heartbeat), and
records the outcome; `run_worker_process` is `codepulse worker`.

A handler exception retries with exponential backoff until max_attempts, then the task is `dead`;
`PermanentTaskError` fails it at once. Wake-up: PostgreSQL NOTIFY from enqueue (delivered at
commit) to a LISTEN connection per worker, with polling every TASK_POLL_SECONDS as the fallback;
SQLite polls.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import uuid
from collections.abc import Awaitable
from typing import Any

import structlog
from sqlalchemy import select

from codepulse.clock import ClockFunc, utcnow
from codepulse.config import Settings
from codepulse.db import Database, Listener, listen
from codepulse.tasks.handlers import PermanentTaskError, TaskContext, TaskRegistry, discover_task_handlers
from codepulse.tasks.models import TASKS, TaskStatus
from codepulse.tasks.queue import (
    CHANNEL,
    ERROR_MAX_LENGTH,
    ClaimedTask,
    claim_tasks,
    complete_task,
    fail_task,
    release_task,
    renew_lease,
)

log = structlog.get_logger("codepulse.tasks")


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
                claimed = await self._claim_or_report(free)
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

    async def _claim_or_report(self, limit: int) -> list[ClaimedTask]:
        """`_claim`, with none claimed while the database is away (said once per outage)."""
        try:
            claimed = await self._claim(limit)
        except Exception:
            # The database is away: keep polling, and say so once per outage.
            if not self._claim_failing:
                log.warning("worker.claim_failed", worker=self.worker_id, exc_info=True)
            self._claim_failing = True
            return []
        if self._claim_failing:
            log.info("worker.claim_restored", worker=self.worker_id)
        self._claim_failing = False
        return claimed

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
