"""Scans whose worker died: the task going `dead` fails the scan, a superuser's retry of that task
runs the scan again, a superuser's cancel of its queued task cancels it, and a scan nobody runs
any more can always be canceled."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import select, update

from codepulse.auth.models import User
from codepulse.orgs.models import AuditEvent
from codepulse.scans import lifecycle
from codepulse.scans.live import scan_updates
from codepulse.scans.models import Scan
from codepulse.scans.service import TASK_KIND
from codepulse.scheduler import JobContext
from codepulse.tasks import Task, TaskStatus, claim_tasks, reap_expired_job
from tests.auth.helpers import SignedIn, register
from tests.scans.conftest import Flow
from tests.scans.helpers import API, GitRepo, request_scan
from tests.scans.test_scan_days import assert_days_match

TASKS = f"{API}/admin/tasks"


async def _start_and_die(flow: Flow, scan_id: str) -> None:
    """A worker claims the scan's task, marks the scan running, and is killed (no word after)."""
    async with flow.database.transaction() as session:
        [claimed] = await claim_tasks(
            session,
            worker_id="killed",
            now=flow.clock(),
            lease_seconds=flow.settings.TASK_LEASE_SECONDS,
            limit=1,
            default_max_attempts=flow.settings.TASK_MAX_ATTEMPTS,
            kinds=[TASK_KIND],  # not the owner's verification mail, queued at registration
        )
        assert claimed.payload == {"scan_id": scan_id}
        assert await lifecycle.begin_run(session, uuid.UUID(scan_id), flow.clock()) is not None


async def _reap_after_the_lease(flow: Flow) -> None:
    now = flow.clock.advance(seconds=flow.settings.TASK_LEASE_SECONDS + 1)
    await reap_expired_job(JobContext(flow.database, flow.settings, now))


async def _task_id(flow: Flow, scan: dict[str, Any]) -> uuid.UUID:
    async with flow.database.session(write=False) as session:
        row = await session.get(Scan, uuid.UUID(scan["id"]))
        assert row is not None
        assert row.task_id is not None
        return row.task_id


async def _task(flow: Flow, scan: dict[str, Any]) -> Task:
    task_id = await _task_id(flow, scan)
    async with flow.database.session(write=False) as session:
        task = await session.get(Task, task_id)
        assert task is not None
        return task


async def test_a_task_driven_to_dead_fails_its_scan_with_worker_lost(flow: Flow, tmp_path: Path) -> None:
    git = GitRepo(tmp_path / "app")
    git.commit({"a.py": "x = 1\n"})
    repository = await flow.repository(git.url)
    scan = await request_scan(flow.client, flow.owner, repository["id"])
    for _ in range(flow.settings.TASK_MAX_ATTEMPTS):
        await _start_and_die(flow, scan["id"])
        await _reap_after_the_lease(flow)
    task = await _task(flow, scan)
    assert task.status == TaskStatus.DEAD.value
    failed = await flow.get(f"/scans/{scan['id']}")
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "worker_lost"
    assert failed["finished_at"] is not None
    summary = await flow.get(f"/repositories/{repository['id']}")
    assert summary["last_scan"]["status"] == "failed"
    # A new scan of the repository and ref is a new scan, not the stuck one.
    again = await request_scan(flow.client, flow.owner, repository["id"])
    assert again["id"] != scan["id"]
    assert again["status"] == "queued"
    # ... and it runs.
    assert await flow.run_worker() == 1
    assert (await flow.get(f"/scans/{again['id']}"))["status"] == "succeeded"


async def test_a_stuck_running_scan_can_be_canceled(flow: Flow, tmp_path: Path) -> None:
    """Before the fix, a scan whose task had died stayed `running` with its cancel request
    ignored. Made stuck here directly, the way such scans exist in a database."""
    git = GitRepo(tmp_path / "app")
    git.commit({"a.py": "x = 1\n"})
    repository = await flow.repository(git.url)
    scan = await request_scan(flow.client, flow.owner, repository["id"])
    await _start_and_die(flow, scan["id"])
    task_id = await _task_id(flow, scan)
    async with flow.database.transaction() as session:
        await session.execute(update(Task).where(Task.id == task_id).values(status=TaskStatus.DEAD.value))
    url = f"{API}/scans/{scan['id']}/cancel"
    for _ in range(2):  # the second answers the canceled scan as it is
        response = await flow.client.post(url, headers=flow.owner.headers)
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "canceled"
    assert (await flow.get(f"/repositories/{repository['id']}"))["last_scan"]["status"] == "canceled"


