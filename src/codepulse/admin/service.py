"""The superusers' task-queue actions, audited as platform events in the request's transaction."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from codepulse.auth.service import User
from codepulse.clock import ClockFunc
from codepulse.logging import redact
from codepulse.orgs.service import audit_platform_event
from codepulse.pagination import PageRequest
from codepulse.tasks import Task, TaskStatus
from codepulse.tasks.admin import TaskChange, cancel_task, list_tasks, retry_task

TASK_RETRIED = "task.retried"
TASK_CANCELED = "task.canceled"
AUDIT_ERROR_LENGTH = 300


class TaskAdminService:
    def __init__(self, session: AsyncSession, clock: ClockFunc) -> None:
        self.session = session
        self.clock = clock

    async def tasks(
        self, page: PageRequest, *, status: TaskStatus | None, kind: str | None
    ) -> tuple[list[Task], str | None]:
        return await list_tasks(self.session, params=page, status=status, kind=kind)

    async def retry(self, admin: User, task_id: uuid.UUID, ip: str | None) -> Task:
        change = await retry_task(self.session, task_id, now=self.clock())
        await self._audit(admin, TASK_RETRIED, change, ip)
        return change.task

    async def cancel(self, admin: User, task_id: uuid.UUID, ip: str | None) -> Task:
        change = await cancel_task(self.session, task_id, now=self.clock())
        await self._audit(admin, TASK_CANCELED, change, ip)
        return change.task

    async def _audit(self, admin: User, action: str, change: TaskChange, ip: str | None) -> None:
        # The error's type and start only: the task row keeps (and the list shows) the rest.
        error = redact(change.previous_error[:AUDIT_ERROR_LENGTH]) if change.previous_error else None
        details: dict[str, Any] = {
            "kind": change.task.kind,
            "previous_status": change.previous_status.value,
            "previous_attempts": change.previous_attempts,
            "previous_error": error,
        }
        await audit_platform_event(self.session, self.clock, admin, action, "task", change.task.id, details, ip)
