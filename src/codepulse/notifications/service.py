"""Notifications: `notify(...)` for every domain, and a user's own notifications and preferences.

Other domains call `notify(session, recipients, kind, title, body, data, dedup_key, now=...)` inside
their own transaction, so a change that rolls back notifies nobody. Recipients are user ids or
`OrgMembers(org_id, min_role)`. A user who turned a kind's in-app notifications off gets none in
the app; one whose email preference for the kind is on gets it by mail (the `notifications.mail`
task, queued in the same transaction, writes the mail outbox). `dedup_key` is unique per user, so
one event never notifies, nor mails, twice. Live streams of the recipients are woken when the
transaction commits (`STREAM_CHANNEL`); so are a user's when some of their unread notifications
are read or deleted, so that every open stream sends the lower unread count.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from codepulse.db import notify as db_notify
from codepulse.db import rowcount, upsert
from codepulse.errors import FieldError, NotFound, ValidationFailed
from codepulse.notifications.kinds import KINDS, Kind
from codepulse.notifications.models import Notification, NotificationPreference
from codepulse.orgs import service as orgs_service
from codepulse.orgs.service import Role
from codepulse.pagination import PageRequest, SortKey, paginate
from codepulse.tasks import enqueue

# NOTIFY channel of new notifications and unread counts that changed; the payload is the users'
# ids, comma-separated.
STREAM_CHANNEL = "codepulse_notifications"
# PostgreSQL's payload limit is 8,000 bytes: 200 ids (37 bytes each with the comma) per NOTIFY.
IDS_PER_NOTIFY = 200
MAIL_TASK = "notifications.mail"

log = structlog.get_logger("codepulse.notifications")


@dataclass(frozen=True)
class OrgMembers:
    """An organization's members at or above a role."""

    org_id: uuid.UUID
    min_role: Role = Role.VIEWER


Recipients = Sequence[uuid.UUID] | OrgMembers


async def _recipient_ids(session: AsyncSession, recipients: Recipients) -> list[uuid.UUID]:
    if isinstance(recipients, OrgMembers):
        return list(await session.scalars(orgs_service.member_user_ids(recipients.org_id, recipients.min_role)))
    return list(dict.fromkeys(recipients))


async def notify(
    session: AsyncSession,
    recipients: Recipients,
    kind: str,
    title: str,
    body: str,
    data: dict[str, Any],
    dedup_key: str,
    *,
    now: datetime,
    org_id: uuid.UUID | None = None,
) -> int:
    """Notify `recipients` of one event in the caller's transaction; how many were notified
    (those who turned the kind off, or were notified of this `dedup_key` before, are not)."""
    spec = KINDS.get(kind)
    if spec is None:
        raise ValueError(f"unknown notification kind {kind!r} (codepulse.notifications.kinds)")
    if org_id is None and isinstance(recipients, OrgMembers):
        org_id = recipients.org_id
    user_ids = await _recipient_ids(session, recipients)
    if not user_ids:
        return 0
    rows_chosen = await session.execute(
        select(NotificationPreference.user_id, NotificationPreference.in_app, NotificationPreference.email).where(
            NotificationPreference.kind == kind, NotificationPreference.user_id.in_(user_ids)
        )
    )
    chosen = {row.user_id: (row.in_app, row.email) for row in rows_chosen}
    muted = {user_id for user_id in user_ids if not chosen.get(user_id, (spec.in_app, spec.email))[0]}
    mailed = [user_id for user_id in user_ids if chosen.get(user_id, (spec.in_app, spec.email))[1]]
    if mailed:
        payload = {
            "kind": kind,
            "user_ids": [str(user_id) for user_id in mailed],
            "title": title[:200],
            "body": body[:2000],
            "data": data,
            "dedup_key": dedup_key[:200],
        }
        await enqueue(session, MAIL_TASK, payload, now=now)
    rows = [
        {
            "id": uuid.uuid4(),
            "user_id": user_id,
            "org_id": org_id,
            "kind": kind,
            "title": title[:200],
            "body": body[:2000],
            "data": data,
            "dedup_key": dedup_key[:200],
            "read_at": None,
            "created_at": now,
        }
        for user_id in user_ids
        if user_id not in muted
    ]
    if not rows:
        return 0
    table = Notification.__table__
    created = await session.execute(
        upsert(session, table, conflict=["user_id", "dedup_key"]).returning(Notification.user_id),  # type: ignore[arg-type]
        rows,
    )
    notified = [str(user_id) for user_id in created.scalars()]
    for start in range(0, len(notified), IDS_PER_NOTIFY):
        await db_notify(session, STREAM_CHANNEL, ",".join(notified[start : start + IDS_PER_NOTIFY]))
    log.info("notifications.created", kind=kind, count=len(notified), dedup_key=dedup_key)
    return len(notified)


