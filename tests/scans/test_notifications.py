"""What a finished scan tells people (through codepulse.events, as notifications): whoever started
it that it finished or failed, and the organization's admins when a scan of the default branch
opened new high or critical findings (one notification per scan, the counts in its data)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import select

from codepulse.orgs.models import Membership, Organization
from tests.auth.helpers import register
from tests.scans.conftest import Flow
from tests.scans.helpers import GitRepo, aws_key, config_file


async def _mine(flow: Flow, headers: dict[str, str]) -> list[dict[str, Any]]:
    response = await flow.client.get("/api/v1/notifications", headers=headers)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def test_a_scan_notifies_its_requester_and_admins_of_new_serious_findings(flow: Flow, tmp_path: Path) -> None:
    git = GitRepo(tmp_path / "app")
    git.commit({"pkg/settings.py": config_file(aws_key(3)), "pkg/app.py": "x = 1\n"})
    repository = await flow.repository(git.url)
    viewer = await register(flow.client, "vic")
    async with flow.database.transaction() as session:
        org_id = await session.scalar(select(Organization.id).where(Organization.slug == "engines"))
        session.add(Membership(org_id=org_id, user_id=uuid.UUID(viewer.user["id"]), role="viewer"))

    scan = await flow.scan(repository["id"])
    assert scan["status"] == "succeeded"
    serious = scan["counts"]["new"]["critical"] + scan["counts"]["new"]["high"]
    assert serious > 0
    mine = await _mine(flow, flow.owner.headers)
    assert sorted(item["kind"] for item in mine) == ["new_critical_findings", "scan_completed"]
    by_kind = {item["kind"]: item for item in mine}
    assert by_kind["scan_completed"]["data"]["scan_id"] == scan["id"]
    assert (
        by_kind["new_critical_findings"]["data"]["critical"] + by_kind["new_critical_findings"]["data"]["high"]
        == serious
    )
    assert by_kind["new_critical_findings"]["org_id"] == scan["org_id"]
    assert await _mine(flow, viewer.headers) == []  # neither the requester nor an admin

    # The same findings again: the requester hears of the scan, nobody of new findings.
    again = await flow.scan(repository["id"])
    kinds = sorted(item["kind"] for item in await _mine(flow, flow.owner.headers))
    assert kinds == ["new_critical_findings", "scan_completed", "scan_completed"]
    assert sum(again["counts"]["new"].values()) == 0

    missing = await flow.scan(repository["id"], "no-such-branch")
    assert missing["status"] == "failed"
    failed = [item for item in await _mine(flow, flow.owner.headers) if item["kind"] == "scan_failed"]
    assert [(item["data"]["scan_id"], item["data"]["error_code"]) for item in failed] == [
        (missing["id"], "ref_not_found")
    ]
