"""The durable task queue, on a fresh database per test (real commits, several engines).

Lease expiry and backoff use an injected clock; nothing sleeps to let time pass.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import select, text, update

from codepulse.app import create_app
from codepulse.config import Settings
from codepulse.db import Database
from codepulse.errors import Conflict
from codepulse.scheduler import JobContext, Scheduler, discover_jobs
from codepulse.tasks import (
    MAX_RETRY_DELAY,
    EndedTask,
    PermanentTaskError,
    RetriedTask,
    Task,
    TaskContext,
    TaskRegistry,
    TaskStatus,
    Worker,
    cancel_queued,
    claim_tasks,
    complete_task,
    discover_task_handlers,
    enqueue,
    fail_task,
    on_task_ended,
    on_task_retry,
    prune_tasks_job,
    reap_expired,
    reap_expired_job,
    reap_interval,
    renew_lease,
    retry_delay,
)
from codepulse.tasks.admin import retry_task
from codepulse.tasks.queue import task_ended_hooks, task_retry_hooks
from tests.databases import DatabaseServer, build_settings
from tests.helpers import FakeClock

LEASE = 30.0
BACKOFF = 10.0


@dataclass
class Queue:
    """A fresh database, its settings and clock, and the engines opened on it."""

    settings: Settings
    clock: FakeClock
    databases: list[Database] = field(default_factory=list)

    @property
    def database(self) -> Database:
        return self.databases[0]

    def open(self) -> Database:
        database = Database.from_settings(self.settings)
        self.databases.append(database)
        return database

    def worker(
        self,
        handlers: dict[str, Callable[[TaskContext], Awaitable[None]]],
        *,
        name: str = "w1",
        concurrency: int = 1,
        database: Database | None = None,
    ) -> Worker:
        registry = TaskRegistry()
        for kind, handler in handlers.items():
            registry.register(kind, handler)
        return Worker(
            database or self.database,
            self.settings,
            registry,
            clock=self.clock,
            concurrency=concurrency,
            worker_id=name,
        )

    async def enqueue(self, kind: str = "test.echo", payload: dict[str, Any] | None = None, **options: Any) -> Task:
        async with self.database.transaction() as session:
            return await enqueue(session, kind, payload or {}, now=self.clock(), **options)

    async def get(self, task_id: uuid.UUID) -> Task:
        async with self.database.session(write=False) as session:
            task = await session.get(Task, task_id)
            assert task is not None
            return task

    async def reap(self) -> int:
        async with self.database.transaction() as session:
            return await reap_expired(session, now=self.clock(), default_max_attempts=self.settings.TASK_MAX_ATTEMPTS)

    async def claim(self, worker_id: str, limit: int = 1, database: Database | None = None) -> list[Any]:
        async with (database or self.database).transaction() as session:
            return await claim_tasks(
                session,
                worker_id=worker_id,
                now=self.clock(),
                lease_seconds=self.settings.TASK_LEASE_SECONDS,
                limit=limit,
                default_max_attempts=self.settings.TASK_MAX_ATTEMPTS,
            )


def _queue_settings(url: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "TASK_LEASE_SECONDS": LEASE,
        "TASK_RETRY_BACKOFF_SECONDS": BACKOFF,
        "TASK_MAX_ATTEMPTS": 3,
        "TASK_POLL_SECONDS": 60,  # tests wake workers explicitly (NOTIFY) or drive them by hand
    }
    values.update(overrides)
    return build_settings(url, **values)


@pytest.fixture
async def make_queue(
    database_server: DatabaseServer, base_settings: Settings
) -> AsyncIterator[Callable[..., Awaitable[Queue]]]:
    del base_settings  # requested for its side effect: structlog configured (the `logs` fixture)
    queues: list[Queue] = []

    async def make(**overrides: object) -> Queue:
        queue = Queue(_queue_settings(await database_server.clone("tasks"), **overrides), FakeClock())
        queue.open()
        queues.append(queue)
        return queue

    yield make
    for queue in queues:
        for database in queue.databases:
            await database.dispose()


@pytest.fixture
async def queue(make_queue: Callable[..., Awaitable[Queue]]) -> Queue:
    return await make_queue()


async def eventually(check: Callable[[], bool | Awaitable[bool]], *, within: float = 5.0) -> None:
    """Poll `check` until it holds; fail the test after `within` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        held = check()
        if inspect.isawaitable(held):
            held = await held
        if held:
            return
        if loop.time() > deadline:
            pytest.fail(f"condition not met within {within} s")
        await asyncio.sleep(0.02)


