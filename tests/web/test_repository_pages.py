"""The repositories and scan pages of an organization (`/orgs/{slug}/...`): each page per role,
CSRF refusal on every POST, tenant isolation (the 404 page for outsiders, on pages, the stream
and every POST), connecting (the API's field errors), scan now, archive, cancel, the findings
filters (htmx), triage, the SARIF download and the page's event stream (by cookie only)."""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from html import unescape
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession

from codepulse.config import Settings
from codepulse.orgs.models import Organization
from codepulse.repositories.models import Repository
from codepulse.scans.models import Finding, Scan, ScanFinding
from codepulse.web import repositories as web_repositories
from codepulse.web import scans as web_scans
from tests.factories import Account, FindingFactory, MakeMember, MakeOrg, MakeUser, RepositoryFactory, ScanFactory
from tests.stubs.smtp import SmtpServer
from tests.web.helpers import csrf_of, use_session

DETAIL_COLUMNS = (
    "fingerprint", "rule_id", "engine", "severity", "severity_rank", "title", "message", "cwe", "confidence", "path",
    "start_line", "end_line", "start_column", "end_column", "snippet", "at_head",
)  # fmt: skip


@pytest.fixture
def settings(base_settings: Settings, smtp_server: SmtpServer, tmp_path: Path) -> Settings:
    # Local paths connect (as with ALLOW_LOCAL_REPOSITORIES=true); the team plan's room for them.
    return base_settings.model_copy(
        update={**smtp_server.settings(), "ALLOW_LOCAL_REPOSITORIES": True, "DEFAULT_PLAN": "team"}
    )


@dataclass
class World:
    owner: Account
    member: Account
    viewer: Account
    outsider: Account
    org: Organization
    repository: Repository
    archived: Repository
    scan: Scan
    critical: Finding
    low: Finding
    foreign_scan: Scan
    foreign_repository: Repository

    @property
    def repo_url(self) -> str:
        return f"/orgs/engines/repositories/{self.repository.id}"

    @property
    def scan_url(self) -> str:
        return f"/orgs/engines/scans/{self.scan.id}"


def _seen(scan: Scan, finding: Finding, session: AsyncSession) -> None:
    details = {name: getattr(finding, name) for name in DETAIL_COLUMNS}
    session.add(ScanFinding(id=uuid.uuid4(), scan_id=scan.id, finding_id=finding.id, is_new=True, **details))


@pytest.fixture
async def world(session: AsyncSession, make_user: MakeUser, make_org: MakeOrg, make_member: MakeMember) -> World:
    owner = await make_user("ada")
    org = await make_org(owner, slug="engines", name="Engines")
    member = await make_member(org, "member", "mel")
    viewer = await make_member(org, "viewer", "vic")
    outsider = await make_user("mallory")
    other_org = await make_org(outsider, slug="elsewhere")

    repository = RepositoryFactory.create(org=org, name="octo/engine")
    archived = RepositoryFactory.create(org=org, name="octo/old-thing", archived=True)
    foreign_repository = RepositoryFactory.create(org=other_org, name="evil/corp")
    await session.flush()
    scan = ScanFactory.create(repository=repository, open_counts={"critical": 1, "low": 1})
    foreign_scan = ScanFactory.create(repository=foreign_repository)
    await session.flush()
    critical = FindingFactory.create(repository=repository, last_seen_scan_id=scan.id)
    low = FindingFactory.create(
        repository=repository,
        rule_id="generic-password",
        severity="low",
        severity_rank=3,
        title="A password in code",
        path="tests/fixtures.py",
        snippet='PASSWORD = "****"',
        last_seen_scan_id=scan.id,
    )
    await session.flush()
    _seen(scan, critical, session)
    _seen(scan, low, session)
    repository.last_scan_id = scan.id
    repository.last_scan_status = "succeeded"
    repository.last_scan_finished_at = scan.finished_at
    repository.open_critical = 1
    repository.open_low = 1
    await session.flush()
    return World(
        owner,
        member,
        viewer,
        outsider,
        org,
        repository,
        archived,
        scan,
        critical,
        low,
        foreign_scan,
        foreign_repository,
    )


