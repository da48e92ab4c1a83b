"""The worker side: incremental re-scans, cancel while running, failures, scheduled scans."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update

from codepulse.config import Settings
from codepulse.repositories.models import Repository
from codepulse.scans import ruleset
from codepulse.scans import service as scans_service
from codepulse.scans.jobs import enqueue_scheduled_scans
from codepulse.scans.models import Finding, Scan, ScanFinding
from codepulse.scans.pipeline import scan_repository
from codepulse.scans.pool import EnginePool
from codepulse.scans.results import PipelineResult
from codepulse.scans.ruleset import RuleOverrides
from codepulse.scans.runner import ScanRunner
from codepulse.scans.service import TASK_KIND
from codepulse.scans.supervisor import Progress
from codepulse.scheduler import JobContext
from codepulse.tasks import Task
from tests.scans.conftest import Flow
from tests.scans.helpers import API, GitRepo, SlowEngine, aws_key, config_file, request_scan, slow_scan_file


async def test_unchanged_rescan_makes_no_engine_calls(flow: Flow, tmp_path: Path) -> None:
    git = GitRepo(tmp_path / "app")
    files = {f"pkg/module_{i}.py": f"def f{i}():\n    return {i}\n" for i in range(12)}
    git.commit({**files, "pkg/settings.py": config_file(aws_key(7)), "pkg/copy.py": config_file(aws_key(7))})
    repository = await flow.repository(git.url)
    first = await flow.scan(repository["id"])
    assert first["status"] == "succeeded"
    assert first["engine_calls"] > 0
    assert first["cache_hits"] == 0
    second = await flow.scan(repository["id"])
    assert second["status"] == "succeeded"
    assert second["engine_calls"] == 0
    assert second["cache_hits"] > 0
    assert second["counts"]["open"] == first["counts"]["open"]
    assert sum(second["counts"]["new"].values()) == 0
    assert len(await flow.findings(repository["id"])) == 2  # one key, two files: two findings

    # A changed file is analysed again; the others come from the cache.
    git.commit({"pkg/module_0.py": "def f0():\n    return 'changed'\n"})
    third = await flow.scan(repository["id"])
    assert 0 < third["engine_calls"] < first["engine_calls"]


async def test_cancel_while_running(flow: Flow, tmp_path: Path) -> None:
    git = GitRepo(tmp_path / "big")
    git.commit({f"data/file_{i}.txt": f"line {i}\n" * 50 for i in range(40)})
    repository = await flow.repository(git.url)
    scan = await request_scan(flow.client, flow.owner, repository["id"])
    async with flow.database.transaction() as session:  # a worker holds the task while it runs
        await session.execute(update(Task).where(Task.unique_key == f"scan:{scan['id']}").values(status="running"))
    scanning = asyncio.Event()

    async def scan_until_observed(url: str, ref: str | None, **kwargs: Any) -> PipelineResult:
        report = kwargs.pop("progress")

        async def progress(state: Progress) -> None:
            await report(state)
            if state.phase == "scanning":
                scanning.set()

        return await scan_repository(url, ref, progress=progress, **kwargs)

    pool = EnginePool({"slow": SlowEngine()}, processes=1, scan_function=slow_scan_file)
    runner = ScanRunner(flow.database, flow.settings, clock=flow.clock, pool=pool, scan=scan_until_observed)
    try:
        running = asyncio.create_task(runner.run(uuid.UUID(scan["id"])))
        await asyncio.wait_for(scanning.wait(), timeout=30)
        mid = await flow.get(f"/scans/{scan['id']}")
        assert (mid["status"], mid["progress"]["phase"]) == ("running", "scanning")
        canceled = await flow.client.post(f"{API}/scans/{scan['id']}/cancel", headers=flow.owner.headers)
        assert (canceled.json()["status"], canceled.json()["cancel_requested_at"] is not None) == ("running", True)
        assert await asyncio.wait_for(running, timeout=30) == "canceled"
    finally:
        pool.close(wait=False)
    final = await flow.get(f"/scans/{scan['id']}")
    assert final["status"] == "canceled"
    assert final["finished_at"] is not None
    assert sum(final["counts"]["open"].values()) == 0
    async with flow.database.transaction(write=False) as session:
        assert await session.scalar(select(func.count()).select_from(ScanFinding)) == 0
        assert await session.scalar(select(func.count()).select_from(Finding)) == 0
    summary = await flow.get(f"/repositories/{repository['id']}")
    assert summary["last_scan"]["status"] == "canceled"


async def test_failures_and_cancel_before_start(flow: Flow, tmp_path: Path) -> None:
    git = GitRepo(tmp_path / "app")
    git.commit({"a.py": "x = 1\n"})
    repository = await flow.repository(git.url)

    missing = await flow.scan(repository["id"], "no-such-branch")
    assert missing["status"] == "failed"
    assert missing["error"]["code"] == "ref_not_found"
    assert (await flow.get(f"/repositories/{repository['id']}"))["last_scan"]["status"] == "failed"
    async with flow.database.transaction(write=False) as session:
        statuses = set((await session.scalars(select(Task.status).where(Task.kind == scans_service.TASK_KIND))).all())
    assert statuses == {"succeeded"}  # a failed scan is a finished task, not retried

    # The clone URL is checked again before cloning: here local repositories are no longer allowed.
    scan = await request_scan(flow.client, flow.owner, repository["id"])
    strict = flow.settings.model_copy(update={"ALLOW_LOCAL_REPOSITORIES": False})
    assert await ScanRunner(flow.database, strict, clock=flow.clock).run(uuid.UUID(scan["id"])) == "failed"
    refused = await flow.get(f"/scans/{scan['id']}")
    assert (refused["status"], refused["error"]["code"]) == ("failed", "unsupported_scheme")
    assert await flow.run_worker() == 1  # its task: the scan is finished, nothing to do
    assert (await flow.get(f"/scans/{scan['id']}"))["status"] == "failed"

    # Canceled while queued: the worker has nothing to run.
    queued = await request_scan(flow.client, flow.owner, repository["id"])
    await flow.client.post(f"{API}/scans/{queued['id']}/cancel", headers=flow.owner.headers)
    assert await flow.run_worker() == 0
    # A task that runs anyway (claimed before the cancel) skips the canceled scan.
    assert await ScanRunner(flow.database, flow.settings, clock=flow.clock).run(uuid.UUID(queued["id"])) == "skipped"
    assert (await flow.get(f"/scans/{queued['id']}"))["status"] == "canceled"


async def test_scheduled_scans(flow: Flow, tmp_path: Path) -> None:
    urls = {}
    for name in ("daily", "weekly", "never", "archived"):
        git = GitRepo(tmp_path / name)
        git.commit({"a.py": "x = 1\n"})
        urls[name] = git.url
    daily = await flow.repository(urls["daily"], scan_schedule="daily")
    weekly = await flow.repository(urls["weekly"], scan_schedule="weekly")
    await flow.repository(urls["never"])
    archived = await flow.repository(urls["archived"], scan_schedule="daily")
    async with flow.database.transaction() as session:
        await session.execute(
            update(Repository).where(Repository.id == uuid.UUID(archived["id"])).values(archived=True)
        )

    async def tick() -> dict[str, int]:
        await enqueue_scheduled_scans(JobContext(flow.database, flow.settings, flow.clock()))
        async with flow.database.transaction(write=False) as session:
            rows = await session.execute(
                select(Scan.repository_id, func.count()).where(Scan.trigger == "schedule").group_by(Scan.repository_id)
            )
            return {str(repository_id): count for repository_id, count in rows.all()}

    assert await tick() == {daily["id"]: 1, weekly["id"]: 1}
    assert await tick() == {daily["id"]: 1, weekly["id"]: 1}  # queued already, and not due
    assert await flow.run_worker() == 2
    flow.clock.advance(hours=23)
    assert await tick() == {daily["id"]: 1, weekly["id"]: 1}
    flow.clock.advance(hours=1)
    assert await tick() == {daily["id"]: 2, weekly["id"]: 1}
    flow.clock.advance(days=6)
    await flow.run_worker()
    assert await tick() == {daily["id"]: 3, weekly["id"]: 2}
    listed = await flow.get(f"/repositories/{daily['id']}/scans")
    assert {s["trigger"] for s in listed["items"]} == {"schedule"}
    assert all(s["requested_by"] is None for s in listed["items"])


async def test_concurrent_requests_queue_one_scan(flow: Flow, tmp_path: Path) -> None:
    """Requests racing for the same repository and ref: one scan is queued (202), metered and
    enqueued; every other request answers it (200)."""
    git = GitRepo(tmp_path / "app")
    git.commit({"a.py": "x = 1\n"})
    repository = await flow.repository(git.url)
    url = f"{API}/repositories/{repository['id']}/scans"
    responses = await asyncio.gather(*(flow.client.post(url, headers=flow.owner.headers, json={}) for _ in range(6)))
    assert sorted(r.status_code for r in responses) == [200, 200, 200, 200, 200, 202]
    assert len({r.json()["id"] for r in responses}) == 1
    async with flow.database.transaction(write=False) as session:
        assert await session.scalar(select(func.count()).select_from(Scan)) == 1
        assert await session.scalar(select(func.count()).select_from(Task).where(Task.kind == TASK_KIND)) == 1


async def test_rescan_of_an_unchanged_commit_reuses_results_without_cloning(
    base_settings: Settings, flow: Flow, tmp_path: Path, logs: Any
) -> None:
    # base_settings: logging configured (structlog events reach `logs`).
    git = GitRepo(tmp_path / "app")
    git.commit({"pkg/settings.py": config_file(aws_key(3)), "pkg/util.py": "def f():\n    return 1\n"})
    repository = await flow.repository(git.url)
    first = await flow.scan(repository["id"])
    clones_after_first = len(logs("scan.cloned"))
    assert clones_after_first == 1

    second = await flow.scan(repository["id"])
    assert len(logs("scan.cloned")) == clones_after_first  # one `git ls-remote`, no clone
    assert [event["from_scan_id"] for event in logs("scan.reused")] == [first["id"]]
    assert second["status"] == "succeeded"
    assert second["commit_sha"] == first["commit_sha"]
    assert second["engine_calls"] == 0
    assert second["counts"]["open"] == first["counts"]["open"]
    assert sum(second["counts"]["new"].values()) == 0
    first_seen = await flow.get(f"/scans/{first['id']}/findings")
    second_seen = await flow.get(f"/scans/{second['id']}/findings")
    assert [f["fingerprint"] for f in second_seen["items"]] == [f["fingerprint"] for f in first_seen["items"]]

    # A new commit is cloned and scanned again; the secret it removes is fixed.
    git.commit({"pkg/settings.py": "import os\n"})
    third = await flow.scan(repository["id"])
    assert len(logs("scan.cloned")) == clones_after_first + 1
    assert third["commit_sha"] != first["commit_sha"]
    assert sum(third["counts"]["fixed"].values()) == 1


def test_pipeline_signature_follows_what_results_depend_on(flow: Flow, monkeypatch: pytest.MonkeyPatch) -> None:
    signature = ScanRunner(flow.database, flow.settings).pipeline_signature()
    assert signature == ScanRunner(flow.database, flow.settings).pipeline_signature()
    smaller_files = flow.settings.model_copy(update={"SCAN_MAX_FILE_BYTES": 4096})
    assert ScanRunner(flow.database, smaller_files).pipeline_signature() != signature
    # The default profile of rules: a change to it re-scans unchanged commits.
    monkeypatch.setattr(
        ruleset, "DEFAULT_RULES", ruleset.DEFAULT_RULES.with_overrides(RuleOverrides(enable=("bandit.B101",)))
    )
    assert ScanRunner(flow.database, flow.settings).pipeline_signature() != signature


async def test_the_first_scan_fills_in_an_unknown_default_branch(flow: Flow, tmp_path: Path) -> None:
    git = GitRepo(tmp_path / "app", branch="develop")
    git.commit({"a.py": "x = 1\n"})
    repository = await flow.repository(git.url)  # the connect-time probe is off here
    assert repository["default_branch"] is None
    assert (await flow.scan(repository["id"]))["status"] == "succeeded"
    assert (await flow.get(f"/repositories/{repository['id']}"))["default_branch"] == "develop"
    # A branch named by the caller is never replaced.
    other = GitRepo(tmp_path / "other", branch="develop")
    other.commit({"a.py": "x = 1\n"})
    named = await flow.repository(other.url, name="named", default_branch="release")
    await flow.scan(named["id"])
    assert (await flow.get(f"/repositories/{named['id']}"))["default_branch"] == "release"
