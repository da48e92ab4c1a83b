"""The full API flow against real git repositories: scan → worker → findings → triage, and the
findings' lifecycle across scans (fingerprints stable when lines move, fixed, reopened,
dismissed ones staying dismissed, branches that change nothing), and SARIF."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema

from tests.scans.conftest import Flow
from tests.scans.helpers import API, GitRepo, aws_key, config_file

SCHEMA = Path(__file__).with_name("sarif-schema-2.1.0.json")


def _total(counts: dict[str, int]) -> int:
    return sum(counts.values())


async def test_full_flow_lifecycle_and_triage(flow: Flow, tmp_path: Path) -> None:
    key, other_key = aws_key(1), aws_key(2)
    git = GitRepo(tmp_path / "app")
    git.commit({"app/settings.py": config_file(key), "README.md": "# app\n", "lib/util.py": "def f():\n    return 1\n"})
    repository = await flow.repository(git.url, name="app")

    first = await flow.scan(repository["id"])
    assert first["status"] == "succeeded", first
    assert first["progress"]["phase"] == "done"
    assert first["progress"]["percent"] == 100.0
    assert first["commit_sha"]
    assert len(first["commit_sha"]) == 40
    assert first["progress"]["files_total"] == 3
    assert first["files_scanned"] == 3
    assert "secrets" in first["engine_versions"]
    assert first["engine_calls"] > 0
    [finding] = await flow.findings(repository["id"])
    assert (finding["rule_id"], finding["status"], finding["location"]["path"]) == (
        "aws-access-key-id", "open", "app/settings.py"
    )  # fmt: skip
    assert finding["location"]["start_line"] == 3
    assert key not in finding["location"]["snippet"]
    assert key not in finding["message"]
    severity = finding["severity"]
    assert first["counts"]["new"][severity] == first["counts"]["open"][severity] == 1
    assert finding["first_seen_scan_id"] == finding["last_seen_scan_id"] == first["id"]
    seen = await flow.get(f"/scans/{first['id']}/findings")
    assert [(f["id"], f["new"], f["status"]) for f in seen["items"]] == [(finding["id"], True, "open")]
    summary = await flow.get(f"/repositories/{repository['id']}")
    assert summary["last_scan"]["id"] == first["id"]
    assert summary["last_scan"]["status"] == "succeeded"
    if severity != "info":
        assert summary["last_scan"]["open_findings"][severity] == 1

    # Lines move: the same finding (same fingerprint), nothing new.
    git.commit({"app/settings.py": config_file(key, above=5), "app/keys.py": config_file(other_key)})
    moved = await flow.scan(repository["id"])
    assert _total(moved["counts"]["new"]) == 1  # only app/keys.py's key
    findings = {f["location"]["path"]: f for f in await flow.findings(repository["id"])}
    assert findings["app/settings.py"]["id"] == finding["id"]
    assert findings["app/settings.py"]["fingerprint"] == finding["fingerprint"]
    assert findings["app/settings.py"]["location"]["start_line"] == 8
    assert findings["app/settings.py"]["last_seen_scan_id"] == moved["id"]
    assert findings["app/settings.py"]["first_seen_scan_id"] == first["id"]
    page = await flow.get(f"/repositories/{repository['id']}/findings", limit=1)
    rest = await flow.get(f"/repositories/{repository['id']}/findings", limit=1, cursor=page["next_cursor"])
    assert rest["next_cursor"] is None
    assert {page["items"][0]["id"], rest["items"][0]["id"]} == {f["id"] for f in findings.values()}

    # Triage: app/keys.py's key is a test fixture.
    keys_finding = findings["app/keys.py"]
    dismissed = await flow.client.patch(
        f"{API}/findings/{keys_finding['id']}",
        headers=flow.owner.headers,
        json={"status": "false_positive", "reason": "A test fixture."},
    )
    assert dismissed.status_code == 200, dismissed.text

    # The key leaves settings.py: fixed. The dismissed one stays dismissed, and is not counted.
    git.commit({"app/settings.py": "import os\nAWS_KEY_ID = os.environ['AWS_KEY_ID']\n"})
    fixed_scan = await flow.scan(repository["id"])
    assert _total(fixed_scan["counts"]["fixed"]) == 1
    assert fixed_scan["counts"]["fixed"][severity] == 1
    assert _total(fixed_scan["counts"]["new"]) == 0
    assert _total(fixed_scan["counts"]["open"]) == 0
    assert await flow.findings(repository["id"]) == []
    states = {f["id"]: f for f in await flow.findings(repository["id"], status=["fixed", "false_positive", "open"])}
    assert states[finding["id"]]["status"] == "fixed"
    assert states[finding["id"]]["fixed_in_scan_id"] == fixed_scan["id"]
    assert states[keys_finding["id"]]["status"] == "false_positive"
    assert states[keys_finding["id"]]["dismissed_reason"] == "A test fixture."

    # It comes back: reopened (a regression, counted as new); the dismissed one still dismissed.
    git.commit({"app/settings.py": config_file(key)})
    back = await flow.scan(repository["id"])
    assert back["counts"]["new"][severity] == 1
    assert _total(back["counts"]["new"]) == 1
    [reopened] = await flow.findings(repository["id"])
    assert (reopened["id"], reopened["status"], reopened["reopened_count"]) == (finding["id"], "open", 1)
    assert reopened["fixed_in_scan_id"] is None
    back_seen = (await flow.get(f"/scans/{back['id']}/findings"))["items"]
    assert {(f["location"]["path"], f["status"], f["dismissed_reason"], f["new"]) for f in back_seen} == {
        ("app/settings.py", "open", None, True),
        ("app/keys.py", "false_positive", "A test fixture.", False),
    }
    only_open = (await flow.get(f"/scans/{back['id']}/findings", status="open"))["items"]
    assert [f["location"]["path"] for f in only_open] == ["app/settings.py"]
    by_path = (await flow.get(f"/scans/{back['id']}/findings", path="app/k"))["items"]
    assert [f["location"]["path"] for f in by_path] == ["app/keys.py"]
    by_rule = (await flow.get(f"/scans/{back['id']}/findings", rule="no-such-rule"))["items"]
    assert by_rule == []

    audit = await flow.get("/orgs/engines/audit-log", action="finding.")
    assert [e["action"] for e in audit["items"]] == ["finding.status_changed"]


async def test_other_branches_change_nothing(flow: Flow, tmp_path: Path) -> None:
    git = GitRepo(tmp_path / "app")
    git.commit({"settings.py": config_file(aws_key(3))})
    repository = await flow.repository(git.url)
    base = await flow.scan(repository["id"])
    git.branch("feature/keys")
    git.commit({"settings.py": "x = 1\n", "more.py": config_file(aws_key(4))})
    git.checkout("main")

    branch = await flow.scan(repository["id"], "feature/keys")
    assert (branch["status"], branch["ref"], branch["default_branch"]) == ("succeeded", "feature/keys", False)
    assert _total(branch["counts"]["fixed"]) == 0
    assert _total(branch["counts"]["new"]) == 1
    seen = (await flow.get(f"/scans/{branch['id']}/findings"))["items"]
    assert [(f["location"]["path"], f["id"], f["status"]) for f in seen] == [("more.py", None, "open")]
    [still] = await flow.findings(repository["id"])
    assert (still["location"]["path"], still["last_seen_scan_id"]) == ("settings.py", base["id"])
    summary = await flow.get(f"/repositories/{repository['id']}")
    assert summary["last_scan"]["id"] == branch["id"]
    assert summary["last_scan"]["open_findings"] == {
        name: (1 if name == still["severity"] else 0) for name in ("critical", "high", "medium", "low")
    }


async def test_sarif_export(flow: Flow, tmp_path: Path) -> None:
    git = GitRepo(tmp_path / "app")
    commit = git.commit(
        {"src/config.py": config_file(aws_key(5)), "src/fixture.py": config_file(aws_key(6)), "src/ok.py": "x = 1\n"}
    )
    repository = await flow.repository(git.url, default_branch="main")
    scan = await flow.scan(repository["id"])
    fixture = next(f for f in await flow.findings(repository["id"]) if f["location"]["path"] == "src/fixture.py")
    dismissed = await flow.client.patch(
        f"{API}/findings/{fixture['id']}", headers=flow.owner.headers, json={"status": "ignored", "reason": "Fixture."}
    )
    assert dismissed.status_code == 200, dismissed.text
    response = await flow.client.get(f"{API}/scans/{scan['id']}/sarif", headers=flow.owner.headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/sarif+json"
    assert response.headers["content-disposition"].startswith("attachment;")
    document: dict[str, Any] = json.loads(response.content)
    jsonschema.validate(document, json.loads(SCHEMA.read_text()))
    [run] = document["runs"]
    config, ignored = run["results"]
    assert config["ruleId"] == "aws-access-key-id"
    assert config["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "src/config.py"
    assert config["partialFingerprints"]
    assert config["properties"]["confidence"] in ("high", "medium", "low")
    assert "suppressions" not in config
    assert ignored["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "src/fixture.py"
    assert ignored["suppressions"] == [{"kind": "external", "status": "accepted", "justification": "Fixture."}]
    assert any(rule["id"] == "aws-access-key-id" for rule in run["tool"]["driver"]["rules"])
    assert run["versionControlProvenance"] == [
        {"repositoryUri": repository["canonical_url"], "revisionId": commit, "branch": "main"}
    ]


async def test_confidence_is_stored_listed_filtered_and_exported(flow: Flow, tmp_path: Path) -> None:
    git = GitRepo(tmp_path / "app")
    git.commit(
        {
            # bandit: B602 with high confidence; B608 with low confidence, shown since the config asks.
            "app.py": "import subprocess\n"
            "subprocess.call(cmd, shell=True)\n"
            "query = \"SELECT * FROM users WHERE id = '%s'\" % uid\n",
            ".codepulse.yml": "rules:\n  min_confidence: low\n  disable: [B404]\n",
        }
    )
    repository = await flow.repository(git.url)
    scan = await flow.scan(repository["id"])
    assert scan["warnings"] == []
    findings = await flow.findings(repository["id"])
    assert sorted((f["rule_id"], f["confidence"]) for f in findings) == [
        ("bandit.B602", "high"),
        ("bandit.B608", "low"),
    ]
    low = await flow.findings(repository["id"], confidence="low")
    assert [f["rule_id"] for f in low] == ["bandit.B608"]
    high_or_medium = await flow.findings(repository["id"], confidence=["high", "medium"])
    assert [f["rule_id"] for f in high_or_medium] == ["bandit.B602"]
    seen = (await flow.get(f"/scans/{scan['id']}/findings"))["items"]
    assert sorted((f["rule_id"], f["confidence"]) for f in seen) == [("bandit.B602", "high"), ("bandit.B608", "low")]
    seen_high = (await flow.get(f"/scans/{scan['id']}/findings", confidence="high"))["items"]
    assert [f["rule_id"] for f in seen_high] == ["bandit.B602"]
    response = await flow.client.get(f"{API}/scans/{scan['id']}/findings?confidence=sure", headers=flow.owner.headers)
    assert response.status_code == 422
    sarif = await flow.get(f"/scans/{scan['id']}/sarif")
    assert sorted((r["ruleId"], r["properties"]["confidence"]) for r in sarif["runs"][0]["results"]) == [
        ("bandit.B602", "high"),
        ("bandit.B608", "low"),
    ]
    # A re-scan of the same commit reuses the stored findings: their confidence comes back too.
    again = await flow.scan(repository["id"])
    reused = (await flow.get(f"/scans/{again['id']}/findings"))["items"]
    assert sorted((f["rule_id"], f["confidence"]) for f in reused) == [("bandit.B602", "high"), ("bandit.B608", "low")]
