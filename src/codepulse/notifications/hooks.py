"""Notifications' hooks: organization events announced by other slices become notifications."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from codepulse import events
from codepulse.auth.sessions import SessionsEnded, on_sessions_ended
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


async def end_streams_of_signed_out(session: AsyncSession, ended: SessionsEnded) -> None:
    """Signing out (one session, or all: a password change, a superuser disabling the account)
    wakes the account's open streams once it commits, in every process; each looks at its own
    session and closes if that one ended (an `on_sessions_ended` hook of auth)."""
    await db_notify(session, STREAM_CHANNEL, str(ended.user_id))


def register_hooks() -> None:
    events.on_org_event(notify_org_event)
    on_sessions_ended(end_streams_of_signed_out)
