"""Durable task queue: background work that survives a crash of the process that runs it.

- `enqueue(session, kind, payload, ...)` adds a task inside the caller's transaction, so the task
  exists if and only if the business write committed. Handlers are registered per kind by the
  domain that owns them (`register_tasks(registry)` in `codepulse.<domain>.jobs`).
- A `Worker` claims due tasks with a lease (`claim_rows` in db: SKIP LOCKED on PostgreSQL, the
  BEGIN IMMEDIATE write lock on SQLite), renews the lease while the handler runs, and records the
  outcome. Every write after the claim is fenced on (id, locked_by, attempts, status=running): a
  worker whose lease expired, and whose task was handed to someone else, cannot overwrite the
  newer run — its result is logged and dropped.
- A handler exception retries with exponential backoff until max_attempts, then the task is
  `dead`; `PermanentTaskError` fails it at once. A reaper (scheduler job, every third of a lease)
  re-queues tasks whose lease expired (their worker died) at once, without backoff, or marks them
  `dead` after their last attempt, and prunes old finished tasks. A task that ends `dead` or
  `failed` runs the `on_task_ended` hooks in that transaction: the domain that queued it settles
  its own state there (the tasks package knows no domain). A superuser's retry of such a task
  runs the `on_task_retry` hooks in the retry's transaction: the domain puts its state back for
  the re-run, or refuses the retry.
- Wake-up: PostgreSQL NOTIFY from enqueue (delivered at commit) to a LISTEN connection per worker,
  with polling every TASK_POLL_SECONDS as the fallback; SQLite polls.

Delivery is at least once: a handler must be idempotent (a crash after its work committed but
before the task was marked succeeded runs it again).

    models    the tasks table (Task) and TaskStatus
    queue     the SQL: enqueue, cancel, claim, lease renewal, fenced outcomes, reaper, retention
    handlers  TaskContext, TaskRegistry, PermanentTaskError, discovery of domains' handlers
    worker    Worker (claim loop, heartbeats, graceful stop) and run_worker_process
    jobs      the reaper and retention as scheduler jobs (found by scheduler.discover_jobs)
    admin     operators' list, retry and cancel (the superusers' routes are codepulse.admin)

The queue depends on the scheduler (for its jobs and the jobs-module discovery), never the reverse.
"""

from codepulse.tasks.handlers import (
    PermanentTaskError,
    TaskContext,
    TaskHandler,
    TaskRegistry,
    discover_task_handlers,
)
from codepulse.tasks.jobs import prune_tasks_job, reap_expired_job, reap_interval
from codepulse.tasks.models import Task, TaskStatus
from codepulse.tasks.queue import (
    MAX_RETRY_DELAY,
    ClaimedTask,
    EndedTask,
    RetriedTask,
    cancel_queued,
    claim_tasks,
    complete_task,
    enqueue,
    fail_task,
    on_task_ended,
    on_task_retry,
    prune_finished,
    reap_expired,
    release_task,
    renew_lease,
    retry_delay,
    task_status,
)
from codepulse.tasks.worker import Worker, run_worker_process

__all__ = [
    "MAX_RETRY_DELAY",
    "ClaimedTask",
    "EndedTask",
    "PermanentTaskError",
    "RetriedTask",
    "Task",
    "TaskContext",
    "TaskHandler",
    "TaskRegistry",
    "TaskStatus",
    "Worker",
    "cancel_queued",
    "claim_tasks",
    "complete_task",
    "discover_task_handlers",
    "enqueue",
    "fail_task",
    "on_task_ended",
    "on_task_retry",
    "prune_finished",
    "prune_tasks_job",
    "reap_expired",
    "reap_expired_job",
    "reap_interval",
    "release_task",
    "renew_lease",
    "retry_delay",
    "run_worker_process",
    "task_status",
]
