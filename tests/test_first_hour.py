"""A new user's first hour, over real HTTP (uvicorn on a loopback port) on the run's database:
register, verify, create an organization, invite colleagues, connect a repository, scan, triage,
sync usage, read the trends — asserting each step that used to trip people (issue 18)."""

from __future__ import annotations

import gzip
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from codepulse.app import create_app
from codepulse.config import Settings
from codepulse.db import Database
from codepulse.scans import jobs as scan_jobs
from codepulse.tasks import TaskRegistry, Worker
from tests.auth.helpers import PASSWORD
from tests.databases import DatabaseServer, build_settings
from tests.helpers import FakeClock, Mailbox, served
from tests.scans.helpers import GitRepo, aws_key, config_file
from tests.stubs.smtp import SmtpServer

API = "/api/v1"


@dataclass
class Walk:
    client: httpx.AsyncClient
    database: Database
    settings: Settings
    clock: FakeClock
    mailbox: Mailbox

    async def call(self, method: str, path: str, token: str | None = None, **kwargs: Any) -> httpx.Response:
        headers = {**kwargs.pop("headers", {}), **({"Authorization": f"Bearer {token}"} if token else {})}
        return await self.client.request(method, f"{API}{path}", headers=headers, **kwargs)

    async def ok(self, method: str, path: str, token: str | None = None, **kwargs: Any) -> Any:
        response = await self.call(method, path, token, **kwargs)
        assert response.status_code < 300, response.text
        return response.json() if response.content else None

    async def register(self, username: str) -> str:
        body = {"email": f"{username}@example.com", "password": PASSWORD, "username": username, "name": username}
        token: str = (await self.ok("POST", "/auth/register", json=body))["token"]
        return token

    async def verify(self, username: str) -> None:
        """Open the verification link mailed at registration."""
        await self.mailbox.deliver()
        [message] = [
            mail
            for mail in self.mailbox.messages_to(f"{username}@example.com")
            if mail["Subject"] == "Confirm your email for codepulse"
        ]
        token = self.mailbox.link_token(message, "/verify-email")
        assert (await self.ok("POST", "/auth/verify-email", json={"token": token}))["email_verified"] is True

    async def run_scans(self) -> int:
        registry = TaskRegistry()
        scan_jobs.register_tasks(registry)
        worker = Worker(self.database, self.settings, registry, clock=self.clock, concurrency=1)
        return await worker.run_until_idle()


@pytest.fixture
async def walk(
    database_server: DatabaseServer, smtp_server: SmtpServer, clock: FakeClock, tmp_path: Path
) -> AsyncIterator[Walk]:
    url = await database_server.clone("first_hour")
    settings = build_settings(
        url,
        ALLOW_LOCAL_REPOSITORIES=True,
        REPOSITORY_PROBE_SECONDS=10,  # the connect-time check, on local repositories only
        SCAN_PROCESSES=1,
        SCAN_WORK_DIR=tmp_path / "scans",
        **smtp_server.settings(),
    )
    smtp_server.clear()
    database = Database.from_settings(settings)
    app = create_app(settings, database=database, clock=clock)
    try:
        async with (
            app.router.lifespan_context(app),
            served(app, "http") as origin,
            httpx.AsyncClient(base_url=origin, timeout=30) as client,
        ):
            yield Walk(client, database, settings, clock, Mailbox(smtp_server, database, settings, clock))
    finally:
        await database.dispose()