def recorder() -> tuple[list[TaskContext], Callable[[TaskContext], Awaitable[None]]]:
    seen: list[TaskContext] = []

    async def handler(context: TaskContext) -> None:
        seen.append(context)

    return seen, handler


# --- enqueue -------------------------------------------------------------------------------------


async def test_a_task_exists_only_if_the_callers_transaction_commits(queue: Queue) -> None:
    async def failing_business_write() -> None:
        async with queue.database.transaction() as session:
            await enqueue(session, "test.echo", {"n": 1}, now=queue.clock())
            raise RuntimeError("the business write failed")

    with pytest.raises(RuntimeError):
        await failing_business_write()
    async with queue.database.session(write=False) as session:
        assert (await session.scalars(select(Task))).all() == []

    task = await queue.enqueue(payload={"n": 2}, priority=5)
    stored = await queue.get(task.id)
    assert (stored.kind, stored.payload, stored.status, stored.priority, stored.attempts) == (
        "test.echo",
        {"n": 2},
        "queued",
        5,
        0,
    )
    assert stored.run_at == queue.clock()


async def test_unique_key_returns_the_active_task_instead_of_a_duplicate(queue: Queue) -> None:
    first = await queue.enqueue(payload={"n": 1}, unique_key="scan:repo-1:main")
    again = await queue.enqueue(payload={"n": 2}, unique_key="scan:repo-1:main")
    other = await queue.enqueue(payload={"n": 3}, unique_key="scan:repo-2:main")
    assert again.id == first.id
    assert again.payload == {"n": 1}
    assert other.id != first.id

    # Two enqueues racing in separate transactions (engines): one task.
    second_engine = queue.open()

    async def racer(database: Database) -> uuid.UUID:
        async with database.transaction() as session:
            task = await enqueue(session, "test.echo", {}, now=queue.clock(), unique_key="race")
            await asyncio.sleep(0)  # let the other one reach its insert while we hold ours
            return task.id

    ids = await asyncio.gather(racer(queue.database), racer(second_engine))
    assert ids[0] == ids[1]

    # Once the active task has finished, the key is free again.
    _seen, handler = recorder()
    assert await queue.worker({"test.echo": handler}, concurrency=4).run_until_idle() == 3
    fresh = await queue.enqueue(unique_key="scan:repo-1:main")
    assert fresh.id != first.id
    async with queue.database.session(write=False) as session:
        keys = (await session.scalars(select(Task.unique_key).order_by(Task.created_at))).all()
    assert sorted(key or "" for key in keys) == ["race", "scan:repo-1:main", "scan:repo-1:main", "scan:repo-2:main"]


async def test_cancel_queued(queue: Queue) -> None:
    queued = await queue.enqueue()
    running = await queue.enqueue(priority=1)
    [claimed] = await queue.claim("w1")
    assert claimed.id == running.id
    async with queue.database.transaction() as session:
        assert await cancel_queued(session, queued.id, now=queue.clock()) is True
        assert await cancel_queued(session, running.id, now=queue.clock()) is False
        assert await cancel_queued(session, uuid.uuid4(), now=queue.clock()) is False
    canceled = await queue.get(queued.id)
    assert (canceled.status, canceled.finished_at) == ("canceled", queue.clock())
    assert (await queue.get(running.id)).status == "running"
    _seen, handler = recorder()
    assert await queue.worker({"test.echo": handler}).run_until_idle() == 0


# --- claiming ------------------------------------------------------------------------------------


