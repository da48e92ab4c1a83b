"""The orgs slice's reactions to events of the slices below it (see `codepulse.hooks`)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from codepulse.auth import admin as auth_admin
from codepulse.auth import service as auth_service
from codepulse.orgs.service import audit_platform_event, refuse_last_owner


async def audit_user_admin_change(session: AsyncSession, change: auth_admin.UserAdminChange) -> None:
    """A superuser's change of an account, as platform audit events (one per action) with the
    acting superuser (an `on_user_admin_change` hook of auth)."""
    details = {"username": change.user.username}
    for action in change.actions:
        extra = {"sessions_revoked": change.sessions_revoked} if action == auth_admin.USER_DISABLED else {}
        await audit_platform_event(
            session, lambda: change.at, change.actor, action, "user", change.user.id, details | extra, change.ip
        )


def register_hooks() -> None:
    """Called by `create_app` at start-up; registering again is a no-op."""
    auth_service.on_user_delete(refuse_last_owner)
    auth_admin.on_user_admin_change(audit_user_admin_change)
