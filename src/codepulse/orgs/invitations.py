"""Invitations to an organization: admins send one by email with a role (within the seat quota),
see the pending ones and revoke one; the invitee accepts with the mailed token or, signed in with
that email verified, from their own list, or declines. Every step is audit-logged.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from codepulse import events
from codepulse.auth import service as auth_service
from codepulse.auth.service import User
from codepulse.clock import ClockFunc
from codepulse.config import Settings
from codepulse.db import advisory_xact_lock
from codepulse.errors import BadRequest, Conflict, Forbidden, NotFound
from codepulse.events import OrgEvent
from codepulse.integrations.mailer import MailMessage
from codepulse.mail.outbox import queue_mail
from codepulse.orgs.models import Invitation as Invitation
from codepulse.orgs.models import Membership
from codepulse.orgs.quotas import QuotaResource, check_quota
from codepulse.orgs.repository import OrgRepository
from codepulse.orgs.service import OrgAccess, Organization, OrgService, Role
from codepulse.pagination import PageRequest, SortKey, paginate, paginate_rows
from codepulse.security import hash_token, new_one_time_token

INVITATION_LIFETIME = timedelta(days=7)


class InvitationService:
    def __init__(self, session: AsyncSession, settings: Settings, clock: ClockFunc) -> None:
        self.session = session
        self.repo = OrgRepository(session)
        self.orgs = OrgService(session, settings, clock)
        self.settings = settings
        self.clock = clock

    async def invite(self, access: OrgAccess, email: str, role: Role, ip: str | None) -> Invitation:
        access.require(Role.ADMIN)
        if not access.role.at_least(role):
            raise Forbidden("You cannot invite someone above your own role.", code="insufficient_role")
        # One invitation at a time per organization (every replica): the duplicate check and the
        # seat count below must not both pass for two concurrent requests. On SQLite the write
        # transaction already serialises them.
        await advisory_xact_lock(self.session, f"orgs.seats:{access.org.id}")
        now = self.clock()
        existing_user = await auth_service.user_by_email(self.session, email)
        if existing_user is not None and await self.repo.membership(access.org.id, existing_user.id) is not None:
            raise Conflict("This person is already a member.", code="already_member")
        if await self.repo.pending_invitation_for(access.org.id, email, now) is not None:
            raise Conflict("This email already has a pending invitation.", code="already_invited")
        await check_quota(self.session, self.settings, access.org.id, QuotaResource.SEATS, now=now)
        await self.repo.revoke_expired_invitations(access.org.id, email, now)
        token = new_one_time_token()
        invitation = Invitation(
            org_id=access.org.id,
            email=email,
            role=role.value,
            token_hash=hash_token(token),
            invited_by=access.user.id,
            created_at=now,
            expires_at=now + INVITATION_LIFETIME,
        )
        await self.repo.add(invitation)
        await self.orgs.audit(access.org.id, access.user, "invitation.created", "invitation", invitation.id,
                         {"email": email, "role": role}, ip)  # fmt: skip
        if existing_user is not None and existing_user.email_verified_at is not None:
            await events.announce(
                self.session,
                OrgEvent(
                    kind="invitation_received",
                    org_id=access.org.id,
                    title=f"{access.user.name} invited you to {access.org.name}",
                    body=f"Join {access.org.name} as {role.value}: accept from your invitations within 7 days.",
                    dedup_key=f"invitation_received:{invitation.id}",
                    now=now,
                    user_ids=(existing_user.id,),
                    data={"invitation_id": str(invitation.id), "role": role.value},
                ),
            )
        message = MailMessage(
            to=email,
            subject=f"{access.user.name} invited you to {access.org.name} on codepulse",
            text=f"{access.user.name} invited you to join {access.org.name} on codepulse as {role.value}.\n\n"
            f"Accept within 7 days: {self.settings.FRONTEND_URL}/invitations/{token}\n",
        )
        await queue_mail(self.session, message, settings=self.settings, now=now, category="orgs.invitation")
        return invitation

    async def pending_invitations(self, access: OrgAccess, page: PageRequest) -> tuple[list[Invitation], str | None]:
        access.require(Role.ADMIN)
        return await paginate(
            self.session,
            self.repo.pending_invitations_query(access.org.id, self.clock()),
            order=[SortKey(Invitation.created_at, "desc")],
            params=page,
        )

    async def revoke_invitation(self, access: OrgAccess, invitation_id: uuid.UUID, ip: str | None) -> None:
        access.require(Role.ADMIN)
        invitation = await self.repo.invitation(access.org.id, invitation_id)
        if invitation is None or (invitation.accepted_at or invitation.revoked_at or invitation.declined_at):
            raise NotFound("invitation")
        invitation.revoked_at = self.clock()
        await self.session.flush()
        await self.orgs.audit(access.org.id, access.user, "invitation.revoked", "invitation", invitation.id,
                         {"email": invitation.email}, ip)  # fmt: skip

    async def invitations_for(
        self, user: User, page: PageRequest
    ) -> tuple[list[tuple[Invitation, Organization]], str | None]:
        """Pending invitations to the user's email, verified or not (the caller says which can be
        accepted now, see `acceptable`)."""
        rows, next_cursor = await paginate_rows(
            self.session,
            self.repo.invitations_for_email_query(user.email, self.clock()),
            order=[SortKey(Invitation.created_at, "desc"), SortKey(Invitation.id, "desc")],
            params=page,
            tiebreaker=(),
        )
        return [(invitation, org) for invitation, org in rows], next_cursor

    @staticmethod
    def acceptable(user: User) -> str | None:
        """Why the user cannot accept an invitation to their email now, or None."""
        return None if user.email_verified else "email_not_verified"

    async def accept(self, user: User, raw_token: str, ip: str | None) -> OrgAccess:
        """Accept with the mailed token."""
        invitation = await self.repo.invitation_by_token(hash_token(raw_token))
        if invitation is None or not self._pending(invitation):
            raise BadRequest("This invitation is invalid, expired, revoked or already used.", code="invalid_invitation")
        return await self._join(user, invitation, ip)

    async def pending_invitation_by_token(self, raw_token: str) -> tuple[Invitation, Organization] | None:
        """The pending invitation of a mailed token and its organization, or None (unknown, used,
        revoked, expired, or its organization deleted): what the invitation's page shows to whoever
        holds the link, before they accept it."""
        invitation = await self.repo.invitation_by_token(hash_token(raw_token))
        if invitation is None or not self._pending(invitation):
            return None
        org = await self.repo.org(invitation.org_id)
        return (invitation, org) if org is not None else None

    async def accept_by_id(self, user: User, invitation_id: uuid.UUID, ip: str | None) -> OrgAccess:
        """Accept one of `invitations_for` by its id."""
        return await self._join(user, await self._my_invitation(user, invitation_id), ip)

    async def decline(self, user: User, invitation_id: uuid.UUID, ip: str | None) -> None:
        """Turn down one of `invitations_for`: it is closed (the admins' pending list no longer
        shows it) and the organization's audit log says who declined."""
        invitation = await self._my_invitation(user, invitation_id)
        if not user.email_verified:
            raise Forbidden("Verify your email before answering an invitation.", code="email_not_verified")
        invitation.declined_at = self.clock()
        await self.session.flush()
        await self.orgs.audit(invitation.org_id, user, "invitation.declined", "invitation", invitation.id,
                         {"email": invitation.email}, ip)  # fmt: skip

    def _pending(self, invitation: Invitation) -> bool:
        closed = invitation.accepted_at or invitation.revoked_at or invitation.declined_at
        return closed is None and self.clock() < invitation.expires_at

    async def _my_invitation(self, user: User, invitation_id: uuid.UUID) -> Invitation:
        """A pending invitation to the user's email; 404 `invitation_not_found` for anything else
        (someone else's, used, revoked, expired: the id tells nothing)."""
        invitation = await self.repo.invitation_by_id(invitation_id)
        if invitation is None or invitation.email != user.email or not self._pending(invitation):
            raise NotFound("invitation")
        return invitation

    async def _join(self, user: User, invitation: Invitation, ip: str | None) -> OrgAccess:
        now = self.clock()
        org = await self.repo.org(invitation.org_id)
        if org is None:
            raise BadRequest("This organization no longer exists.", code="invalid_invitation")
        if not user.email_verified:
            raise Forbidden("Verify your email before accepting an invitation.", code="email_not_verified")
        if user.email != invitation.email:
            raise Forbidden("This invitation was sent to another email address.", code="invitation_email_mismatch")
        if await self.repo.membership(org.id, user.id) is not None:
            raise Conflict("You are already a member.", code="already_member")
        if not await self.repo.accept_invitation(invitation.id, user.id, now):
            raise BadRequest("This invitation was already used.", code="invalid_invitation")
        membership = Membership(org_id=org.id, user_id=user.id, role=invitation.role)
        await self.repo.add(membership)
        await self.orgs.audit(org.id, user, "member.joined", "user", user.id, {"role": invitation.role}, ip)
        return OrgAccess(org, user, Role(invitation.role), membership)