async def test_claims_by_priority_then_due_time_and_only_due_tasks(queue: Queue) -> None:
    t0 = queue.clock()
    late = await queue.enqueue(payload={"name": "late"}, run_at=t0 + timedelta(minutes=5))
    await queue.enqueue(payload={"name": "old"}, run_at=t0 - timedelta(minutes=2))
    await queue.enqueue(payload={"name": "older"}, run_at=t0 - timedelta(minutes=3))
    await queue.enqueue(payload={"name": "urgent"}, priority=10)
    await queue.enqueue(kind="test.unhandled", payload={"name": "nobody"}, priority=99)
    order: list[str] = []

    async def handler(context: TaskContext) -> None:
        order.append(context.payload["name"])

    worker = queue.worker({"test.echo": handler})
    assert await worker.run_until_idle() == 3
    assert order == ["urgent", "older", "old"]  # the unhandled kind is left for a worker that has it
    assert (await queue.get(late.id)).status == "queued"
    queue.clock.advance(minutes=5)
    assert await worker.run_until_idle() == 1
    assert order[-1] == "late"


async def test_success_is_recorded_with_its_context(queue: Queue) -> None:
    task = await queue.enqueue(payload={"scan": "s-1"})
    seen, handler = recorder()
    assert await queue.worker({"test.echo": handler}, name="worker-a").run_until_idle() == 1
    [context] = seen
    assert (context.task_id, context.kind, context.payload, context.attempt, context.worker_id) == (
        task.id,
        "test.echo",
        {"scan": "s-1"},
        1,
        "worker-a",
    )
    assert context.clock() == queue.clock()
    done = await queue.get(task.id)
    assert (done.status, done.attempts, done.locked_by, done.locked_until) == ("succeeded", 1, "worker-a", None)
    assert done.started_at == done.finished_at == queue.clock()


async def test_concurrent_claimers_never_share_a_task(queue: Queue) -> None:
    """4 workers, each with its own engine (as separate processes would be), 200 tasks."""
    async with queue.database.transaction() as session:
        for n in range(200):
            await enqueue(session, "test.echo", {"n": n}, now=queue.clock())
    runs: list[tuple[int, str]] = []

    async def handler(context: TaskContext) -> None:
        await asyncio.sleep(0)  # yield, so the workers interleave
        runs.append((context.payload["n"], context.worker_id))

    workers = [
        queue.worker({"test.echo": handler}, name=f"w{i}", concurrency=4, database=queue.open()) for i in range(4)
    ]
    counts = await asyncio.gather(*(worker.run_until_idle() for worker in workers))
    assert sum(counts) == 200
    assert sorted(n for n, _ in runs) == list(range(200))  # each task exactly once
    if queue.database.dialect == "postgresql":
        assert all(counts), counts  # SKIP LOCKED lets every worker take a share

    # The claim helper on its own: concurrent claims return disjoint sets that cover everything.
    async with queue.database.transaction() as session:
        for n in range(200):
            await enqueue(session, "test.claim", {"n": n}, now=queue.clock())
    batches = await asyncio.gather(
        *(queue.claim(f"c{i}", limit=60, database=database) for i, database in enumerate(queue.databases[1:]))
    )
    claimed = [task.id for batch in batches for task in batch]
    assert len(claimed) == len(set(claimed)) == 200


# --- failure, backoff, dead letter ----------------------------------------------------------------


async def test_failures_retry_with_exponential_backoff_then_go_dead(queue: Queue) -> None:
    task = await queue.enqueue()
    attempts: list[int] = []

    async def broken(context: TaskContext) -> None:
        attempts.append(context.attempt)
        raise RuntimeError(f"upstream said no ({context.attempt})")

    worker = queue.worker({"test.echo": broken})
    t0 = queue.clock()
    assert await worker.run_until_idle() == 1
    first = await queue.get(task.id)
    assert (first.status, first.attempts, first.locked_by) == ("queued", 1, None)
    assert first.run_at == t0 + timedelta(seconds=BACKOFF)
    assert first.last_error == "RuntimeError: upstream said no (1)"

    queue.clock.advance(seconds=BACKOFF - 1)
    assert await worker.run_until_idle() == 0  # not due yet
    queue.clock.advance(seconds=1)
    assert await worker.run_until_idle() == 1
    second = await queue.get(task.id)
    assert second.run_at == queue.clock() + timedelta(seconds=2 * BACKOFF)

    queue.clock.advance(seconds=2 * BACKOFF)
    assert await worker.run_until_idle() == 1
    dead = await queue.get(task.id)
    assert (dead.status, dead.attempts, dead.finished_at) == ("dead", 3, queue.clock())
    assert dead.last_error == "RuntimeError: upstream said no (3)"
    queue.clock.advance(days=1)
    assert await worker.run_until_idle() == 0
    assert attempts == [1, 2, 3]