def _is_page(response: httpx.Response, status_code: int) -> None:
    assert response.status_code == status_code, response.text[:500]
    assert response.headers["content-type"].startswith("text/html")
    assert f'data-status="{status_code}"' in response.text


async def _csrf(client: httpx.AsyncClient, path: str) -> str:
    page = await client.get(path)
    assert page.status_code == 200, page.text[:300]
    return csrf_of(page.text)


# --- the list ----------------------------------------------------------------------------------


async def test_the_list_per_role(client: httpx.AsyncClient, world: World) -> None:
    use_session(client, world.owner.token)
    page = await client.get("/orgs/engines/repositories")
    assert page.status_code == 200
    html = page.text
    assert f'data-repository="{world.repository.id}"' in html
    assert f'data-repository="{world.archived.id}"' not in html  # archived: hidden by default
    assert f'href="/orgs/engines/scans/{world.scan.id}"' in html  # the last scan, its status
    assert 'data-status="succeeded"' in html
    assert re.search(r'data-severity="critical">1<', html)
    assert 'data-testid="connect-form"' in html
    assert 'data-testid="github-import"' not in html  # no GitHub integration configured
    assert 'href="/repositories" aria-current="page"' in html

    everything = await client.get("/orgs/engines/repositories?archived=true")
    assert f'data-repository="{world.archived.id}"' in everything.text
    assert 'data-testid="hide-archived"' in everything.text

    use_session(client, world.viewer.token)
    seen = await client.get("/orgs/engines/repositories")
    assert seen.status_code == 200
    assert f'data-repository="{world.repository.id}"' in seen.text
    assert 'data-testid="connect-form"' not in seen.text

    use_session(client, world.outsider.token)
    _is_page(await client.get("/orgs/engines/repositories"), 404)
    _is_page(await client.get("/orgs/no-such-org/repositories"), 404)

    client.cookies.clear()
    anonymous = await client.get("/orgs/engines/repositories")
    assert (anonymous.status_code, anonymous.headers["location"]) == (
        303,
        "/sign-in?next=/orgs/engines/repositories",
    )


async def test_empty_state_and_the_header_link(
    client: httpx.AsyncClient, make_user: MakeUser, make_org: MakeOrg
) -> None:
    grace = await make_user("grace")
    use_session(client, grace.token)
    none = await client.get("/repositories")
    assert none.status_code == 200
    assert 'data-testid="no-organization"' in none.text
    await make_org(grace, slug="lab")
    link = await client.get("/repositories")
    assert (link.status_code, link.headers["location"]) == (303, "/orgs/lab/repositories")
    empty = await client.get("/orgs/lab/repositories")
    assert 'data-testid="empty"' in empty.text
    assert "No repositories yet." in empty.text


async def test_github_import_shows_only_when_configured(
    client: httpx.AsyncClient, app: FastAPI, world: World, settings: Settings
) -> None:
    use_session(client, world.owner.token)
    app.state.settings = settings.model_copy(update={"GITHUB_CLIENT_ID": "Iv1.test"})
    try:
        page = await client.get("/orgs/engines/repositories")
        assert 'data-testid="github-import"' in page.text
        use_session(client, world.member.token)
        assert 'data-testid="github-import"' not in (await client.get("/orgs/engines/repositories")).text
    finally:
        app.state.settings = settings


async def test_github_import_answers_beside_its_field(
    client: httpx.AsyncClient, app: FastAPI, world: World, settings: Settings
) -> None:
    use_session(client, world.owner.token)
    app.state.settings = settings.model_copy(update={"GITHUB_CLIENT_ID": "Iv1.test"})
    try:
        csrf = await _csrf(client, "/orgs/engines/repositories")
        url = "/orgs/engines/repositories/import"
        _is_page(await client.post(url, data={"full_names": "octo/x"}), 403)
        invalid = await client.post(url, data={"csrf_token": csrf, "full_names": "not a name"})
        assert invalid.status_code == 422
        assert 'data-field="full_names"' in invalid.text
        assert "owner/repository" in invalid.text
        # No linked GitHub account: said beside the field, nothing connected.
        unlinked = await client.post(url, data={"csrf_token": csrf, "full_names": "octo/engine-two"})
        assert unlinked.status_code == 422
        assert 'data-field="full_names"' in unlinked.text
        assert re.search(r'data-field="full_names"><li>[^<]*GitHub', unlinked.text)
        assert "octo/engine-two</a>" not in unlinked.text
    finally:
        app.state.settings = settings


