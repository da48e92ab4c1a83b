"""Scans over HTTP without running them: create (202, duplicate 200), quota, metering, the task,
lists with filters and cursors, cancel, roles and tenant isolation, validation problems."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from codepulse.billing.service import month_start
from codepulse.config import PlanLimitOverrides, Settings
from codepulse.scans.models import Scan
from codepulse.tasks import Task
from codepulse.usage.service import count_events
from tests.auth.helpers import SignedIn, register
from tests.factories import FindingFactory
from tests.helpers import FakeClock, Mailbox
from tests.orgs.helpers import add_member, create_org
from tests.scans.helpers import API, create_repository, request_scan

PUBLIC_URL = "https://140.82.112.3/octo/engine.git"


@pytest.fixture
async def owner(client: httpx.AsyncClient) -> SignedIn:
    owner = await register(client, "ada")
    await create_org(client, owner, "engines")
    return owner


@pytest.fixture
async def repository(client: httpx.AsyncClient, owner: SignedIn) -> dict[str, object]:
    return await create_repository(client, owner, PUBLIC_URL, default_branch="main")


async def test_create_queues_once_per_ref_meters_and_enqueues(
    client: httpx.AsyncClient, owner: SignedIn, repository: dict[str, object], session: AsyncSession
) -> None:
    scan = await request_scan(client, owner, str(repository["id"]))
    assert scan["status"] == "queued"
    assert (scan["trigger"], scan["ref"], scan["default_branch"], scan["requested_by"]) == (
        "manual", None, True, owner.user["id"]
    )  # fmt: skip
    assert scan["progress"] == {
        "phase": "queued", "files_total": 0, "files_done": 0, "bytes_total": 0, "bytes_done": 0, "percent": 0.0
    }  # fmt: skip
    assert scan["counts"]["new"] == {"critical": 0, "high": 0, "medium": 0, "low": 0, "info": 0}
    assert scan["error"] is None

    # The same ref again (the default branch by name, too): that scan, 200, not metered again.
    again = await request_scan(client, owner, str(repository["id"]), expect=200)
    by_name = await request_scan(client, owner, str(repository["id"]), "main", expect=200)
    assert again["id"] == by_name["id"] == scan["id"]
    other = await request_scan(client, owner, str(repository["id"]), "release/1.x")
    assert other["id"] != scan["id"]
    assert other["default_branch"] is False

    org_id = uuid.UUID(str(repository["org_id"]))
    assert await count_events(session, org_id, "scan.run", month_start(datetime.now(UTC))) == 2
    tasks = (await session.scalars(select(Task).where(Task.kind == "scans.run"))).all()
    assert sorted(task.payload["scan_id"] for task in tasks) == sorted([scan["id"], other["id"]])
    assert all(task.status == "queued" for task in tasks)
    stored = await session.get(Scan, uuid.UUID(scan["id"]))
    assert stored is not None
    assert stored.task_id in {task.id for task in tasks}

    fetched = await client.get(f"{API}/scans/{scan['id']}", headers=owner.headers)
    assert fetched.status_code == 200
    assert fetched.json() == scan

    # With a CLI token, the trigger is `api`.
    issued = await client.post(f"{API}/auth/tokens", headers=owner.headers, json={"name": "ci"})
    assert issued.status_code == 201, issued.text
    cli = SignedIn(issued.json()["token"], owner.user)
    from_ci = await request_scan(client, cli, str(repository["id"]), "ci")
    assert from_ci["trigger"] == "api"


async def test_monthly_quota(
    app_factory: Callable[[Settings], FastAPI], settings: Settings, session: AsyncSession
) -> None:
    app = app_factory(settings.model_copy(update={"PLAN_LIMITS": {"free": PlanLimitOverrides(scans_per_month=2)}}))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as client,
    ):
        owner = await register(client, "ada")
        await create_org(client, owner, "engines")
        repository = await create_repository(client, owner, PUBLIC_URL)
        for ref in ("a", "b"):
            await request_scan(client, owner, repository["id"], ref)
        refused = await client.post(
            f"{API}/repositories/{repository['id']}/scans", headers=owner.headers, json={"ref": "c"}
        )
        assert refused.status_code == 402, refused.text
        body = refused.json()
        assert (body["code"], body["resource"], body["limit"], body["used"]) == (
            "quota_exceeded",
            "scans_per_month",
            2,
            2,
        )
        assert (body["plan"], body["upgrade_to"]) == ("free", "pro")
        assert refused.headers["content-type"] == "application/problem+json"
        # An active scan is still answered: it costs nothing.
        await request_scan(client, owner, repository["id"], "a", expect=200)
        count = (await session.scalars(select(Scan).where(Scan.repository_id == uuid.UUID(repository["id"])))).all()
        assert len(count) == 2


async def test_lists_filters_and_cursors(
    client: httpx.AsyncClient, owner: SignedIn, repository: dict[str, object], clock: FakeClock
) -> None:
    ids = []
    for ref in ("a", "b", "c"):
        ids.append((await request_scan(client, owner, str(repository["id"]), ref))["id"])
        clock.advance(seconds=1)
    other = await create_repository(client, owner, "https://140.82.112.3/octo/other.git")
    other_scan = await request_scan(client, owner, other["id"])
    canceled = await client.post(f"{API}/scans/{ids[0]}/cancel", headers=owner.headers)
    assert canceled.json()["status"] == "canceled"

    url = f"{API}/repositories/{repository['id']}/scans"
    first = (await client.get(url, headers=owner.headers, params={"limit": 2})).json()
    assert [s["id"] for s in first["items"]] == [ids[2], ids[1]]  # most recent first
    second = (await client.get(url, headers=owner.headers, params={"limit": 2, "cursor": first["next_cursor"]})).json()
    assert ([s["id"] for s in second["items"]], second["next_cursor"]) == ([ids[0]], None)
    queued = (await client.get(url, headers=owner.headers, params={"status": "queued"})).json()
    assert [s["id"] for s in queued["items"]] == [ids[2], ids[1]]
    both = (await client.get(url, headers=owner.headers, params=[("status", "queued"), ("status", "canceled")])).json()
    assert len(both["items"]) == 3

    org = (await client.get(f"{API}/orgs/engines/scans", headers=owner.headers)).json()
    assert {s["id"] for s in org["items"]} == {*ids, other_scan["id"]}
    only = (
        await client.get(f"{API}/orgs/engines/scans", headers=owner.headers, params={"repository_id": other["id"]})
    ).json()
    assert [s["id"] for s in only["items"]] == [other_scan["id"]]
    bad = await client.get(url, headers=owner.headers, params={"cursor": "nope.nope"})
    assert (bad.status_code, bad.json()["code"]) == (422, "invalid_cursor")
    bad_status = await client.get(url, headers=owner.headers, params={"status": "sleeping"})
    assert bad_status.status_code == 422


async def test_cancel(
    client: httpx.AsyncClient, owner: SignedIn, repository: dict[str, object], session: AsyncSession
) -> None:
    queued = await request_scan(client, owner, str(repository["id"]))
    response = await client.post(f"{API}/scans/{queued['id']}/cancel", headers=owner.headers)
    assert response.status_code == 200, response.text
    assert (response.json()["status"], response.json()["finished_at"] is not None) == ("canceled", True)
    stored = await session.get(Scan, uuid.UUID(queued["id"]))
    assert stored is not None
    task = await session.get(Task, stored.task_id)
    assert task is not None
    assert task.status == "canceled"
    again = await client.post(f"{API}/scans/{queued['id']}/cancel", headers=owner.headers)
    assert (again.status_code, again.json()["status"]) == (200, "canceled")
    # A canceled scan frees its ref: a new scan can be queued.
    fresh = await request_scan(client, owner, str(repository["id"]))
    assert fresh["id"] != queued["id"]

    # Running (a worker holds its task): the scan keeps running, flagged; the worker stops it.
    await session.execute(update(Scan).where(Scan.id == uuid.UUID(fresh["id"])).values(status="running"))
    fresh_scan = await session.get(Scan, uuid.UUID(fresh["id"]))
    assert fresh_scan is not None
    await session.execute(update(Task).where(Task.id == fresh_scan.task_id).values(status="running"))
    await session.flush()
    running = await client.post(f"{API}/scans/{fresh['id']}/cancel", headers=owner.headers)
    assert running.json()["status"] == "running"
    assert running.json()["cancel_requested_at"] is not None

    await session.execute(update(Scan).where(Scan.id == uuid.UUID(fresh["id"])).values(status="succeeded"))
    await session.flush()
    finished = await client.post(f"{API}/scans/{fresh['id']}/cancel", headers=owner.headers)
    assert (finished.status_code, finished.json()["code"]) == (409, "scan_finished")

    audit = (
        await client.get(f"{API}/orgs/engines/audit-log", headers=owner.headers, params={"action": "scan."})
    ).json()
    assert sorted(e["action"] for e in audit["items"]) == ["scan.cancel_requested", "scan.canceled"]


async def test_roles_outsiders_and_validation(
    client: httpx.AsyncClient,
    owner: SignedIn,
    repository: dict[str, object],
    session: AsyncSession,
    mailbox: Mailbox,
) -> None:
    viewer = await add_member(client, session, mailbox, owner, "engines", "vera", "viewer")
    member = await add_member(client, session, mailbox, owner, "engines", "mia", "member")
    outsider = await register(client, "olaf")
    await create_org(client, outsider, "looms")
    scan = await request_scan(client, member, str(repository["id"]))

    for path in (f"/scans/{scan['id']}", f"/scans/{scan['id']}/findings", f"/scans/{scan['id']}/sarif"):
        denied = await client.get(f"{API}{path}", headers=outsider.headers)
        assert (denied.status_code, denied.json()["code"]) == (404, "scan_not_found"), path
        assert (await client.get(f"{API}{path}", headers=viewer.headers)).status_code == 200, path
    for path in (f"/repositories/{repository['id']}/scans", f"/repositories/{repository['id']}/findings"):
        denied = await client.get(f"{API}{path}", headers=outsider.headers)
        assert (denied.status_code, denied.json()["code"]) == (404, "repository_not_found"), path
    looms = await client.get(f"{API}/orgs/looms/scans", headers=outsider.headers)
    assert looms.json()["items"] == []
    missing = await client.get(f"{API}/scans/{uuid.uuid4()}", headers=owner.headers)
    assert missing.json()["code"] == "scan_not_found"

    below = await client.post(f"{API}/repositories/{repository['id']}/scans", headers=viewer.headers, json={})
    assert (below.status_code, below.json()["code"]) == (403, "insufficient_role")
    cancel = await client.post(f"{API}/scans/{scan['id']}/cancel", headers=viewer.headers)
    assert (cancel.status_code, cancel.json()["code"]) == (403, "insufficient_role")
    stranger = await client.post(f"{API}/scans/{scan['id']}/cancel", headers=outsider.headers)
    assert stranger.status_code == 404

    for ref in ("-upload-pack=x", "a..b", "a b", "x" * 256, ""):
        bad = await client.post(
            f"{API}/repositories/{repository['id']}/scans", headers=member.headers, json={"ref": ref}
        )
        assert bad.status_code == 422, ref
        assert bad.json()["errors"][0]["field"] == "body.ref"
    extra = await client.post(f"{API}/repositories/{repository['id']}/scans", headers=member.headers, json={"x": 1})
    assert extra.status_code == 422

    archived = await client.patch(
        f"{API}/repositories/{repository['id']}", headers=owner.headers, json={"archived": True}
    )
    assert archived.status_code == 200
    refused = await client.post(
        f"{API}/repositories/{repository['id']}/scans", headers=member.headers, json={"ref": "x"}
    )
    assert (refused.status_code, refused.json()["code"]) == (409, "repository_archived")


async def test_finding_triage_validation(
    client: httpx.AsyncClient, owner: SignedIn, repository: dict[str, object], session: AsyncSession
) -> None:
    finding = FindingFactory.create(
        org_id=uuid.UUID(str(repository["org_id"])), repository_id=uuid.UUID(str(repository["id"]))
    )
    await session.flush()
    url = f"{API}/findings/{finding.id}"
    no_reason = await client.patch(url, headers=owner.headers, json={"status": "ignored"})
    assert (no_reason.status_code, no_reason.json()["errors"][0]["code"]) == (422, "reason_required")
    fixed = await client.patch(url, headers=owner.headers, json={"status": "fixed"})
    assert (fixed.status_code, fixed.json()["errors"][0]["code"]) == (422, "status_not_settable")
    unknown = await client.patch(url, headers=owner.headers, json={"status": "gone", "reason": "x"})
    assert unknown.status_code == 422
    dismissed = await client.patch(url, headers=owner.headers, json={"status": "ignored", "reason": " test key "})
    assert dismissed.status_code == 200, dismissed.text
    body = dismissed.json()
    assert (body["status"], body["dismissed_reason"], body["dismissed_by"]) == ("ignored", "test key", owner.user["id"])
    listed = await client.get(f"{API}/repositories/{repository['id']}/findings", headers=owner.headers)
    assert listed.json()["items"] == []
    ignored = await client.get(
        f"{API}/repositories/{repository['id']}/findings", headers=owner.headers, params={"status": "ignored"}
    )
    assert [f["id"] for f in ignored.json()["items"]] == [str(finding.id)]
    reopened = await client.patch(url, headers=owner.headers, json={"status": "open"})
    assert (reopened.json()["status"], reopened.json()["dismissed_reason"]) == ("open", None)
    outsider = await register(client, "olaf")
    hidden = await client.patch(url, headers=outsider.headers, json={"status": "open"})
    assert (hidden.status_code, hidden.json()["code"]) == (404, "finding_not_found")
    audit = (
        await client.get(f"{API}/orgs/engines/audit-log", headers=owner.headers, params={"action": "finding."})
    ).json()
    assert len(audit["items"]) == 2
