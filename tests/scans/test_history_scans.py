"""History scans through the API and the real worker, on a repository the test builds: a secret
added, then deleted, in earlier commits is still reported (`in_history`: rotate it) with the
commit that introduced it; a later scan of the head leaves it so; a re-scan reads only new blobs;
a rewritten history fixes it; triage, SARIF, limits and the one-active-scan rule."""

from __future__ import annotations

import asyncio
import json
import subprocess
from datetime import datetime
from pathlib import Path
from typing import Any

import jsonschema

from tests.scans.conftest import Flow
from tests.scans.helpers import API, GitRepo, aws_key, config_file, request_scan

SCHEMA = Path(__file__).with_name("sarif-schema-2.1.0.json")
# bandit reports eval (B307, high confidence) in a Python file at the head; in an old version of
# a file, insecure code that is gone is not reported (only leaked secrets are).
INSECURE = "def run(text):\n    return eval(text)\n"


def _by_path(findings: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {finding["location"]["path"]: finding for finding in findings}


async def _history_repository(flow: Flow, root: Path) -> tuple[GitRepo, dict[str, Any], dict[str, str]]:
    git = GitRepo(root)
    commits = {
        "leak": git.commit(
            {"app/settings.py": config_file(aws_key(1)), "app/old.py": INSECURE, "README.md": "# app\n"},
            message="add settings",
        ),
        "second": git.commit({"app/keys.py": config_file(aws_key(2))}, message="add keys"),
    }
    commits["delete"] = git.commit({}, delete=["app/settings.py", "app/old.py"], message="remove the key")
    repository = await flow.repository(git.url, name="app")
    return git, repository, commits


async def test_a_deleted_secret_is_reported_in_history_with_the_commit_that_introduced_it(
    flow: Flow, tmp_path: Path
) -> None:
    git, repository, commits = await _history_repository(flow, tmp_path / "app")

    head = await flow.scan(repository["id"])
    assert head["mode"] == "head"
    assert [f["location"]["path"] for f in await flow.findings(repository["id"])] == ["app/keys.py"]

    history = await flow.scan(repository["id"], mode="history")
    assert history["status"] == "succeeded", history
    assert (history["mode"], history["commit_sha"]) == ("history", commits["delete"])
    findings = _by_path(await flow.findings(repository["id"]))
    assert set(findings) == {"app/settings.py", "app/keys.py"}  # no bandit finding for the deleted app/old.py
    deleted, current = findings["app/settings.py"], findings["app/keys.py"]
    assert (deleted["status"], deleted["at_head"], deleted["rule_id"]) == ("in_history", False, "aws-access-key-id")
    assert deleted["introduced"]["commit_sha"] == commits["leak"]
    assert deleted["introduced"]["author"] == "Test"
    assert datetime.fromisoformat(deleted["introduced"]["authored_at"]).tzinfo is not None
    assert deleted["location"]["start_line"] == 3
    assert (current["status"], current["at_head"]) == ("open", True)
    assert current["introduced"]["commit_sha"] == commits["second"]
    assert sum(history["counts"]["new"].values()) == 1  # the deleted key; the current one was known
    assert sum(history["counts"]["open"].values()) == 2
    summary = await flow.get(f"/repositories/{repository['id']}")
    assert sum(summary["last_scan"]["open_findings"].values()) == 2  # rotating a leaked key is work to do
    seen = await flow.get(f"/scans/{history['id']}/findings")
    assert {(f["location"]["path"], f["at_head"], f["introduced"]["commit_sha"]) for f in seen["items"]} == {
        ("app/settings.py", False, commits["leak"]),
        ("app/keys.py", True, commits["second"]),
    }
    only_history = await flow.findings(repository["id"], status="in_history")
    assert [f["id"] for f in only_history] == [deleted["id"]]

    # A scan of the head cannot see the history: the leaked key stays in_history, and the current
    # key keeps the commit that introduced it.
    again = await flow.scan(repository["id"])
    assert sum(again["counts"]["fixed"].values()) == 0
    findings = _by_path(await flow.findings(repository["id"]))
    assert findings["app/settings.py"]["status"] == "in_history"
    assert findings["app/keys.py"]["introduced"]["commit_sha"] == commits["second"]

    # A new commit: the next history scan reads only the new blob, the cache answers the rest.
    git.commit({"docs/notes.txt": "nothing secret here\n"}, message="notes")
    rescan = await flow.scan(repository["id"], mode="history")
    assert rescan["engine_calls"] == 1, rescan
    assert rescan["cache_hits"] >= 4
    assert sum(rescan["counts"]["new"].values()) == 0
    # The same commit again: answered from the earlier history scan, no clone and no engine call.
    unchanged = await flow.scan(repository["id"], mode="history")
    assert (unchanged["engine_calls"], unchanged["commit_sha"]) == (0, rescan["commit_sha"])
    reused = _by_path((await flow.get(f"/scans/{unchanged['id']}/findings"))["items"])
    assert reused["app/settings.py"]["introduced"]["commit_sha"] == commits["leak"]
    assert reused["app/settings.py"]["at_head"] is False


async def test_triage_of_a_finding_in_history_and_reopening_it(flow: Flow, tmp_path: Path) -> None:
    _, repository, _ = await _history_repository(flow, tmp_path / "app")
    await flow.scan(repository["id"], mode="history")
    deleted = _by_path(await flow.findings(repository["id"]))["app/settings.py"]
    url = f"{API}/findings/{deleted['id']}"

    refused = await flow.client.patch(url, headers=flow.owner.headers, json={"status": "in_history"})
    assert refused.status_code == 422
    assert refused.json()["errors"][0]["code"] == "status_not_settable"
    dismissed = await flow.client.patch(
        url, headers=flow.owner.headers, json={"status": "false_positive", "reason": "A revoked test key."}
    )
    assert dismissed.json()["status"] == "false_positive"
    assert deleted["id"] not in {f["id"] for f in await flow.findings(repository["id"])}
    later = await flow.scan(repository["id"], mode="history")
    assert sum(later["counts"]["open"].values()) == 1  # the dismissed one stays dismissed
    reopened = await flow.client.patch(url, headers=flow.owner.headers, json={"status": "open"})
    assert reopened.status_code == 200, reopened.text
    assert reopened.json()["status"] == "in_history"  # back where the scans put it, not at the head


async def test_a_rewritten_history_fixes_what_it_no_longer_holds(flow: Flow, tmp_path: Path) -> None:
    git, repository, _ = await _history_repository(flow, tmp_path / "app")
    await flow.scan(repository["id"], mode="history")
    # Purge the history: one new root commit with the current files, force-moved onto main.
    env = {
        "GIT_AUTHOR_NAME": "T",
        "GIT_AUTHOR_EMAIL": "t@e.x",
        "GIT_COMMITTER_NAME": "T",
        "GIT_COMMITTER_EMAIL": "t@e.x",
    }
    for args in (["checkout", "-q", "--orphan", "clean"], ["commit", "-q", "-m", "clean"], ["branch", "-M", "main"]):
        await asyncio.to_thread(
            subprocess.run, ["git", *args], cwd=git.root, env={"PATH": "/usr/bin:/bin", **env}, check=True
        )

    purged = await flow.scan(repository["id"], mode="history")
    assert purged["status"] == "succeeded", purged
    assert sum(purged["counts"]["fixed"].values()) == 1
    findings = await flow.findings(repository["id"], status=["fixed", "open", "in_history"])
    assert {(f["location"]["path"], f["status"]) for f in findings} == {
        ("app/settings.py", "fixed"),
        ("app/keys.py", "open"),
    }


async def test_sarif_of_a_history_scan_is_valid_and_says_where_each_secret_came_from(
    flow: Flow, tmp_path: Path
) -> None:
    _, repository, commits = await _history_repository(flow, tmp_path / "app")
    scan = await flow.scan(repository["id"], mode="history")
    response = await flow.client.get(f"{API}/scans/{scan['id']}/sarif", headers=flow.owner.headers)
    assert response.status_code == 200
    document = json.loads(response.content)
    jsonschema.validate(document, json.loads(SCHEMA.read_text()))
    results = {
        r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]: r for r in document["runs"][0]["results"]
    }
    deleted = results["app/settings.py"]
    assert deleted["properties"]["introducedIn"]["commitSha"] == commits["leak"]
    assert deleted["properties"]["atHead"] is False
    assert "rotate it" in deleted["message"]["text"]
    assert results["app/keys.py"]["properties"]["atHead"] is True
    assert document["runs"][0]["automationDetails"]["id"] == f"codepulse/{repository['id']}/"
    provenance = document["runs"][0]["versionControlProvenance"][0]
    assert provenance["revisionId"] == commits["delete"]