async def test_connect_by_url(client: httpx.AsyncClient, world: World, tmp_path: Path) -> None:
    use_session(client, world.owner.token)
    csrf = await _csrf(client, "/orgs/engines/repositories")

    refused = await client.post("/orgs/engines/repositories", data={"clone_url": str(tmp_path)})
    _is_page(refused, 403)
    assert "This form has expired" in refused.text

    invalid = await client.post(
        "/orgs/engines/repositories", data={"csrf_token": csrf, "clone_url": "ftp://example.com/x", "name": ""}
    )
    assert invalid.status_code == 422
    assert 'data-field="clone_url"' in invalid.text
    assert 'value="ftp://example.com/x"' in invalid.text
    bad_branch = await client.post(
        "/orgs/engines/repositories", data={"csrf_token": csrf, "clone_url": str(tmp_path), "default_branch": "-x"}
    )
    assert bad_branch.status_code == 422
    assert 'data-field="default_branch"' in bad_branch.text

    local = tmp_path / "project"
    connected = await client.post(
        "/orgs/engines/repositories", data={"csrf_token": csrf, "clone_url": str(local), "name": ""}
    )
    assert connected.status_code == 303
    assert re.fullmatch(r"/orgs/engines/repositories/[0-9a-f-]{36}", connected.headers["location"])
    page = await client.get(connected.headers["location"])
    assert page.status_code == 200
    assert "<h1>project" in page.text
    assert 'data-testid="never-scanned"' in page.text

    again = await client.post("/orgs/engines/repositories", data={"csrf_token": csrf, "clone_url": str(local)})
    assert again.status_code == 422
    assert "already connected" in again.text

    # A member may not connect; an outsider does not see the organization.
    use_session(client, world.member.token)
    member_csrf = await _csrf(client, "/orgs/engines/repositories")
    _is_page(
        await client.post("/orgs/engines/repositories", data={"csrf_token": member_csrf, "clone_url": str(local)}), 403
    )
    use_session(client, world.outsider.token)
    outsider_csrf = await _csrf(client, "/orgs/elsewhere/repositories")
    _is_page(
        await client.post("/orgs/engines/repositories", data={"csrf_token": outsider_csrf, "clone_url": str(local)}),
        404,
    )


# --- one repository: scan now, archive --------------------------------------------------------


async def test_repository_page_per_role(client: httpx.AsyncClient, world: World) -> None:
    use_session(client, world.owner.token)
    page = await client.get(world.repo_url)
    assert page.status_code == 200
    for testid in ("scan-now", "scan-history", "archive"):
        assert f'data-testid="{testid}"' in page.text
    assert f'data-scan="{world.scan.id}"' in page.text

    use_session(client, world.member.token)
    page = await client.get(world.repo_url)
    assert 'data-testid="scan-now"' in page.text
    assert 'data-testid="archive"' not in page.text

    use_session(client, world.viewer.token)
    page = await client.get(world.repo_url)
    assert page.status_code == 200
    assert "<form" not in page.text.split("<main", 1)[1]  # no write buttons at all

    use_session(client, world.outsider.token)
    _is_page(await client.get(world.repo_url), 404)
    # Another organization's repository under my organization's slug: 404 too.
    use_session(client, world.owner.token)
    _is_page(await client.get(f"/orgs/engines/repositories/{world.foreign_repository.id}"), 404)
    _is_page(await client.get(f"/orgs/engines/repositories/{uuid.uuid4()}"), 404)