async def test_max_attempts_per_task_and_permanent_errors(queue: Queue) -> None:
    once = await queue.enqueue(max_attempts=1)
    permanent = await queue.enqueue(kind="test.permanent")

    async def broken(_context: TaskContext) -> None:
        raise RuntimeError("boom")

    async def refuses(_context: TaskContext) -> None:
        raise PermanentTaskError("repository was deleted")

    assert await queue.worker({"test.echo": broken, "test.permanent": refuses}, concurrency=2).run_until_idle() == 2
    assert (await queue.get(once.id)).status == "dead"
    failed = await queue.get(permanent.id)
    assert (failed.status, failed.attempts, failed.last_error) == (
        "failed",
        1,
        "PermanentTaskError: repository was deleted",
    )


def test_retry_delay_doubles_and_is_capped() -> None:
    assert [retry_delay(10, n).total_seconds() for n in (1, 2, 3, 4)] == [10, 20, 40, 80]
    assert retry_delay(10, 100) == MAX_RETRY_DELAY
    assert retry_delay(0, 5) == timedelta(0)


# --- leases ---------------------------------------------------------------------------------------


async def test_a_crashed_workers_task_is_reclaimed_and_rerun_exactly_once(queue: Queue) -> None:
    task = await queue.enqueue(payload={"n": 1})
    [crashed] = await queue.claim("crashed-worker")  # ... which then dies without a word
    seen, handler = recorder()
    worker = queue.worker({"test.echo": handler}, name="survivor")
    assert await worker.run_until_idle() == 0  # leased: nobody else may take it

    queue.clock.advance(seconds=LEASE - 1)
    assert await queue.reap() == 0  # the lease still holds
    queue.clock.advance(seconds=2)
    assert await queue.reap() == 1
    reaped = await queue.get(task.id)
    assert (reaped.status, reaped.attempts, reaped.locked_by) == ("queued", 1, None)
    assert reaped.run_at == queue.clock()  # a crash is not the task's failure: no backoff
    assert reaped.last_error == "lease expired: worker crashed-worker stopped renewing it"
    assert await queue.reap() == 0

    assert await worker.run_until_idle() == 1
    assert await worker.run_until_idle() == 0
    assert [(context.attempt, context.worker_id) for context in seen] == [(2, "survivor")]
    done = await queue.get(task.id)
    assert (done.status, done.attempts, done.locked_by) == ("succeeded", 2, "survivor")

    # The crashed worker comes back and reports: refused, the re-run's result stands.
    async with queue.database.transaction() as session:
        assert await complete_task(session, crashed, now=queue.clock()) is False
        assert await fail_task(session, crashed, now=queue.clock(), error="late", backoff_seconds=BACKOFF) is None
        assert await renew_lease(session, crashed, now=queue.clock(), lease_seconds=LEASE) is False
    final = await queue.get(task.id)
    assert (final.status, final.locked_by, final.last_error) == ("succeeded", "survivor", reaped.last_error)


@pytest.mark.parametrize(
    ("lease", "interval"), [(10.0, 10 / 3), (LEASE, LEASE / 3), (0.6, 1.0), (90.0, 30.0), (3600.0, 30.0)]
)
def test_the_reap_interval_follows_the_lease(lease: float, interval: float) -> None:
    # A third of a lease (the heartbeat's rhythm), at least 1 s and at most 30 s.
    assert reap_interval(lease) == timedelta(seconds=interval)


async def test_the_reaper_job_runs_at_the_leases_interval(queue: Queue) -> None:
    settings = queue.settings.model_copy(update={"TASK_LEASE_SECONDS": 12.0})
    scheduler = Scheduler(queue.database, settings, clock=queue.clock)
    discover_jobs(scheduler)
    trigger = scheduler.jobs["tasks.reap_expired"].trigger
    assert isinstance(trigger, IntervalTrigger)
    assert timedelta(seconds=trigger.interval_length) == reap_interval(12.0) == timedelta(seconds=4)