async def test_a_scan_waiting_for_a_rerun_after_a_crash_is_canceled_at_once(flow: Flow, tmp_path: Path) -> None:
    git = GitRepo(tmp_path / "app")
    git.commit({"a.py": "x = 1\n"})
    repository = await flow.repository(git.url)
    scan = await request_scan(flow.client, flow.owner, repository["id"])
    await _start_and_die(flow, scan["id"])
    await _reap_after_the_lease(flow)
    assert (await _task(flow, scan)).status == TaskStatus.QUEUED.value
    response = await flow.client.post(f"{API}/scans/{scan['id']}/cancel", headers=flow.owner.headers)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "canceled"
    assert (await _task(flow, scan)).status == TaskStatus.CANCELED.value
    assert await flow.run_worker() == 0


async def test_a_running_scan_with_a_live_worker_is_asked_to_stop(flow: Flow, tmp_path: Path) -> None:
    git = GitRepo(tmp_path / "app")
    git.commit({"a.py": "x = 1\n"})
    repository = await flow.repository(git.url)
    scan = await request_scan(flow.client, flow.owner, repository["id"])
    await _start_and_die(flow, scan["id"])  # the lease still holds: the worker may be alive
    response = await flow.client.post(f"{API}/scans/{scan['id']}/cancel", headers=flow.owner.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["status"], body["cancel_requested_at"] is not None) == ("running", True)
    # It dies after all: the re-run settles the requested cancel.
    await _reap_after_the_lease(flow)
    assert await flow.run_worker() == 1
    assert (await flow.get(f"/scans/{scan['id']}"))["status"] == "canceled"


async def test_a_new_scan_request_settles_a_scan_stuck_before_the_fix(flow: Flow, tmp_path: Path) -> None:
    """A database may hold a scan stuck `running` from before dead tasks failed their scans:
    asking for a scan of its repository and ref fails it and queues a new one."""
    git = GitRepo(tmp_path / "app")
    git.commit({"a.py": "x = 1\n"})
    repository = await flow.repository(git.url)
    stuck = await request_scan(flow.client, flow.owner, repository["id"])
    await _start_and_die(flow, stuck["id"])
    task_id = await _task_id(flow, stuck)
    async with flow.database.transaction() as session:
        await session.execute(update(Task).where(Task.id == task_id).values(status=TaskStatus.DEAD.value))
    fresh = await request_scan(flow.client, flow.owner, repository["id"])
    assert fresh["id"] != stuck["id"]
    settled = await flow.get(f"/scans/{stuck['id']}")
    assert (settled["status"], settled["error"]["code"]) == ("failed", "worker_lost")
    assert await flow.run_worker() == 1
    assert (await flow.get(f"/scans/{fresh['id']}"))["status"] == "succeeded"


# --- a superuser's retry and cancel of the scan's task ------------------------------------------


async def _superuser(flow: Flow) -> SignedIn:
    admin = await register(flow.client, "grace")
    async with flow.database.transaction() as session:
        await session.execute(update(User).where(User.username == "grace").values(is_superuser=True))
    return admin


async def _days_match(flow: Flow) -> None:
    async with flow.database.session(write=False) as session:
        await assert_days_match(session)


async def _die_on_every_attempt(flow: Flow, scan: dict[str, Any]) -> Task:
    for _ in range(flow.settings.TASK_MAX_ATTEMPTS):
        await _start_and_die(flow, scan["id"])
        await _reap_after_the_lease(flow)
    task = await _task(flow, scan)
    assert task.status == TaskStatus.DEAD.value
    failed = await flow.get(f"/scans/{scan['id']}")
    assert (failed["status"], failed["error"]["code"]) == ("failed", "worker_lost")
    return task