async def test_scan_now_then_archive(client: httpx.AsyncClient, world: World) -> None:
    use_session(client, world.member.token)
    csrf = await _csrf(client, world.repo_url)
    _is_page(await client.post(f"{world.repo_url}/scans", data={"mode": "head"}), 403)
    started = await client.post(f"{world.repo_url}/scans", data={"csrf_token": csrf, "mode": "history"})
    assert started.status_code == 303
    location = started.headers["location"]
    assert re.fullmatch(r"/orgs/engines/scans/[0-9a-f-]{36}", location)
    scan_page = await client.get(location)
    assert scan_page.status_code == 200
    assert f'data-stream="{location}/events"' in scan_page.text  # queued: followed live
    assert 'data-testid="cancel-scan"' in scan_page.text
    assert 'data-testid="findings-pending"' in scan_page.text
    # Asking again in the same mode follows the same scan; a bad mode is the 422 page.
    again = await client.post(f"{world.repo_url}/scans", data={"csrf_token": csrf, "mode": "history"})
    assert again.headers["location"] == location
    _is_page(await client.post(f"{world.repo_url}/scans", data={"csrf_token": csrf, "mode": "everything"}), 422)

    # Archiving is for admins.
    _is_page(await client.post(f"{world.repo_url}/archive", data={"csrf_token": csrf}), 403)
    use_session(client, world.owner.token)
    owner_csrf = await _csrf(client, world.repo_url)
    _is_page(await client.post(f"{world.repo_url}/archive", data={}), 403)
    archived = await client.post(f"{world.repo_url}/archive", data={"csrf_token": owner_csrf})
    assert (archived.status_code, archived.headers["location"]) == (303, world.repo_url)
    page = await client.get(world.repo_url)
    assert 'data-testid="unarchive"' in page.text
    assert 'data-testid="scan-now"' not in page.text
    assert f'data-repository="{world.repository.id}"' not in (await client.get("/orgs/engines/repositories")).text
    _is_page(await client.post(f"{world.repo_url}/scans", data={"csrf_token": owner_csrf}), 409)
    unarchived = await client.post(f"{world.repo_url}/unarchive", data={"csrf_token": owner_csrf})
    assert unarchived.status_code == 303
    assert 'data-testid="archive"' in (await client.get(world.repo_url)).text


# Every organization route of these pages, with a form body for the POSTs: the test below
# checks them all, and the one after it that no route is left out.
ORG_POSTS: dict[str, dict[str, str]] = {
    "/orgs/{slug}/repositories": {"clone_url": "/srv/git/project"},
    "/orgs/{slug}/repositories/import": {"full_names": "octo/x"},
    "/orgs/{slug}/repositories/{repository_id}/scans": {"mode": "head"},
    "/orgs/{slug}/repositories/{repository_id}/archive": {},
    "/orgs/{slug}/repositories/{repository_id}/unarchive": {},
    "/orgs/{slug}/scans/{scan_id}/cancel": {},
    "/orgs/{slug}/scans/{scan_id}/findings/{finding_id}": {"status": "ignored", "reason": "x"},
}
ORG_GETS = (
    "/orgs/{slug}/repositories",
    "/orgs/{slug}/repositories/github",
    "/orgs/{slug}/repositories/{repository_id}",
    "/orgs/{slug}/scans/{scan_id}",
    "/orgs/{slug}/scans/{scan_id}/findings",
    "/orgs/{slug}/scans/{scan_id}/events",
    "/orgs/{slug}/scans/{scan_id}/sarif",
)


def _fill(template: str, world: World) -> str:
    return template.format(
        slug="engines", repository_id=world.repository.id, scan_id=world.scan.id, finding_id=world.critical.id
    )


def test_every_organization_route_is_checked() -> None:
    declared = {
        (path, method)
        for router in (web_repositories.router, web_scans.router)
        for path, _, options in router.declared
        for method in options.get("methods") or ("GET",)
        if path.startswith("/orgs/")
    }
    assert declared == {(path, "POST") for path in ORG_POSTS} | {(path, "GET") for path in ORG_GETS}


