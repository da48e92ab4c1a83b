"""Organizations (the tenant boundary), memberships, invitations and the audit log."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from codepulse.db import Base, Timestamps, UUIDPrimaryKey


class Role(StrEnum):
    OWNER = "owner"
    ADMIN = "admin"
    MEMBER = "member"
    VIEWER = "viewer"

    @property
    def rank(self) -> int:
        return _RANKS[self]

    def at_least(self, other: Role) -> bool:
        return self.rank >= other.rank


_RANKS = {Role.VIEWER: 0, Role.MEMBER: 1, Role.ADMIN: 2, Role.OWNER: 3}


class Organization(UUIDPrimaryKey, Timestamps, Base):
    __tablename__ = "organizations"

    name: Mapped[str] = mapped_column(String(100))
    # Unique among live organizations: a deleted one gives its slug up (see service.delete).
    slug: Mapped[str] = mapped_column(String(60), unique=True)
    avatar_url: Mapped[str | None] = mapped_column(String(2048))
    created_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    deleted_at: Mapped[datetime | None]
    # The plan billing put the organization on; None: the deployment's DEFAULT_PLAN.
    plan: Mapped[str | None] = mapped_column(String(20))


class Membership(UUIDPrimaryKey, Timestamps, Base):
    __tablename__ = "memberships"
    __table_args__ = (UniqueConstraint("org_id", "user_id"), Index("ix_memberships_user_id", "user_id"))

    org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    role: Mapped[str] = mapped_column(String(10))


# An invitation neither accepted, revoked (by an admin) nor declined (by the invitee) is open
# (expired ones are revoked when the email is invited again): one per organization and email.
_OPEN_INVITATION = text("accepted_at IS NULL AND revoked_at IS NULL AND declined_at IS NULL")


class Invitation(UUIDPrimaryKey, Base):
    __tablename__ = "invitations"
    __table_args__ = (
        Index("ix_invitations_org_id", "org_id"),
        Index("ix_invitations_email", "email"),
        Index(
            "uq_invitations_org_id_email_open",
            "org_id",
            "email",
            unique=True,
            sqlite_where=_OPEN_INVITATION,
            postgresql_where=_OPEN_INVITATION,
        ),
    )

    org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    email: Mapped[str] = mapped_column(String(320))
    role: Mapped[str] = mapped_column(String(10))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    invited_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    accepted_at: Mapped[datetime | None]
    accepted_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    # Closed by an admin (or by inviting the email again after it expired) ...
    revoked_at: Mapped[datetime | None]
    # ... or turned down by the invitee (before migration 0029 a decline set revoked_at).
    declined_at: Mapped[datetime | None]


class AuditEvent(UUIDPrimaryKey, Base):
    """An organization's event (`org_id` set, shown in its audit log) or a platform event of a
    superuser (`org_id` null, e.g. `leaderboard.user_excluded`), which no organization's log shows."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_org_id_created_at", "org_id", "created_at"),)

    org_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    actor_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    action: Mapped[str] = mapped_column(String(64))
    target_type: Mapped[str | None] = mapped_column(String(32))
    target_id: Mapped[str | None] = mapped_column(String(64))
    details: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    ip: Mapped[str | None] = mapped_column(String(45))
    created_at: Mapped[datetime]
