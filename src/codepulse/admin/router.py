"""The superusers' task-queue routes: list, retry, cancel. 403 `superuser_required` for anyone else."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Depends, Query, Request

from codepulse.admin.schemas import TaskOut
from codepulse.admin.service import TaskAdminService
from codepulse.auth.dependencies import Superuser, device_of
from codepulse.db import DbSession
from codepulse.pagination import Page, PageParams
from codepulse.routing import DomainRouter
from codepulse.tasks import TaskStatus
from codepulse.text import Line

router = DomainRouter(prefix="/admin/tasks", tags=["admin"])

KIND_MAX_LENGTH = 100


async def task_admin_service(request: Request, session: DbSession) -> TaskAdminService:
    return TaskAdminService(session, request.app.state.clock)


TaskAdminServiceDep = Annotated[TaskAdminService, Depends(task_admin_service)]


@router.get("", summary="Tasks of the durable queue (superuser)")
async def list_tasks(
    _admin: Superuser,
    service: TaskAdminServiceDep,
    page: PageParams,
    status: Annotated[TaskStatus | None, Query(description="Only tasks in this status.")] = None,
    kind: Annotated[
        Line | None, Query(min_length=1, max_length=KIND_MAX_LENGTH, description="Only tasks of this kind.")
    ] = None,
) -> Page[TaskOut]:
    """Newest first. An unknown `status` is a 422; an unknown `kind` lists nothing."""
    tasks, next_cursor = await service.tasks(page, status=status, kind=kind)
    return Page(items=[TaskOut.model_validate(task) for task in tasks], next_cursor=next_cursor)


@router.post("/{task_id}/retry", summary="Queue a dead or failed task again (superuser)")
async def retry_task(task_id: uuid.UUID, admin: Superuser, service: TaskAdminServiceDep, request: Request) -> TaskOut:
    """`dead` or `failed` -> `queued`, due now, attempts 0. The domain that queued it gets a say in
    the same transaction: a `scans.run` whose scan failed because the task died (`worker_lost`,
    `internal_error`, `task_canceled`) queues the scan again, and the task runs it. Otherwise the
    handler checks its own domain's state: a task whose owner settled the outcome for good (a
    `scans.run` whose scan failed on its own, succeeded or was canceled) runs and does nothing.
    Audited as `task.retried` (a platform event). 404 `task_not_found`, 409 `task_not_retryable`
    (any other status), 409 `task_duplicate_active` (another active task holds its unique key),
    409 `scan_already_active` (another scan of the scan's repository and ref is queued or running;
    nothing changes)."""
    return TaskOut.model_validate(await service.retry(admin, task_id, device_of(request).ip))


@router.post("/{task_id}/cancel", summary="Cancel a queued task (superuser)")
async def cancel_task(task_id: uuid.UUID, admin: Superuser, service: TaskAdminServiceDep, request: Request) -> TaskOut:
    """`queued` -> `canceled`; the domain that queued it settles its own state (its scan is
    canceled, as its owner's cancel would leave it). Audited as `task.canceled`. 404 `task_not_found`, 409
    `task_running` (cancel what it works on instead, e.g. the scan), 409 `task_finished`."""
    return TaskOut.model_validate(await service.cancel(admin, task_id, device_of(request).ip))
