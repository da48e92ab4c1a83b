"""Notifications: `notify` (recipients, dedup, preferences, the caller's transaction), a user's
own notifications over HTTP (lists, unread count, read, read-all, delete; another user's id is a
404), preferences and kinds, and the pruning job."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from codepulse.config import Settings
from codepulse.db import Database
from codepulse.notifications import jobs
from codepulse.notifications.kinds import KINDS
from codepulse.notifications.models import Notification, NotificationPreference
from codepulse.notifications.service import OrgMembers, notify
from codepulse.orgs.service import Role
from codepulse.scheduler import JobContext
from tests.factories import Account, MakeMember, MakeOrg, MakeUser
from tests.helpers import FakeClock

API = "/api/v1/notifications"
NOON = datetime(2026, 12, 4, 12, tzinfo=UTC)


async def _notify(
    session: AsyncSession, users: list[Account], key: str, kind: str = "scan_completed", **extra: Any
) -> int:
    return await notify(
        session,
        [user.model.id for user in users],
        kind,
        f"Title {key}",
        f"Body {key}",
        {"scan_id": key},
        key,
        now=extra.pop("now", NOON),
        **extra,
    )


async def test_notify_dedups_and_follows_preferences(session: AsyncSession, make_user: MakeUser) -> None:
    ada, bob = await make_user("ada"), await make_user("bob")
    session.add(
        NotificationPreference(user_id=bob.model.id, kind="scan_completed", in_app=False, email=False, updated_at=NOON)
    )
    await session.flush()
    assert await _notify(session, [ada, bob, ada], "scan-1") == 1  # bob turned the kind off; ada once
    assert await _notify(session, [ada], "scan-1") == 0  # the same event again
    assert await _notify(session, [bob], "fail-1", kind="scan_failed") == 1  # another kind is on
    rows = (await session.execute(select(Notification.user_id, Notification.kind, Notification.data))).all()
    assert sorted((row.user_id == ada.model.id, row.kind, row.data["scan_id"]) for row in rows) == [
        (False, "scan_failed", "fail-1"),
        (True, "scan_completed", "scan-1"),
    ]
    with pytest.raises(ValueError, match="unknown notification kind"):
        await _notify(session, [ada], "x", kind="made_up")


async def test_an_organizations_members_at_or_above_a_role(
    session: AsyncSession, make_user: MakeUser, make_org: MakeOrg, make_member: MakeMember
) -> None:
    owner = await make_user("owner")
    org = await make_org(owner, slug="engines")
    admin = await make_member(org, "admin", "adm")
    await make_member(org, "member", "mem")
    await make_member(org, "viewer", "vic")
    created = await notify(
        session, OrgMembers(org.id, Role.ADMIN), "new_critical_findings", "t", "b", {}, "scan-9", now=NOON
    )
    assert created == 2
    rows = (await session.execute(select(Notification.user_id, Notification.org_id))).all()
    assert {row.user_id for row in rows} == {owner.model.id, admin.model.id}
    assert {row.org_id for row in rows} == {org.id}


async def test_a_rolled_back_change_notifies_nobody(db: Database, make_user: MakeUser) -> None:
    ada = await make_user("ada")

    class Boom(Exception):
        pass

    async def change_that_fails() -> None:
        async with db.transaction() as session:
            await _notify(session, [ada], "scan-rolled-back")
            raise Boom

    with pytest.raises(Boom):
        await change_that_fails()
    async with db.transaction(write=False) as session:
        assert await session.scalar(select(func.count()).select_from(Notification)) == 0


async def test_my_notifications_over_http(
    client: httpx.AsyncClient, session: AsyncSession, make_user: MakeUser, clock: FakeClock
) -> None:
    ada, bob = await make_user("ada"), await make_user("bob")
    for n in range(3):
        await _notify(session, [ada], f"scan-{n}", now=NOON + timedelta(minutes=n))
    await _notify(session, [ada], "fail-0", kind="scan_failed", now=NOON + timedelta(minutes=5))
    await _notify(session, [bob], "bobs", now=NOON)
    await session.flush()

    first = (await client.get(API, headers=ada.headers, params={"limit": 3})).json()
    assert [item["data"]["scan_id"] for item in first["items"]] == [
        "fail-0",
        "scan-2",
        "scan-1",
    ]
    rest = (await client.get(API, headers=ada.headers, params={"limit": 3, "cursor": first["next_cursor"]})).json()
    assert [item["data"]["scan_id"] for item in rest["items"]] == ["scan-0"]
    assert rest["next_cursor"] is None
    failed = (await client.get(API, headers=ada.headers, params={"kind": "scan_failed"})).json()["items"]
    assert [item["kind"] for item in failed] == ["scan_failed"]
    assert (await client.get(f"{API}/unread-count", headers=ada.headers)).json() == {"count": 4}

    clock.now = NOON + timedelta(hours=1)
    one = first["items"][0]["id"]
    read = await client.post(f"{API}/{one}/read", headers=ada.headers)
    assert read.status_code == 200
    assert read.json()["read_at"] == "2026-12-04T13:00:00Z"
    clock.advance(minutes=5)
    again = await client.post(f"{API}/{one}/read", headers=ada.headers)
    assert again.json()["read_at"] == "2026-12-04T13:00:00Z"  # idempotent
    unread = (await client.get(API, headers=ada.headers, params={"unread": "true"})).json()["items"]
    assert len(unread) == 3
    assert (await client.get(f"{API}/unread-count", headers=ada.headers)).json() == {"count": 3}

    bobs = (await client.get(API, headers=bob.headers)).json()["items"][0]["id"]
    for method, path in (
        ("POST", f"{API}/{bobs}/read"),
        ("DELETE", f"{API}/{bobs}"),
        ("POST", f"{API}/{uuid.uuid4()}/read"),
    ):
        hidden = await client.request(method, path, headers=ada.headers)
        assert (hidden.status_code, hidden.json()["code"]) == (404, "notification_not_found"), path

    assert (await client.post(f"{API}/read-all", headers=ada.headers)).json() == {"updated": 3}
    assert (await client.get(f"{API}/unread-count", headers=ada.headers)).json() == {"count": 0}
    assert (await client.get(f"{API}/unread-count", headers=bob.headers)).json() == {"count": 1}
    assert (await client.delete(f"{API}/{one}", headers=ada.headers)).status_code == 204
    assert (await client.delete(f"{API}/{one}", headers=ada.headers)).status_code == 404
    assert (await client.get(API)).status_code == 401


async def test_preferences_and_kinds(client: httpx.AsyncClient, make_user: MakeUser) -> None:
    ada = await make_user("ada")
    kinds = (await client.get(f"{API}/kinds", headers=ada.headers)).json()
    assert [kind["kind"] for kind in kinds] == list(KINDS)
    assert next(kind for kind in kinds if kind["kind"] == "scan_failed")["email"] is True

    defaults = (await client.get(f"{API}/preferences", headers=ada.headers)).json()["items"]
    assert {(p["kind"], p["in_app"], p["email"]) for p in defaults} == {
        (k.name, k.in_app, k.email) for k in KINDS.values()
    }
    changed = await client.put(
        f"{API}/preferences",
        headers=ada.headers,
        json={"items": [{"kind": "scan_failed", "email": False}, {"kind": "weekly_summary", "in_app": False}]},
    )
    assert changed.status_code == 200, changed.text
    after = {p["kind"]: (p["in_app"], p["email"]) for p in changed.json()["items"]}
    assert after["scan_failed"] == (True, False)
    assert after["weekly_summary"] == (False, True)
    reread = {
        p["kind"]: (p["in_app"], p["email"])
        for p in (await client.get(f"{API}/preferences", headers=ada.headers)).json()["items"]
    }
    assert reread == after

    unknown = await client.put(
        f"{API}/preferences",
        headers=ada.headers,
        json={"items": [{"kind": "scan_failed", "in_app": False}, {"kind": "nope"}, {"kind": "nada"}]},
    )
    assert unknown.status_code == 422
    assert [(e["field"], e["code"]) for e in unknown.json()["errors"]] == [
        ("body.items.1.kind", "unknown_kind"),
        ("body.items.2.kind", "unknown_kind"),
    ]
    # Nothing of a refused request is kept.
    kept = {
        p["kind"]: p["in_app"] for p in (await client.get(f"{API}/preferences", headers=ada.headers)).json()["items"]
    }
    assert kept["scan_failed"] is True


async def test_read_notifications_are_pruned_after_the_retention(
    db: Database, settings: Settings, make_user: MakeUser
) -> None:
    ada = await make_user("ada")
    async with db.transaction() as session:
        for key, read_at in (
            ("old-read", NOON - timedelta(days=91)),
            ("recent-read", NOON - timedelta(days=10)),
            ("old-unread", None),
        ):
            await _notify(session, [ada], key, now=NOON - timedelta(days=200))
            if read_at is not None:
                notification = await session.scalar(select(Notification).where(Notification.dedup_key == key))
                assert notification is not None
                notification.read_at = read_at
    await jobs.prune(JobContext(db, settings, NOON))
    async with db.transaction(write=False) as session:
        left = set(await session.scalars(select(Notification.dedup_key)))
    assert left == {"recent-read", "old-unread"}