async def test_a_killed_workers_task_runs_again_about_one_lease_later(
    make_queue: Callable[..., Awaitable[Queue]],
) -> None:
    """The schedule, computed: claimed at t0 with a 10 s lease, its worker killed at once; the
    first reaper tick after the lease expired re-queues it due at that tick (no backoff), so it
    runs again within a lease and a reap interval (10 s + 3.3 s), not 35-55 s later."""
    lease = 10.0
    queue = await make_queue(TASK_LEASE_SECONDS=lease, TASK_RETRY_BACKOFF_SECONDS=10.0)
    scheduler = Scheduler(queue.database, queue.settings, clock=queue.clock)
    discover_jobs(scheduler)
    trigger = scheduler.jobs["tasks.reap_expired"].trigger
    task = await queue.enqueue()
    t0 = queue.clock()
    [_killed] = await queue.claim("killed")
    expiry = t0 + timedelta(seconds=lease)
    tick = trigger.get_next_fire_time(None, expiry + timedelta(microseconds=1))
    assert expiry < tick <= expiry + reap_interval(lease)
    queue.clock.now = tick
    await reap_expired_job(JobContext(queue.database, queue.settings, tick))
    requeued = await queue.get(task.id)
    assert (requeued.status, requeued.run_at) == ("queued", tick)
    [again] = await queue.claim("survivor")
    assert (again.id, again.attempts) == (task.id, 2)
    assert tick - t0 <= timedelta(seconds=lease) + reap_interval(lease)


async def test_a_task_that_ends_runs_the_ended_hooks_in_its_transaction(queue: Queue) -> None:
    seen: list[EndedTask] = []

    async def hook(session: Any, ended: EndedTask) -> None:
        await session.execute(text("SELECT 1"))  # in the caller's session
        seen.append(ended)

    on_task_ended(hook)
    try:
        # Its worker dies on every attempt: dead by the reaper, lease_expired.
        crashed = await queue.enqueue("test.crash", {"x": 1}, max_attempts=1)
        await queue.claim("gone")
        queue.clock.advance(seconds=LEASE + 1)
        assert await queue.reap() == 1
        # Its handler fails on the last attempt: dead by the worker.
        failing = await queue.enqueue("test.fail", {"y": 2}, max_attempts=1)

        async def fail(context: TaskContext) -> None:
            raise RuntimeError("boom")

        assert await queue.worker({"test.fail": fail}).run_until_idle() == 1
        # Retried: not ended.
        await queue.enqueue("test.fail", {"z": 3}, max_attempts=2)
        assert await queue.worker({"test.fail": fail}).run_until_idle() == 1
    finally:
        task_ended_hooks._hooks.remove(hook)
    assert [(e.id, e.kind, e.payload, e.status, e.lease_expired) for e in seen] == [
        (crashed.id, "test.crash", {"x": 1}, TaskStatus.DEAD, True),
        (failing.id, "test.fail", {"y": 2}, TaskStatus.DEAD, False),
    ]
    assert seen[1].error == "RuntimeError: boom"


async def test_a_failing_ended_hook_never_keeps_a_task_from_ending(queue: Queue) -> None:
    async def broken(session: Any, ended: EndedTask) -> None:
        await session.execute(update(Task).where(Task.id == ended.id).values(last_error="written by the hook"))
        raise RuntimeError("hook bug")

    on_task_ended(broken)
    try:
        first, second = [await queue.enqueue(max_attempts=1) for _ in range(2)]
        await queue.claim("gone", limit=2)
        queue.clock.advance(seconds=LEASE + 1)
        assert await queue.reap() == 2
    finally:
        task_ended_hooks._hooks.remove(broken)
    for task in (first, second):
        dead = await queue.get(task.id)
        assert (dead.status, dead.last_error) == ("dead", "lease expired: worker gone stopped renewing it")