async def test_viewers_are_refused_and_outsiders_see_nothing_on_every_post(
    client: httpx.AsyncClient, world: World
) -> None:
    use_session(client, world.viewer.token)
    viewer_csrf = await _csrf(client, "/orgs/engines/repositories")
    use_session(client, world.outsider.token)
    outsider_csrf = await _csrf(client, "/orgs/elsewhere/repositories")
    for template, data in ORG_POSTS.items():
        path = _fill(template, world)
        use_session(client, world.viewer.token)
        _is_page(await client.post(path, data=data), 403)  # no CSRF token: refused first
        _is_page(await client.post(path, data={**data, "csrf_token": viewer_csrf}), 403)
        use_session(client, world.outsider.token)
        _is_page(await client.post(path, data={**data, "csrf_token": outsider_csrf}), 404)
    for template in ORG_GETS:
        _is_page(await client.get(_fill(template, world)), 404)
    # My own organization's slug with another organization's objects: 404 as well.
    use_session(client, world.owner.token)
    for path in (f"/orgs/engines/scans/{world.foreign_scan.id}", f"/orgs/engines/scans/{world.foreign_scan.id}/sarif"):
        _is_page(await client.get(path), 404)


# --- the scan ------------------------------------------------------------------------------------


def _finding_rows(html: str) -> list[tuple[str, str]]:
    return re.findall(r'<tr data-finding="[^"]*" data-rule="([^"]+)" data-status="([^"]+)">', html)


async def test_scan_page_per_role(client: httpx.AsyncClient, world: World) -> None:
    use_session(client, world.owner.token)
    page = await client.get(world.scan_url)
    assert page.status_code == 200
    html = page.text
    assert _finding_rows(html) == [("aws-access-key-id", "open"), ("generic-password", "open")]
    assert 'data-stream="' not in html  # finished: nothing to follow
    assert 'data-testid="cancel-scan"' not in html
    assert html.count('data-testid="dismiss"') == 2
    assert f'href="{world.scan_url}/sarif"' in html
    assert '<script src="/static/scan.js' in html
    assert "<script>" not in html

    use_session(client, world.viewer.token)
    seen = await client.get(world.scan_url)
    assert seen.status_code == 200
    assert len(_finding_rows(seen.text)) == 2
    assert 'data-testid="dismiss"' not in seen.text
    assert 'method="post"' not in seen.text.split("<main", 1)[1]


async def test_findings_filters(client: httpx.AsyncClient, world: World) -> None:
    use_session(client, world.viewer.token)
    htmx = {"HX-Request": "true"}
    url = f"{world.scan_url}/findings"

    low = await client.get(url, params={"severity": "low"}, headers=htmx)
    assert low.status_code == 200
    assert low.text.lstrip().startswith('<div id="findings"')
    assert "<html" not in low.text
    assert _finding_rows(low.text) == [("generic-password", "open")]
    assert _finding_rows((await client.get(url, params={"rule": "aws-access-key-id"})).text) == [
        ("aws-access-key-id", "open")
    ]
    assert _finding_rows((await client.get(url, params={"path": "tests/"})).text) == [("generic-password", "open")]
    assert _finding_rows((await client.get(url, params={"status": "ignored"})).text) == []
    nothing = await client.get(url, params={"severity": "high"})
    assert 'data-testid="no-findings"' in nothing.text
    # Unknown values filter nothing; the full page takes the same filters (without JavaScript).
    assert len(_finding_rows((await client.get(url, params={"severity": "bogus"})).text)) == 2
    page = await client.get(world.scan_url, params={"severity": "critical"})
    assert _finding_rows(page.text) == [("aws-access-key-id", "open")]
    assert '<option value="critical" selected>' in page.text