async def test_a_retry_of_the_dead_task_runs_its_scan_once_to_success(flow: Flow, tmp_path: Path) -> None:
    git = GitRepo(tmp_path / "app")
    git.commit({"a.py": "x = 1\n"})
    repository = await flow.repository(git.url)
    scan = await request_scan(flow.client, flow.owner, repository["id"])
    task = await _die_on_every_attempt(flow, scan)
    admin = await _superuser(flow)
    await _days_match(flow)

    flow.clock.advance(minutes=5)
    response = await flow.client.post(f"{TASKS}/{task.id}/retry", headers=admin.headers)
    assert response.status_code == 200, response.text
    assert (response.json()["status"], response.json()["attempts"]) == ("queued", 0)
    queued = await flow.get(f"/scans/{scan['id']}")
    assert queued["status"] == "queued"
    assert (queued["error"], queued["finished_at"], queued["started_at"], queued["duration_ms"]) == (
        None,
        None,
        None,
        None,
    )
    assert queued["queued_at"] == scan["queued_at"]  # the same scan, on its day
    await _days_match(flow)
    # Whoever watches the scan now sees it queued again (the stream ends only at a final status).
    updates = scan_updates(flow.database, uuid.UUID(scan["id"]), poll_seconds=0)
    try:
        assert (await updates.__anext__())["status"] == "queued"
    finally:
        await updates.aclose()

    assert await flow.run_worker() == 1
    assert await flow.run_worker() == 0  # once
    done = await flow.get(f"/scans/{scan['id']}")
    assert (done["status"], done["error"]) == ("succeeded", None)
    assert (await _task(flow, scan)).status == TaskStatus.SUCCEEDED.value
    assert (await flow.get(f"/repositories/{repository['id']}"))["last_scan"]["status"] == "succeeded"
    await _days_match(flow)
    async with flow.database.session(write=False) as session:
        audited = (await session.scalars(select(AuditEvent.action).where(AuditEvent.org_id.is_(None)))).all()
    assert list(audited) == ["task.retried"]


async def test_a_retry_is_refused_while_another_scan_of_the_ref_is_active(flow: Flow, tmp_path: Path) -> None:
    git = GitRepo(tmp_path / "app")
    git.commit({"a.py": "x = 1\n"})
    repository = await flow.repository(git.url)
    scan = await request_scan(flow.client, flow.owner, repository["id"])
    task = await _die_on_every_attempt(flow, scan)
    other = await request_scan(flow.client, flow.owner, repository["id"])
    assert other["id"] != scan["id"]
    admin = await _superuser(flow)

    response = await flow.client.post(f"{TASKS}/{task.id}/retry", headers=admin.headers)
    assert response.status_code == 409, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "scan_already_active"
    # Nothing changed: the task stays dead, the scan failed, the other one queued; no audit.
    after = await _task(flow, scan)
    assert (after.status, after.attempts, after.last_error) == (TaskStatus.DEAD.value, task.attempts, task.last_error)
    failed = await flow.get(f"/scans/{scan['id']}")
    assert (failed["status"], failed["error"]["code"]) == ("failed", "worker_lost")
    assert (await flow.get(f"/scans/{other['id']}"))["status"] == "queued"
    async with flow.database.session(write=False) as session:
        assert (await session.scalars(select(AuditEvent.action).where(AuditEvent.org_id.is_(None)))).all() == []
    await _days_match(flow)

    # Once the other scan has finished, the retry goes through and runs the scan.
    assert await flow.run_worker() == 1
    response = await flow.client.post(f"{TASKS}/{task.id}/retry", headers=admin.headers)
    assert response.status_code == 200, response.text
    assert await flow.run_worker() == 1
    assert (await flow.get(f"/scans/{scan['id']}"))["status"] == "succeeded"
    await _days_match(flow)


async def test_a_superuser_canceling_the_task_of_a_scan_waiting_for_a_rerun_cancels_it(
    flow: Flow, tmp_path: Path
) -> None:
    git = GitRepo(tmp_path / "app")
    git.commit({"a.py": "x = 1\n"})
    repository = await flow.repository(git.url)
    scan = await request_scan(flow.client, flow.owner, repository["id"])
    await _start_and_die(flow, scan["id"])
    await _reap_after_the_lease(flow)  # the scan is `running`, its task queued for a re-run
    admin = await _superuser(flow)
    task_id = await _task_id(flow, scan)
    response = await flow.client.post(f"{TASKS}/{task_id}/cancel", headers=admin.headers)
    assert response.status_code == 200, response.text
    canceled = await flow.get(f"/scans/{scan['id']}")
    assert (canceled["status"], canceled["error"]) == ("canceled", None)
    assert canceled["finished_at"] is not None
    assert (await flow.get(f"/repositories/{repository['id']}"))["last_scan"]["status"] == "canceled"
    assert await flow.run_worker() == 0
    await _days_match(flow)