async def test_a_retry_runs_the_retry_hooks_and_a_raising_one_refuses_it(queue: Queue) -> None:
    seen: list[RetriedTask] = []

    async def hook(session: Any, retried: RetriedTask) -> None:
        # In the retry's transaction: the task is already queued again there.
        status = await session.scalar(select(Task.status).where(Task.id == retried.id))
        seen.append(retried)
        if retried.payload.get("refuse"):
            await session.execute(update(Task).where(Task.id == retried.id).values(priority=99))
            raise Conflict("Not now.", code="test_refused")
        assert status == TaskStatus.QUEUED.value

    async def fail(context: TaskContext) -> None:
        raise PermanentTaskError("no")

    on_task_retry(hook)
    try:
        accepted = await queue.enqueue("test.fail", {"refuse": False})
        refused = await queue.enqueue("test.fail", {"refuse": True})
        assert await queue.worker({"test.fail": fail}).run_until_idle() == 2
        now = queue.clock.advance(minutes=1)
        async with queue.database.transaction() as session:
            change = await retry_task(session, accepted.id, now=now)
            assert change.task.status == TaskStatus.QUEUED.value
            with pytest.raises(Conflict) as refusal:
                await retry_task(session, refused.id, now=now)
            assert refusal.value.instance_code == "test_refused"
            # The caller goes on and commits: the refused retry left nothing behind.
    finally:
        task_retry_hooks._hooks.remove(hook)
    assert [(r.id, r.kind, r.previous_status, r.previous_error, r.retried_at) for r in seen] == [
        (accepted.id, "test.fail", TaskStatus.FAILED, "PermanentTaskError: no", now),
        (refused.id, "test.fail", TaskStatus.FAILED, "PermanentTaskError: no", now),
    ]
    assert (await queue.get(accepted.id)).status == TaskStatus.QUEUED.value
    still = await queue.get(refused.id)
    assert (still.status, still.priority, still.last_error) == ("failed", 0, "PermanentTaskError: no")


async def test_stale_completion_is_refused_even_from_the_same_worker(queue: Queue) -> None:
    """A worker whose heartbeat stalled re-claims its own reaped task: the old run cannot settle
    the new one (the attempt number fences it)."""
    task = await queue.enqueue()
    [stale] = await queue.claim("w1")
    queue.clock.advance(seconds=LEASE + 1)
    assert await queue.reap() == 1
    queue.clock.advance(seconds=BACKOFF)
    [current] = await queue.claim("w1")
    assert current.attempts == 2
    async with queue.database.transaction() as session:
        assert await complete_task(session, stale, now=queue.clock()) is False
    assert (await queue.get(task.id)).status == "running"
    async with queue.database.transaction() as session:
        assert await complete_task(session, current, now=queue.clock()) is True
    assert (await queue.get(task.id)).status == "succeeded"


async def test_an_expired_lease_on_the_last_attempt_is_dead(queue: Queue) -> None:
    task = await queue.enqueue(max_attempts=2)
    for _ in range(2):
        await queue.claim("crashy")
        queue.clock.advance(seconds=LEASE + 1)
        assert await queue.reap() == 1
        queue.clock.advance(seconds=BACKOFF * 2)
    dead = await queue.get(task.id)
    assert (dead.status, dead.attempts, dead.finished_at) == ("dead", 2, queue.clock() - timedelta(seconds=20))


async def test_heartbeat_keeps_the_lease_and_a_lost_lease_stops_the_handler(
    make_queue: Callable[..., Awaitable[Queue]], logs: Callable[[str], list[dict[str, object]]]
) -> None:
    # A short real lease: the heartbeat renews every lease/3 seconds of wall time.
    queue = await make_queue(TASK_LEASE_SECONDS=0.3)
    task = await queue.enqueue()
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def slow(_context: TaskContext) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    worker = queue.worker({"test.echo": slow})
    run = asyncio.create_task(worker.run_until_idle())
    await asyncio.wait_for(started.wait(), 5)
    first_lease = (await queue.get(task.id)).locked_until
    assert first_lease is not None
    queue.clock.advance(minutes=5)  # far past the first lease: only a heartbeat keeps it alive
    deadline = queue.clock() + timedelta(seconds=0.3)

    async def renewed() -> bool:
        return (await queue.get(task.id)).locked_until == deadline

    await eventually(renewed)
    assert await queue.reap() == 0

    # Someone else holds the task now (it was reaped and re-claimed): the handler is stopped.
    async with queue.database.transaction() as session:
        await session.execute(update(Task).where(Task.id == task.id).values(locked_by="thief"))
    assert await asyncio.wait_for(run, 5) == 1
    assert cancelled.is_set()
    assert (await queue.get(task.id)).locked_by == "thief"
    assert logs("task.abandoned")