async def test_triage_dismiss_and_reopen(client: httpx.AsyncClient, world: World, session: AsyncSession) -> None:
    use_session(client, world.member.token)
    csrf = await _csrf(client, world.scan_url)
    url = f"{world.scan_url}/findings/{world.critical.id}"
    htmx = {"HX-Request": "true"}

    _is_page(await client.post(url, data={"status": "false_positive", "reason": "fixture"}, headers=htmx), 403)
    missing = await client.post(url, data={"csrf_token": csrf, "status": "false_positive", "reason": " "}, headers=htmx)
    assert missing.status_code == 200
    assert 'data-field="triage"' in missing.text
    assert "Say why it is dismissed." in missing.text
    _is_page(await client.post(url, data={"csrf_token": csrf, "status": "ignored"}), 422)  # no JavaScript
    _is_page(await client.post(url, data={"csrf_token": csrf, "status": "fixed", "reason": "x"}), 422)

    dismissed = await client.post(
        url,
        data={"csrf_token": csrf, "status": "false_positive", "reason": "Test data", "filter_severity": "critical"},
        headers=htmx,
    )
    assert dismissed.status_code == 200
    assert _finding_rows(dismissed.text) == [("aws-access-key-id", "false_positive")]  # the filters kept
    assert 'data-testid="reopen"' in dismissed.text
    assert '<q class="reason" data-testid="dismissed-reason">Test data</q>' in dismissed.text
    api = await client.get(f"/api/v1/repositories/{world.repository.id}/findings", headers=world.owner.headers,
                           params={"status": "false_positive"})  # fmt: skip
    [finding] = api.json()["items"]
    assert (finding["id"], finding["dismissed_reason"]) == (str(world.critical.id), "Test data")
    filtered = await client.get(f"{world.scan_url}/findings", params={"status": "false_positive"})
    assert _finding_rows(filtered.text) == [("aws-access-key-id", "false_positive")]

    reopened = await client.post(url, data={"csrf_token": csrf, "status": "open", "filter_severity": "low"})
    assert (reopened.status_code, reopened.headers["location"]) == (303, f"{world.scan_url}?severity=low")
    reopened_page = (await client.get(world.scan_url)).text
    assert _finding_rows(reopened_page)[0] == ("aws-access-key-id", "open")
    assert 'data-testid="dismissed-reason"' not in reopened_page

    # A finding of another organization, through my organization's scan: 404.
    foreign = FindingFactory.create(repository=world.foreign_repository)
    await session.flush()
    _is_page(await client.post(f"{world.scan_url}/findings/{foreign.id}", data={"csrf_token": csrf, "status": "open"}),
             404)  # fmt: skip


async def test_a_dismissed_finding_shows_why_who_and_when_escaped(
    client: httpx.AsyncClient, world: World, session: AsyncSession
) -> None:
    use_session(client, world.member.token)
    csrf = await _csrf(client, world.scan_url)
    assert 'data-testid="dismissal"' not in (await client.get(world.scan_url)).text
    reason = '<script>alert("x")</script> & a test key'
    dismissed = await client.post(
        f"{world.scan_url}/findings/{world.critical.id}",
        data={"csrf_token": csrf, "status": "ignored", "reason": reason},
        headers={"HX-Request": "true"},
    )
    assert dismissed.status_code == 200
    assert "<script>alert" not in dismissed.text
    await session.refresh(world.critical)
    when = world.critical.dismissed_at
    assert when is not None
    expected = (
        '<q class="reason" data-testid="dismissed-reason">'
        "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; a test key</q>",
        'by <span class="dismisser">mel</span>',
        f"{when.strftime('%Y-%m-%d %H:%M')} UTC</time>",
    )
    for text in expected:
        assert text in dismissed.text, text
    # Everyone who sees the scan sees it (a viewer too), on the full page.
    use_session(client, world.viewer.token)
    page = await client.get(world.scan_url)
    assert page.text.count('data-testid="dismissal"') == 1
    assert all(text in page.text for text in expected)

    # Dismissed by an account since deleted: the reason stays, without a name.
    world.low.status, world.low.dismissed_reason, world.low.dismissed_at = "false_positive", "fixture", when
    await session.flush()
    both = (await client.get(world.scan_url)).text
    assert both.count('data-testid="dismissal"') == 2
    assert '<q class="reason" data-testid="dismissed-reason">fixture</q>' in both
    assert both.count('class="dismisser"') == 1

    # Reopened: nothing left to explain.
    use_session(client, world.member.token)
    await client.post(f"{world.scan_url}/findings/{world.critical.id}", data={"csrf_token": csrf, "status": "open"})
    assert (await client.get(world.scan_url)).text.count('data-testid="dismissal"') == 1


