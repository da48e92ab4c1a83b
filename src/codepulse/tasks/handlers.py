"""What a domain's task handlers see: the context they receive, the registry they are registered
in (`register_tasks(registry)` in `codepulse.<domain>.jobs`), and the error that fails a task at once.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from codepulse.clock import ClockFunc
from codepulse.config import Settings
from codepulse.db import Database
from codepulse.scheduler import domain_jobs_modules


class PermanentTaskError(Exception):
    """Raised by a handler for a failure that retrying cannot fix: the task fails at once."""


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
    """Call `register_tasks(registry)` of every `codepulse.<package>.jobs` module that has one."""
    for jobs_module in domain_jobs_modules():
        register_tasks = getattr(jobs_module, "register_tasks", None)
        if register_tasks is not None:
            register_tasks(registry)