# --- the running worker: wake-up and shutdown ------------------------------------------------------


async def test_polling_picks_up_a_task_that_becomes_due(make_queue: Callable[..., Awaitable[Queue]]) -> None:
    queue = await make_queue(TASK_POLL_SECONDS=0.05)
    ran = asyncio.Event()

    async def handler(_context: TaskContext) -> None:
        ran.set()

    worker = queue.worker({"test.echo": handler})
    await worker.start()
    try:
        # Due later: no notification will come when it becomes due, only polling finds it.
        await queue.enqueue(run_at=queue.clock() + timedelta(minutes=1))
        queue.clock.advance(minutes=1)
        await asyncio.wait_for(ran.wait(), 5)
    finally:
        await worker.stop()


@pytest.mark.postgres_only
async def test_notify_wakes_an_idle_worker(queue: Queue) -> None:
    """TASK_POLL_SECONDS is 60 here: only the NOTIFY sent at commit can wake the worker."""
    blocker_started, second_ran, release = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def handler(context: TaskContext) -> None:
        if context.payload.get("block"):
            blocker_started.set()
            await release.wait()
        else:
            second_ran.set()

    await queue.enqueue(payload={"block": True})
    worker = queue.worker({"test.echo": handler}, concurrency=2)
    await worker.start()
    try:
        # The loop claimed the blocker and now waits (one slot free) for a wake-up.
        await asyncio.wait_for(blocker_started.wait(), 5)
        await queue.enqueue(payload={"block": False})
        await asyncio.wait_for(second_ran.wait(), 10)
    finally:
        release.set()
        await worker.stop()


@pytest.mark.postgres_only
async def test_a_lost_listen_connection_is_reopened(
    make_queue: Callable[..., Awaitable[Queue]], logs: Callable[[str], list[dict[str, object]]]
) -> None:
    queue = await make_queue(TASK_POLL_SECONDS=0.05)
    _seen, handler = recorder()
    worker = queue.worker({"test.echo": handler})
    await worker.start()
    try:
        assert worker.listening
        async with queue.database.transaction() as session:  # what a server restart does to it
            await session.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND query LIKE 'LISTEN %'"
                )
            )
        await eventually(lambda: bool(logs("worker.listener_lost")) and worker.listening)
    finally:
        await worker.stop()


async def test_stop_lets_running_tasks_finish_within_the_grace_period(queue: Queue) -> None:
    task = await queue.enqueue()
    started, release = asyncio.Event(), asyncio.Event()
    runs = 0

    async def handler(_context: TaskContext) -> None:
        nonlocal runs
        runs += 1
        started.set()
        await release.wait()

    worker = queue.worker({"test.echo": handler})
    await worker.start()
    await asyncio.wait_for(started.wait(), 5)
    stopping = asyncio.create_task(worker.stop(grace_seconds=30))
    await eventually(lambda: not worker.running)  # the claim loop has ended: no more claims
    later = await queue.enqueue()
    release.set()
    await asyncio.wait_for(stopping, 10)
    assert not worker.running
    assert (await queue.get(task.id)).status == "succeeded"
    assert (await queue.get(later.id)).status == "queued"
    assert runs == 1


async def test_stop_after_the_grace_period_cancels_and_releases_the_lease(queue: Queue) -> None:
    task = await queue.enqueue()
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def stuck(_context: TaskContext) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    worker = queue.worker({"test.echo": stuck})
    await worker.start()
    await asyncio.wait_for(started.wait(), 5)
    await asyncio.wait_for(worker.stop(grace_seconds=0), 10)
    assert cancelled.is_set()
    released = await queue.get(task.id)
    # Back in the queue at once for another worker, and the interrupted attempt is not counted.
    assert (released.status, released.attempts, released.locked_by, released.locked_until) == (
        "queued",
        0,
        None,
        None,
    )
    assert released.run_at == queue.clock()


