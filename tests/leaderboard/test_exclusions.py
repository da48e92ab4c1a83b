"""Superusers exclude accounts from every leaderboard: idempotent, audited as platform events,
refused to everyone else; the board page cache is cleared once the change commits."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from codepulse.leaderboard.cache import board_cache
from codepulse.leaderboard.exclusions import ExclusionService
from codepulse.leaderboard.models import LeaderboardExclusion
from codepulse.orgs.models import AuditEvent
from tests.factories import Account, MakeOrg, MakeUser
from tests.helpers import FakeClock

API = "/api/v1"


def _path(user_id: uuid.UUID | str) -> str:
    return f"{API}/admin/users/{user_id}/leaderboard-exclusion"


@pytest.fixture
async def root(make_user: MakeUser) -> Account:
    return await make_user("root", is_superuser=True)


@pytest.fixture
async def target(make_user: MakeUser) -> Account:
    return await make_user("cheater")


@pytest.fixture(autouse=True)
def _empty_board_cache() -> None:
    board_cache.clear()


async def _exclusions(session: AsyncSession) -> list[LeaderboardExclusion]:
    statement = select(LeaderboardExclusion).execution_options(populate_existing=True)
    return list((await session.scalars(statement)).all())


async def _platform_events(session: AsyncSession) -> list[AuditEvent]:
    statement = select(AuditEvent).where(AuditEvent.org_id.is_(None)).order_by(AuditEvent.created_at, AuditEvent.id)
    return list((await session.scalars(statement.execution_options(populate_existing=True))).all())


async def _audit_count(session: AsyncSession) -> int:
    return await session.scalar(select(func.count()).select_from(AuditEvent)) or 0


async def test_a_superuser_excludes_an_account_and_it_is_audited(
    client: httpx.AsyncClient,
    session: AsyncSession,
    root: Account,
    target: Account,
    logs: Callable[[str], list[dict[str, object]]],
) -> None:
    response = await client.post(_path(target.model.id), headers=root.headers, json={"reason": "Fabricated usage"})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["user"] == {
        "id": str(target.model.id),
        "username": "cheater",
        "name": target.model.name,
        "avatar_url": None,
    }
    assert (body["reason"], body["excluded_by"]) == ("Fabricated usage", str(root.model.id))
    [row] = await _exclusions(session)
    assert (row.user_id, row.reason, row.excluded_by) == (target.model.id, "Fabricated usage", root.model.id)
    [event] = await _platform_events(session)
    assert (event.action, event.actor_id, event.target_type, event.target_id) == (
        "leaderboard.user_excluded",
        root.model.id,
        "user",
        str(target.model.id),
    )
    assert event.details == {"reason": "Fabricated usage"}
    assert event.ip == "127.0.0.1"
    [logged] = logs("leaderboard.user_excluded")
    assert (logged["user_id"], logged["admin_id"]) == (str(target.model.id), str(root.model.id))


async def test_excluding_twice_keeps_one_exclusion_and_replaces_the_reason(
    client: httpx.AsyncClient,
    session: AsyncSession,
    clock: FakeClock,
    root: Account,
    target: Account,
    make_user: MakeUser,
) -> None:
    first = await client.post(_path(target.model.id), headers=root.headers, json={"reason": "spam"})
    assert first.status_code == 201
    clock.advance(minutes=5)
    # The same request again changes nothing: 200, and nothing more to audit.
    same = await client.post(_path(target.model.id), headers=root.headers, json={"reason": "spam"})
    assert same.status_code == 200
    assert same.json() == first.json()
    assert len(await _platform_events(session)) == 1
    # Another superuser's new reason replaces the old one; the exclusion still dates from the first.
    other_root = await make_user("root2", is_superuser=True)
    changed = await client.post(_path(target.model.id), headers=other_root.headers, json={"reason": "bot traffic"})
    assert changed.status_code == 200
    assert (changed.json()["reason"], changed.json()["excluded_by"]) == ("bot traffic", str(other_root.model.id))
    assert changed.json()["created_at"] == first.json()["created_at"]
    [row] = await _exclusions(session)
    assert (row.reason, row.excluded_by) == ("bot traffic", other_root.model.id)
    events = await _platform_events(session)
    assert [event.action for event in events] == ["leaderboard.user_excluded"] * 2
    assert events[1].actor_id == other_root.model.id
    assert events[1].details == {"reason": "bot traffic", "previous_reason": "spam"}
    # Without a body the reason is cleared (a change, so audited too).
    cleared = await client.post(_path(target.model.id), headers=root.headers)
    assert cleared.status_code == 200
    assert cleared.json()["reason"] is None
    assert len(await _platform_events(session)) == 3


@pytest.mark.parametrize("body", [None, {}, {"reason": None}, {"reason": "   "}])
async def test_the_reason_is_optional(
    client: httpx.AsyncClient, session: AsyncSession, root: Account, target: Account, body: dict[str, Any] | None
) -> None:
    response = await client.post(_path(target.model.id), headers=root.headers, json=body)
    assert response.status_code == 201, response.text
    assert response.json()["reason"] is None
    [event] = await _platform_events(session)
    assert event.details == {"reason": None}


async def test_a_reason_may_span_lines_and_is_trimmed(
    client: httpx.AsyncClient, root: Account, target: Account
) -> None:
    reason = "  Two accounts, one machine:\n\tsee ticket 42  "
    response = await client.post(_path(target.model.id), headers=root.headers, json={"reason": reason})
    assert response.status_code == 201
    assert response.json()["reason"] == reason.strip()
    longest = await client.post(_path(target.model.id), headers=root.headers, json={"reason": "x" * 500})
    assert longest.status_code == 200
    assert longest.json()["reason"] == "x" * 500


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"reason": "x" * 501}, "string_too_long"),
        ({"reason": "abuse\x00"}, "control_character"),
        ({"reason": "abuse\x1b[31m"}, "control_character"),
        ({"reason": 42}, "string_type"),
        ({"reason": "abuse", "until": "2027-01-01"}, "extra_forbidden"),
    ],
)
async def test_a_bad_reason_is_a_422_and_changes_nothing(
    client: httpx.AsyncClient, session: AsyncSession, root: Account, target: Account, body: dict[str, Any], code: str
) -> None:
    board_cache.put("page", "cached")
    response = await client.post(_path(target.model.id), headers=root.headers, json=body)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["code"] == "validation_failed"
    assert [error["code"] for error in problem["errors"]] == [code]
    assert await _exclusions(session) == []
    assert await _audit_count(session) == 0
    assert board_cache.get("page", max_age=60) == "cached"


async def test_unknown_accounts_are_404(
    client: httpx.AsyncClient, session: AsyncSession, root: Account, target: Account
) -> None:
    board_cache.put("page", "cached")
    nobody = uuid.uuid4()
    for method in ("POST", "DELETE"):
        response = await client.request(method, _path(nobody), headers=root.headers, json={"reason": "who?"})
        assert response.status_code == 404, method
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == "user_not_found"
    malformed = await client.post(_path("not-a-uuid"), headers=root.headers)
    assert malformed.status_code == 422
    assert malformed.json()["errors"][0]["field"] == "path.user_id"
    assert await _exclusions(session) == []
    assert await _audit_count(session) == 0
    assert board_cache.get("page", max_age=60) == "cached"


async def test_only_superusers_may_exclude_include_or_list(
    client: httpx.AsyncClient, session: AsyncSession, root: Account, target: Account, make_user: MakeUser
) -> None:
    excluded = await make_user("excluded")
    assert (await client.post(_path(excluded.model.id), headers=root.headers)).status_code == 201
    events_before = await _audit_count(session)
    requests = [
        ("POST", _path(target.model.id), {"reason": "mine"}),
        ("DELETE", _path(excluded.model.id), None),
        ("GET", f"{API}/admin/leaderboard/exclusions", None),
    ]
    for method, url, body in requests:
        # Even an account excluding itself, or asking about its own exclusion, is no superuser.
        for who in (target, excluded):
            refused = await client.request(method, url, headers=who.headers, json=body)
            assert refused.status_code == 403, (method, url)
            assert refused.json()["code"] == "superuser_required"
        anonymous = await client.request(method, url, json=body)
        assert anonymous.status_code == 401, (method, url)
        assert anonymous.json()["code"] == "not_authenticated"
        assert anonymous.headers["www-authenticate"] == "Bearer"
    assert [row.user_id for row in await _exclusions(session)] == [excluded.model.id]
    assert await _audit_count(session) == events_before


async def test_including_again_ends_the_exclusion_and_is_audited(
    client: httpx.AsyncClient,
    session: AsyncSession,
    clock: FakeClock,
    root: Account,
    target: Account,
    logs: Callable[[str], list[dict[str, object]]],
) -> None:
    await client.post(_path(target.model.id), headers=root.headers, json={"reason": "spam"})
    clock.advance(minutes=1)
    board_cache.put("page", "cached")
    response = await client.delete(_path(target.model.id), headers=root.headers)
    assert response.status_code == 204
    assert response.content == b""
    assert await _exclusions(session) == []
    events = await _platform_events(session)
    assert [event.action for event in events] == ["leaderboard.user_excluded", "leaderboard.user_included"]
    assert (events[1].actor_id, events[1].target_id) == (root.model.id, str(target.model.id))
    assert events[1].details == {"previous_reason": "spam"}
    assert board_cache.get("page", max_age=60) is None
    assert len(logs("leaderboard.user_included")) == 1
    # Not excluded (any more): 404, and nothing is audited.
    again = await client.delete(_path(target.model.id), headers=root.headers)
    assert again.status_code == 404
    assert again.json()["code"] == "leaderboard_exclusion_not_found"
    assert len(await _platform_events(session)) == 2
    # Excluding again starts a new exclusion.
    assert (await client.post(_path(target.model.id), headers=root.headers)).status_code == 201


async def test_the_exclusions_list_is_paged_newest_first(
    client: httpx.AsyncClient, clock: FakeClock, root: Account, make_user: MakeUser
) -> None:
    users = [await make_user(f"user-{n}") for n in range(5)]
    for user in users:
        clock.advance(seconds=1)
        assert (await client.post(_path(user.model.id), headers=root.headers, json={"reason": "r"})).status_code == 201
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, str | int] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        response = await client.get(f"{API}/admin/leaderboard/exclusions", headers=root.headers, params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        seen += [item["user"]["username"] for item in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"user-{n}" for n in reversed(range(5))]
    assert pages == 3
    forged = await client.get(f"{API}/admin/leaderboard/exclusions?cursor=abc.def", headers=root.headers)
    assert forged.status_code == 422
    assert forged.json()["code"] == "invalid_cursor"
    # A deleted account's exclusion goes with it.
    assert (await client.delete(f"{API}/users/me", headers=users[0].headers)).status_code == 204
    listed = await client.get(f"{API}/admin/leaderboard/exclusions", headers=root.headers)
    assert [item["user"]["username"] for item in listed.json()["items"]] == [f"user-{n}" for n in (4, 3, 2, 1)]


async def test_platform_events_stay_out_of_organizations_audit_logs(
    client: httpx.AsyncClient, session: AsyncSession, make_org: MakeOrg, root: Account, target: Account
) -> None:
    org = await make_org(root, slug="acme")
    await client.patch(f"{API}/orgs/acme", headers=root.headers, json={"name": "Acme Inc"})
    await client.post(_path(target.model.id), headers=root.headers, json={"reason": "spam"})
    log = await client.get(f"{API}/orgs/acme/audit-log", headers=root.headers)
    assert log.status_code == 200
    assert [event["action"] for event in log.json()["items"]] == ["org.updated"]
    # Deleting an organization keeps the platform's events.
    assert (
        await client.request("DELETE", f"{API}/orgs/acme", headers=root.headers, json={"confirm_slug": org.slug})
    ).status_code == 204
    assert [event.action for event in await _platform_events(session)] == ["leaderboard.user_excluded"]


async def test_the_page_cache_is_cleared_only_once_the_change_commits(
    session: AsyncSession, clock: FakeClock, root: Account, target: Account
) -> None:
    service = ExclusionService(session, clock)
    board_cache.put("page", "cached")
    result = await service.exclude(root.model, target.model.id, "spam", None)
    assert result.created
    assert board_cache.get("page", max_age=60) == "cached"  # readers may still see the old page
    await session.commit()
    assert board_cache.get("page", max_age=60) is None