async def test_cancel_a_queued_scan(client: httpx.AsyncClient, world: World, session: AsyncSession) -> None:
    queued = ScanFactory.create(
        repository=world.repository, status="queued", phase="queued", started_at=None, finished_at=None,
        duration_ms=None, commit_sha=None,
    )  # fmt: skip
    await session.flush()
    url = f"/orgs/engines/scans/{queued.id}"
    use_session(client, world.viewer.token)
    page = await client.get(url)
    assert f'data-stream="{url}/events"' in page.text
    assert 'data-testid="cancel-scan"' not in page.text
    use_session(client, world.member.token)
    page = await client.get(url)
    csrf = csrf_of(page.text)
    _is_page(await client.post(f"{url}/cancel", data={}), 403)
    canceled = await client.post(f"{url}/cancel", data={"csrf_token": csrf})
    assert (canceled.status_code, canceled.headers["location"]) == (303, url)
    page = await client.get(url)
    assert 'data-status="canceled"' in page.text
    assert 'data-stream="' not in page.text
    # A finished scan cannot be canceled: the 409 page.
    _is_page(await client.post(f"{world.scan_url}/cancel", data={"csrf_token": csrf}), 409)


async def test_sarif_download_is_the_apis(client: httpx.AsyncClient, world: World) -> None:
    use_session(client, world.viewer.token)
    download = await client.get(f"{world.scan_url}/sarif")
    assert download.status_code == 200
    assert download.headers["content-type"] == "application/sarif+json"
    assert download.headers["content-disposition"] == f'attachment; filename="codepulse-scan-{world.scan.id}.sarif"'
    api = await client.get(f"/api/v1/scans/{world.scan.id}/sarif", headers=world.viewer.headers)
    assert download.content == api.content
    document = json.loads(download.content)
    assert document["version"] == "2.1.0"
    assert {result["ruleId"] for result in document["runs"][0]["results"]} == {"aws-access-key-id", "generic-password"}


def _events(text: str) -> list[tuple[str, dict[str, object]]]:
    events = []
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if line and not line.startswith(":"))
        if "event" in fields:
            events.append((fields["event"], json.loads(fields["data"])))
    return events


async def test_the_page_stream_is_the_cookies(client: httpx.AsyncClient, world: World) -> None:
    url = f"{world.scan_url}/events"
    use_session(client, world.owner.token)
    stream = await client.get(url)
    assert stream.status_code == 200
    assert stream.headers["content-type"].startswith("text/event-stream")
    [(name, body)] = _events(stream.text)
    assert (name, body["status"], body["id"]) == ("status", "succeeded", str(world.scan.id))

    use_session(client, world.outsider.token)
    _is_page(await client.get(url), 404)
    client.cookies.clear()
    # A bearer token does not open the page's stream, and the cookie does not open the API's.
    anonymous = await client.get(url, headers=world.owner.headers)
    assert (anonymous.status_code, anonymous.headers["location"]) == (303, f"/sign-in?next={url}")
    use_session(client, world.owner.token)
    api = await client.get(f"/api/v1/scans/{world.scan.id}/events")
    assert api.status_code == 401
    assert unescape(api.headers["content-type"]) == "application/problem+json"


async def test_findings_come_a_page_at_a_time(
    client: httpx.AsyncClient, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(web_scans, "FINDINGS_LIMIT", 1)
    use_session(client, world.viewer.token)
    first = await client.get(world.scan_url)
    assert _finding_rows(first.text) == [("aws-access-key-id", "open")]
    [link] = re.findall(r'hx-get="([^"]+)"[^>]*data-testid="next-findings"', first.text)
    assert re.findall(r'<a href="([^"]+)" hx-get', first.text)[0].startswith(f"{world.scan_url}?cursor=")
    second = await client.get(unescape(link), headers={"HX-Request": "true"})
    assert _finding_rows(second.text) == [("generic-password", "open")]
    assert 'data-testid="next-findings"' not in second.text