# --- registry, scheduler jobs, app and CLI wiring -------------------------------------------------


def test_registry_refuses_a_kind_twice() -> None:
    registry = TaskRegistry()

    async def handler(_context: TaskContext) -> None:
        return None

    registry.register("a.kind", handler)
    with pytest.raises(ValueError, match="already registered"):
        registry.register("a.kind", handler)
    assert registry.kinds == ("a.kind",)
    discover_task_handlers(TaskRegistry())  # every domain's register_tasks imports and runs


async def test_reaper_and_retention_run_as_scheduler_jobs(queue: Queue) -> None:
    scheduler = Scheduler(queue.database, queue.settings, clock=queue.clock)
    discover_jobs(scheduler)
    assert {"tasks.reap_expired", "tasks.prune"} <= set(scheduler.jobs)

    expired = await queue.enqueue()
    await queue.claim("gone")
    await reap_expired_job(JobContext(queue.database, queue.settings, queue.clock() + timedelta(seconds=LEASE + 1)))
    assert (await queue.get(expired.id)).status == "queued"

    retention = timedelta(days=queue.settings.TASKS_RETENTION_DAYS)
    old_done, old_queued, recent_done = [await queue.enqueue() for _ in range(3)]
    async with queue.database.transaction() as session:
        finished = queue.clock() - retention - timedelta(hours=1)
        await session.execute(
            update(Task)
            .where(Task.id.in_([old_done.id, expired.id]))
            .values(status=TaskStatus.SUCCEEDED.value, finished_at=finished)
        )
        await session.execute(
            update(Task)
            .where(Task.id == recent_done.id)
            .values(status=TaskStatus.DEAD.value, finished_at=queue.clock() - timedelta(days=1))
        )
    await prune_tasks_job(JobContext(queue.database, queue.settings, queue.clock()))
    async with queue.database.session(write=False) as session:
        remaining = set((await session.scalars(select(Task.id))).all())
    assert remaining == {old_queued.id, recent_done.id}


async def test_the_app_runs_a_worker_when_concurrency_is_set(queue: Queue) -> None:
    app = create_app(queue.settings.model_copy(update={"WORKER_CONCURRENCY": 2}), database=queue.database)
    assert app.state.worker is not None
    async with app.router.lifespan_context(app):
        assert app.state.worker.running
        assert app.state.worker.concurrency == 2
    assert not app.state.worker.running
    assert create_app(queue.settings, database=queue.database).state.worker is None


async def _run_cli(tmp_path: Path, database_url: str, *args: str) -> asyncio.subprocess.Process:
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "VAR_DIR": str(tmp_path / "var"),
        "LOG_JSON": "true",
        "ENVIRONMENT": "development",
    }
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "codepulse",
        *args,
        env=env,
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )


async def test_worker_command_starts_and_stops_on_sigterm(tmp_path: Path, database_server: DatabaseServer) -> None:
    process = await _run_cli(tmp_path, await database_server.clone("cli"), "worker", "--concurrency", "3")
    assert process.stdout is not None
    lines: list[str] = []
    try:
        while True:
            line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
            assert line, "worker exited early:\n" + "".join(lines)
            lines.append(line)
            if '"event": "worker.started"' in line:
                break
    finally:
        process.send_signal(signal.SIGTERM)
        rest, _ = await asyncio.wait_for(process.communicate(), 20)
    output = "".join(lines) + rest.decode()
    assert process.returncode == 0, output
    assert '"concurrency": 3' in output
    assert '"event": "worker.stopped"' in output
    assert "Traceback" not in output


async def test_worker_command_refuses_a_schema_behind_head(tmp_path: Path, database_server: DatabaseServer) -> None:
    process = await _run_cli(tmp_path, await database_server.create_empty(), "worker")
    stdout, _ = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 1
    assert "run `codepulse migrate` first" in stdout.decode()
