"""Notifications' hooks: organization events announced by other slices become notifications."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from codepulse import events
from codepulse.auth import admin as auth_admin
from codepulse.db import notify as db_notify
from codepulse.events import OrgEvent
from codepulse.notifications.service import STREAM_CHANNEL, OrgMembers, notify
from codepulse.orgs.service import Role


async def notify_org_event(session: AsyncSession, event: OrgEvent) -> None:
    """The organization's members at or above the event's audience, in the announcer's transaction."""
    recipients = list(event.user_ids) if event.user_ids else OrgMembers(event.org_id, Role(event.audience))
    await notify(
        session,
        recipients,
        event.kind,
        event.title,
        event.body,
        {"org_id": str(event.org_id), **event.data},
        event.dedup_key,
        now=event.now,
        org_id=event.org_id,
    )


async def end_streams_of_disabled(session: AsyncSession, change: auth_admin.UserAdminChange) -> None:
    """A disabled account's open streams wake once the change commits, find their session ended
    and close (an `on_user_admin_change` hook of auth), in every process."""
    if auth_admin.USER_DISABLED in change.actions:
        await db_notify(session, STREAM_CHANNEL, str(change.user.id))


def register_hooks() -> None:
    events.on_org_event(notify_org_event)
    auth_admin.on_user_admin_change(end_streams_of_disabled)