async def test_one_active_scan_per_ref_whatever_its_mode(flow: Flow, tmp_path: Path) -> None:
    _, repository, _ = await _history_repository(flow, tmp_path / "app")
    queued = await request_scan(flow.client, flow.owner, repository["id"], mode="history")
    assert queued["mode"] == "history"
    same = await request_scan(flow.client, flow.owner, repository["id"], mode="history", expect=200)
    assert same["id"] == queued["id"]
    response = await flow.client.post(
        f"{API}/repositories/{repository['id']}/scans", headers=flow.owner.headers, json={}
    )
    assert response.status_code == 409
    assert response.json()["code"] == "scan_active"
    bad = await flow.client.post(
        f"{API}/repositories/{repository['id']}/scans", headers=flow.owner.headers, json={"mode": "everything"}
    )
    assert bad.status_code == 422
    assert bad.headers["content-type"].startswith("application/problem+json")


async def test_history_limits_fail_the_scan_with_a_clear_error(flow: Flow, tmp_path: Path) -> None:
    git, repository, _ = await _history_repository(flow, tmp_path / "app")
    git.commit({"data/big.txt": "x = 1\n" * 400}, message="a big file")
    git.commit({}, delete=["data/big.txt"], message="gone again")
    flow.settings = flow.settings.model_copy(update={"SCAN_MAX_HISTORY_BYTES": 2048})
    scan = await flow.scan(repository["id"], mode="history")
    assert scan["status"] == "failed"
    assert scan["error"]["code"] == "repository_too_large"
    assert "SCAN_MAX_HISTORY_BYTES" in scan["error"]["message"]
    # The same repository scanned at the head is within its own limit.
    assert (await flow.scan(repository["id"]))["status"] == "succeeded"


async def test_a_history_scan_of_a_commit_fetches_its_whole_history_and_changes_no_tracked_finding(
    flow: Flow, tmp_path: Path
) -> None:
    git, repository, commits = await _history_repository(flow, tmp_path / "app")
    git.commit({"app/keys.py": "import os\n\nAWS_KEY_ID = os.environ['AWS_KEY_ID']\n"}, message="env")
    scan = await flow.scan(repository["id"], commits["delete"], mode="history")
    assert (scan["status"], scan["default_branch"], scan["commit_sha"]) == ("succeeded", False, commits["delete"])
    seen = _by_path((await flow.get(f"/scans/{scan['id']}/findings"))["items"])
    assert {path: item["at_head"] for path, item in seen.items()} == {"app/settings.py": False, "app/keys.py": True}
    assert seen["app/settings.py"]["introduced"]["commit_sha"] == commits["leak"]
    assert all(item["id"] is None for item in seen.values())
    assert await flow.findings(repository["id"]) == []  # only scans of the default branch track findings