@dataclass(frozen=True)
class Preference:
    kind: Kind
    in_app: bool
    email: bool


class NotificationService:
    """One user's notifications and preferences; another user's notification is a 404."""

    def __init__(self, session: AsyncSession, user_id: uuid.UUID) -> None:
        self.session = session
        self.user_id = user_id

    async def page(self, *, unread: bool, kind: str | None, page: PageRequest) -> tuple[list[Notification], str | None]:
        query = select(Notification).where(Notification.user_id == self.user_id)
        if unread:
            query = query.where(Notification.read_at.is_(None))
        if kind is not None:
            query = query.where(Notification.kind == kind)
        return await paginate(self.session, query, order=[SortKey(Notification.created_at, "desc")], params=page)

    async def unread_count(self) -> int:
        count = await self.session.scalar(
            select(func.count()).where(Notification.user_id == self.user_id, Notification.read_at.is_(None))
        )
        return int(count or 0)

    async def _mine(self, notification_id: uuid.UUID) -> Notification:
        notification = await self.session.get(Notification, notification_id)
        if notification is None or notification.user_id != self.user_id:
            raise NotFound("notification")
        return notification

    async def _unread_count_changed(self) -> None:
        """Wake the user's open streams (every tab, every process) once this commits: each sends
        the new unread count."""
        await db_notify(self.session, STREAM_CHANNEL, str(self.user_id))

    async def mark_read(self, notification_id: uuid.UUID, now: datetime) -> Notification:
        notification = await self._mine(notification_id)
        if notification.read_at is None:
            notification.read_at = now
            await self.session.flush()
            await self._unread_count_changed()
        return notification

    async def mark_all_read(self, now: datetime) -> int:
        result = await self.session.execute(
            update(Notification)
            .where(Notification.user_id == self.user_id, Notification.read_at.is_(None))
            .values(read_at=now)
        )
        updated = rowcount(result)
        if updated:
            await self._unread_count_changed()
        return updated

    async def delete(self, notification_id: uuid.UUID) -> None:
        notification = await self._mine(notification_id)
        unread = notification.read_at is None
        await self.session.delete(notification)
        await self.session.flush()
        if unread:
            await self._unread_count_changed()

    async def preferences(self) -> list[Preference]:
        chosen = {
            row.kind: row
            for row in await self.session.scalars(
                select(NotificationPreference).where(NotificationPreference.user_id == self.user_id)
            )
        }
        return [
            Preference(kind, chosen[name].in_app, chosen[name].email)
            if name in chosen
            else Preference(kind, kind.in_app, kind.email)
            for name, kind in KINDS.items()
        ]

    async def set_preferences(
        self, changes: Sequence[tuple[str, bool | None, bool | None]], now: datetime
    ) -> list[Preference]:
        """Apply (kind, in_app, email) changes (None: unchanged); every unknown kind is a 422."""
        unknown = [
            FieldError(field=f"body.items.{index}.kind", message=f"No kind {kind!r}.", code="unknown_kind")
            for index, (kind, _in_app, _email) in enumerate(changes)
            if kind not in KINDS
        ]
        if unknown:
            raise ValidationFailed(unknown)
        current = {preference.kind.name: preference for preference in await self.preferences()}
        rows = []
        for kind, in_app, email in changes:
            before = current[kind]
            after = Preference(
                before.kind, before.in_app if in_app is None else in_app, before.email if email is None else email
            )
            current[kind] = after
            rows.append(
                {"user_id": self.user_id, "kind": kind, "in_app": after.in_app, "email": after.email, "updated_at": now}
            )
        if rows:
            statement = upsert(
                self.session,
                NotificationPreference.__table__,  # type: ignore[arg-type]
                conflict=["user_id", "kind"],
                update=lambda excluded: {
                    "in_app": excluded.in_app,
                    "email": excluded.email,
                    "updated_at": excluded.updated_at,
                },
            )
            await self.session.execute(statement, rows)
        return list(current.values())


async def prune_read(session: AsyncSession, now: datetime, retention: timedelta) -> int:
    """Delete notifications read more than `retention` ago; how many."""
    result = await session.execute(
        delete(Notification).where(Notification.read_at.is_not(None), Notification.read_at < now - retention)
    )
    return rowcount(result)
