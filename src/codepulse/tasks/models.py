"""The tasks table: one row per task, its status and its lease."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, cast

from sqlalchemy import JSON, Index, Integer, String, Table, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from codepulse.db import Base, Timestamps, UUIDPrimaryKey


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
ACTIVE_UNIQUE_KEY_PREDICATE = text("status IN ('queued', 'running') AND unique_key IS NOT NULL")


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
            postgresql_where=ACTIVE_UNIQUE_KEY_PREDICATE,
            sqlite_where=ACTIVE_UNIQUE_KEY_PREDICATE,
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
