"""An account's last activity as a superuser sees it (`GET /api/v1/admin/users/{id}`): the latest
of its sessions' and CLI tokens' last use and its last usage sync, the same two signals that make
it "active in 7/30 days" in `GET /api/v1/admin/stats`."""

from __future__ import annotations

from datetime import datetime, timedelta

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from codepulse.auth.models import SessionKind, User
from codepulse.usage.models import UsageSyncBatch
from tests.factories import AuthSessionFactory, MakeUser, UserFactory
from tests.helpers import FakeClock

USERS = "/api/v1/admin/users"


def _used(user: User, at: datetime, kind: SessionKind = SessionKind.WEB, **fields: object) -> None:
    AuthSessionFactory.create(user=user, kind=kind.value, created_at=at - timedelta(days=1), last_used_at=at, **fields)


def _synced(session: AsyncSession, user: User, at: datetime, digest: str) -> None:
    session.add(UsageSyncBatch(user_id=user.id, digest=digest * 64, created_at=at))


async def _last_activity(client: httpx.AsyncClient, headers: dict[str, str], user: User) -> datetime | None:
    response = await client.get(f"{USERS}/{user.id}", headers=headers)
    assert response.status_code == 200, response.text
    value = response.json()["last_activity_at"]
    return datetime.fromisoformat(value) if value is not None else None


async def test_last_activity_is_the_latest_session_token_or_sync_and_matches_the_stats(
    client: httpx.AsyncClient, session: AsyncSession, clock: FakeClock, make_user: MakeUser
) -> None:
    now = clock()
    admin = await make_user("root", is_superuser=True)
    # Syncs with a CLI token only; its last sync is newer than the token's last recorded use.
    cli_only = UserFactory.create(username="cli-only")
    # A web session newest, then the CLI token, then a sync.
    web = UserFactory.create(username="web")
    # A CLI token used after the last sync, revoked since (its use still happened).
    revoked = UserFactory.create(username="revoked")
    # Active within 30 days but not 7: by sync only.
    stale = UserFactory.create(username="stale")
    idle = UserFactory.create(username="idle")
    await session.flush()
    _used(cli_only, now - timedelta(days=10), SessionKind.CLI)
    _synced(session, cli_only, now - timedelta(days=2), "a")
    _used(web, now - timedelta(hours=1))
    _used(web, now - timedelta(days=3), SessionKind.CLI)
    _synced(session, web, now - timedelta(days=5), "b")
    _used(revoked, now - timedelta(days=1), SessionKind.CLI, revoked_at=now - timedelta(hours=2))
    _synced(session, revoked, now - timedelta(days=4), "c")
    _synced(session, stale, now - timedelta(days=8), "d")
    _synced(session, stale, now - timedelta(days=20), "e")
    await session.flush()

    expected = {
        cli_only: now - timedelta(days=2),
        web: now - timedelta(hours=1),
        revoked: now - timedelta(days=1),
        stale: now - timedelta(days=8),
        idle: None,
    }
    found = {user: await _last_activity(client, admin.headers, user) for user in expected}
    assert found == expected

    # The statistics count the same accounts active: the admin (its session), cli-only, web and
    # revoked within 7 days; stale too within 30; idle never.
    stats = await client.get("/api/v1/admin/stats", params={"range": "7d"}, headers=admin.headers)
    assert stats.status_code == 200, stats.text
    users = stats.json()["users"]
    assert (users["active_7d"], users["active_30d"]) == (4, 5)
    week_ago, month_ago = now - timedelta(days=7), now - timedelta(days=30)
    assert sum(1 for at in found.values() if at is not None and at >= week_ago) + 1 == users["active_7d"]
    assert sum(1 for at in found.values() if at is not None and at >= month_ago) + 1 == users["active_30d"]