async def test_a_new_users_first_hour(walk: Walk, tmp_path: Path) -> None:
    # Registration: every problem at once, then the account, its verification mail at once.
    refused = await walk.call("POST", "/auth/register", json={"email": "x", "password": "short", "username": "ada"})
    assert refused.status_code == 422
    problems = {(e["field"], e["code"]) for e in refused.json()["errors"]}
    assert {("body.name", "missing"), ("body.password", "password_too_short")} <= problems
    ada = await walk.register("ada")
    me = await walk.ok("GET", "/users/me", ada)
    assert (me["username"], me["email_verified"]) == ("ada", False)
    await walk.verify("ada")

    # An organization without a slug: derived from the name, with a suffix when taken.
    first = await walk.ok("POST", "/orgs", ada, json={"name": "Analytical Engines"})
    second = await walk.ok("POST", "/orgs", ada, json={"name": "Analytical  Engines!"})
    assert (first["slug"], second["slug"]) == ("analytical-engines", "analytical-engines-2")
    renamed = await walk.ok("PATCH", f"/orgs/{second['slug']}", ada, json={"slug": "engines-lab"})
    assert renamed["slug"] == "engines-lab"
    org = first["slug"]

    # Invitations: the invitee sees why it cannot accept yet, verifies, accepts by id; another declines.
    for email in ("grace@example.com", "linus@example.com"):
        await walk.ok("POST", f"/orgs/{org}/invitations", ada, json={"email": email, "role": "member"})
    grace, linus, mallory = [await walk.register(name) for name in ("grace", "linus", "mallory")]
    [pending] = (await walk.ok("GET", "/invitations", grace))["items"]
    assert (pending["can_accept"], pending["reason"], pending["org"]) == (False, "email_not_verified", None)
    early = await walk.call("POST", f"/invitations/{pending['id']}/accept", grace)
    assert (early.status_code, early.json()["code"]) == (403, "email_not_verified")
    await walk.verify("grace")
    [ready] = (await walk.ok("GET", "/invitations", grace))["items"]
    assert (ready["can_accept"], ready["org"]["slug"]) == (True, org)
    await walk.verify("mallory")
    stolen = await walk.call("POST", f"/invitations/{ready['id']}/accept", mallory)
    assert (stolen.status_code, stolen.json()["code"]) == (404, "invitation_not_found")
    joined = await walk.ok("POST", f"/invitations/{ready['id']}/accept", grace)
    assert (joined["slug"], joined["role"]) == (org, "member")
    await walk.verify("linus")
    [linus_invitation] = (await walk.ok("GET", "/invitations", linus))["items"]
    declined = await walk.call("POST", f"/invitations/{linus_invitation['id']}/decline", linus)
    assert declined.status_code == 204
    assert (await walk.ok("GET", "/invitations", linus))["items"] == []
    assert (await walk.ok("GET", f"/orgs/{org}/invitations", ada))["items"] == []
    audit = await walk.ok("GET", f"/orgs/{org}/audit-log", ada, params={"action": "invitation.declined"})
    assert len(audit["items"]) == 1

    # A repository by local path: accepted as file://, named after its directory, default branch
    # from the remote's HEAD; a directory that is no Git repository is refused at connect time.
    git = GitRepo(tmp_path / "work" / "payments", branch="trunk")
    git.commit({"settings.py": config_file(aws_key(7)), "README.md": "# payments\n"})
    repository = await walk.ok("POST", f"/orgs/{org}/repositories", ada, json={"clone_url": str(git.root)})
    assert (repository["name"], repository["default_branch"]) == ("payments", "trunk")
    assert repository["clone_url"].startswith("file:///")
    (tmp_path / "plain").mkdir()
    not_git = await walk.call("POST", f"/orgs/{org}/repositories", ada, json={"clone_url": str(tmp_path / "plain")})
    assert not_git.status_code == 422
    assert not_git.json()["errors"][0]["code"] == "not_a_git_repository"
    relative = await walk.call("POST", f"/orgs/{org}/repositories", ada, json={"clone_url": "./payments"})
    assert relative.status_code == 422
    assert "file:///" in relative.json()["detail"]

    # Scan; the same finding has the same id in both lists, and PATCH takes it.
    scan = await walk.ok("POST", f"/repositories/{repository['id']}/scans", ada, json={})
    assert await walk.run_scans() == 1
    [seen] = (await walk.ok("GET", f"/scans/{scan['id']}/findings", ada))["items"]
    [tracked] = (await walk.ok("GET", f"/repositories/{repository['id']}/findings", ada))["items"]
    assert seen["id"] == tracked["id"]
    assert seen["scan_finding_id"] != seen["id"]
    triaged = await walk.ok(
        "PATCH", f"/findings/{seen['id']}", grace, json={"status": "false_positive", "reason": "A test key."}
    )
    assert triaged["status"] == "false_positive"

    # Usage: a rejected record names its own ids; every trends range the API lists is accepted.
    now = walk.clock()
    record = {"source": "claude-code", "model": "claude-sonnet-4-5", "input_tokens": 10, "output_tokens": 5}
    records = [
        {**record, "message_id": "msg-ok", "request_id": "req-ok", "timestamp": now.isoformat()},
        {
            **record,
            "message_id": "msg-late",
            "request_id": "req-late",
            "timestamp": (now + timedelta(days=3)).isoformat(),
        },
    ]
    body = gzip.compress(
        json.dumps({"client": {"name": "test", "version": "1"}, "machine_id": "laptop-1", "records": records}).encode()
    )
    synced = await walk.ok(
        "POST", "/sync", ada, content=body, headers={"Content-Encoding": "gzip", "Content-Type": "application/json"}
    )
    assert synced["inserted"] == 1
    assert [(r["index"], r["message_id"], r["request_id"], r["code"]) for r in synced["rejected"]] == [
        (1, "msg-late", "req-late", "timestamp_in_future")
    ]
    for range_ in ("7d", "30d", "90d", "365d", "all"):
        trends = await walk.ok("GET", "/dashboard/trends", ada, params={"range": range_})
        assert sum(point["records"] for point in trends["points"]) == 1, range_
