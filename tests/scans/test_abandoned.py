"""Scans whose worker died: the task going `dead` fails the scan, and a scan nobody runs any more
can always be canceled."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import update

from codepulse.scans import lifecycle
from codepulse.scans.models import Scan
from codepulse.scans.service import TASK_KIND
from codepulse.scheduler import JobContext
from codepulse.tasks import Task, TaskStatus, claim_tasks, reap_expired_job
from tests.scans.conftest import Flow
from tests.scans.helpers import API, GitRepo, request_scan


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
