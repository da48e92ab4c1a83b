"""Queries on the orgs domain's tables, and nothing else."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import ColumnElement, Select, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from codepulse.db import rowcount
from codepulse.orgs.models import AuditEvent, Invitation, Membership, Organization, Role


class OrgRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, *objects: object) -> None:
        self.session.add_all(objects)
        await self.session.flush()

    async def org(self, org_id: uuid.UUID) -> Organization | None:
        return await self.session.scalar(
            select(Organization).where(Organization.id == org_id, Organization.deleted_at.is_(None))
        )

    async def org_by_slug(self, slug: str) -> Organization | None:
        return await self.session.scalar(
            select(Organization).where(Organization.slug == slug.lower(), Organization.deleted_at.is_(None))
        )

    async def slugs_taken(self, slugs: Sequence[str]) -> set[str]:
        return set(await self.session.scalars(select(Organization.slug).where(Organization.slug.in_(list(slugs)))))

    async def slug_taken(self, slug: str) -> bool:
        return await self.session.scalar(select(Organization.id).where(Organization.slug == slug)) is not None

    def orgs_of_user_query(self, user_id: uuid.UUID) -> Select[Organization, str]:
        return (
            select(Organization, Membership.role)
            .join(Membership, Membership.org_id == Organization.id)
            .where(Membership.user_id == user_id, Organization.deleted_at.is_(None))
        )

    async def membership(self, org_id: uuid.UUID, user_id: uuid.UUID) -> Membership | None:
        return await self.session.scalar(
            select(Membership).where(Membership.org_id == org_id, Membership.user_id == user_id)
        )

    def members_query(self, org_id: uuid.UUID) -> Select[Membership]:
        return select(Membership).where(Membership.org_id == org_id)

    async def count_members(self, org_id: uuid.UUID) -> int:
        return int(await self.session.scalar(select(func.count()).where(Membership.org_id == org_id)) or 0)

    async def count_owners(self, org_id: uuid.UUID) -> int:
        return int(
            await self.session.scalar(
                select(func.count()).where(Membership.org_id == org_id, Membership.role == Role.OWNER.value)
            )
            or 0
        )

    async def sole_owner_orgs(self, user_id: uuid.UUID) -> list[Organization]:
        """Live organizations where `user_id` is the only owner."""
        owners = (
            select(Membership.org_id)
            .where(Membership.role == Role.OWNER.value)
            .group_by(Membership.org_id)
            .having(func.count() == 1)
            .subquery()
        )
        rows = await self.session.scalars(
            select(Organization)
            .join(Membership, Membership.org_id == Organization.id)
            .where(
                Membership.user_id == user_id,
                Membership.role == Role.OWNER.value,
                Organization.deleted_at.is_(None),
                Organization.id.in_(select(owners.c.org_id)),
            )
        )
        return list(rows)

    async def delete_membership(self, membership: Membership) -> None:
        await self.session.delete(membership)
        await self.session.flush()

    # --- invitations ---------------------------------------------------------------------

    def pending_invitations_query(self, org_id: uuid.UUID, now: datetime) -> Select[Invitation]:
        return select(Invitation).where(Invitation.org_id == org_id, *self._pending(now))

    @staticmethod
    def _pending(now: datetime) -> tuple[ColumnElement[bool], ...]:
        """Pending: not accepted, revoked, declined nor expired."""
        return (
            Invitation.accepted_at.is_(None),
            Invitation.revoked_at.is_(None),
            Invitation.declined_at.is_(None),
            Invitation.expires_at > now,
        )

    async def count_pending_invitations(self, org_id: uuid.UUID, now: datetime) -> int:
        return int(
            await self.session.scalar(select(func.count()).where(Invitation.org_id == org_id, *self._pending(now))) or 0
        )

    async def pending_invitation_for(self, org_id: uuid.UUID, email: str, now: datetime) -> Invitation | None:
        return await self.session.scalar(
            select(Invitation).where(Invitation.org_id == org_id, Invitation.email == email, *self._pending(now))
        )

    async def revoke_expired_invitations(self, org_id: uuid.UUID, email: str, now: datetime) -> None:
        """Close expired, never used invitations of `email`, so that a new one may be opened."""
        await self.session.execute(
            update(Invitation)
            .where(
                Invitation.org_id == org_id,
                Invitation.email == email,
                Invitation.accepted_at.is_(None),
                Invitation.revoked_at.is_(None),
                Invitation.declined_at.is_(None),
                Invitation.expires_at <= now,
            )
            .values(revoked_at=now)
            .execution_options(synchronize_session=False)
        )

    async def invitation(self, org_id: uuid.UUID, invitation_id: uuid.UUID) -> Invitation | None:
        return await self.session.scalar(
            select(Invitation).where(Invitation.id == invitation_id, Invitation.org_id == org_id)
        )

    async def invitation_by_id(self, invitation_id: uuid.UUID) -> Invitation | None:
        return await self.session.get(Invitation, invitation_id)

    async def invitation_by_token(self, token_hash: str) -> Invitation | None:
        return await self.session.scalar(select(Invitation).where(Invitation.token_hash == token_hash))

    def invitations_for_email_query(self, email: str, now: datetime) -> Select[Invitation, Organization]:
        return (
            select(Invitation, Organization)
            .join(Organization, Organization.id == Invitation.org_id)
            .where(Invitation.email == email, Organization.deleted_at.is_(None), *self._pending(now))
        )

    async def accept_invitation(self, invitation_id: uuid.UUID, user_id: uuid.UUID, now: datetime) -> bool:
        """Single use under races: only one accept can flip accepted_at, and not after a concurrent
        revoke or decline closed the invitation."""
        result = await self.session.execute(
            update(Invitation)
            .where(
                Invitation.id == invitation_id,
                Invitation.accepted_at.is_(None),
                Invitation.revoked_at.is_(None),
                Invitation.declined_at.is_(None),
            )
            .values(accepted_at=now, accepted_by=user_id)
        )
        return rowcount(result) == 1

    async def delete_invitations(self, org_id: uuid.UUID) -> None:
        await self.session.execute(delete(Invitation).where(Invitation.org_id == org_id))

    # --- audit ---------------------------------------------------------------------------

    def audit_query(self, org_id: uuid.UUID, action: str | None) -> Select[AuditEvent]:
        query = select(AuditEvent).where(AuditEvent.org_id == org_id)
        if action:
            # A prefix filters a family: `member.` matches member.added, member.removed...
            query = query.where(AuditEvent.action.startswith(action, autoescape=True))
        return query
