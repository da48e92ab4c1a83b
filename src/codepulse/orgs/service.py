"""Organizations and the one answer to "may this user do this in this organization?".

Other slices call `require_role(...)` / `get_membership(...)` / `OrgService.audit(...)` here
(`audit_platform_event(...)` for a superuser's action that belongs to no organization),
receive `Organization` and `Role` from here (never from `orgs.models`), and routes use the
`OrgMember(...)` guard family in `codepulse.orgs.dependencies`.

Hooks (see `codepulse.hooks`): deleting an organization runs the `on_org_delete` hooks in the
deletion's transaction — upper slices register there what goes with it (repositories removes the
organization's repositories, and with them their scans; scans forgets its cached scan results).
Orgs itself registers `refuse_last_owner` with auth's `on_user_delete` (`codepulse.orgs.hooks`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from codepulse.auth import service as auth_service
from codepulse.auth.service import User
from codepulse.clock import ClockFunc
from codepulse.config import Settings
from codepulse.db import advisory_xact_lock
from codepulse.errors import Conflict, FieldError, Forbidden, NotFound, ValidationFailed
from codepulse.hooks import HookRegistry
from codepulse.orgs.models import AuditEvent, Membership
from codepulse.orgs.models import Organization as Organization
from codepulse.orgs.models import Role as Role
from codepulse.orgs.quotas import QuotaResource, check_quota
from codepulse.orgs.repository import OrgRepository
from codepulse.orgs.schemas import OrgCreate, OrgUpdate, slug_candidates
from codepulse.orgs.stats import OrganizationStats as OrganizationStats
from codepulse.orgs.stats import organization_stats as organization_stats
from codepulse.pagination import PageRequest, SortKey, paginate, paginate_rows

log = structlog.get_logger("codepulse.orgs")

org_delete_hooks: HookRegistry[Organization] = HookRegistry("org.delete")
on_org_delete = org_delete_hooks.register
"""Register `async (session, org) -> None`, run when an organization is deleted, in the deletion's
transaction: what other slices keep of the organization goes there."""


@dataclass(frozen=True)
class OrgAccess:
    """An organization, the caller, and the caller's effective role in it."""

    org: Organization
    user: User
    role: Role
    membership: Membership | None  # None for a superuser who is not a member

    def require(self, min_role: Role) -> None:
        if not self.role.at_least(min_role):
            raise Forbidden(f"This needs the {min_role.value} role or higher.", code="insufficient_role")


@dataclass(frozen=True)
class Member:
    membership: Membership
    user: User


class OrgService:
    def __init__(self, session: AsyncSession, settings: Settings, clock: ClockFunc) -> None:
        self.session = session
        self.repo = OrgRepository(session)
        self.settings = settings
        self.clock = clock

    # --- access --------------------------------------------------------------------------

    async def resolve(self, ref: str) -> Organization | None:
        """An organization by id or slug (live ones only)."""
        try:
            org_id = uuid.UUID(ref)
        except ValueError:
            return await self.repo.org_by_slug(ref)
        return await self.repo.org(org_id)

    async def access(self, user: User, ref: Organization | str | uuid.UUID, min_role: Role = Role.VIEWER) -> OrgAccess:
        """The caller's access to an organization (given, or its id or slug), or 404 (not a
        member, or no such organization: no existence leak) or 403 `insufficient_role`."""
        if isinstance(ref, Organization):
            org: Organization | None = ref
        else:
            org = await (self.repo.org(ref) if isinstance(ref, uuid.UUID) else self.resolve(ref))
        membership = await self.repo.membership(org.id, user.id) if org is not None else None
        if org is None or (membership is None and not user.is_superuser):
            raise NotFound("organization")
        role = Role(membership.role) if membership is not None else Role.OWNER
        access = OrgAccess(org, user, role, membership)
        access.require(min_role)
        return access

    # --- organizations -------------------------------------------------------------------

    async def create(self, user: User, data: OrgCreate, ip: str | None) -> OrgAccess:
        slug = data.slug if data.slug is not None else await self._free_slug(data.name)
        if await self.repo.slug_taken(slug):
            raise Conflict("This slug is taken.", code="slug_taken")
        org = Organization(name=data.name, slug=slug, created_by=user.id)
        await self.repo.add(org)
        membership = Membership(org_id=org.id, user_id=user.id, role=Role.OWNER.value)
        await self.repo.add(membership)
        await self.audit(org.id, user, "org.created", "organization", org.id, {"slug": org.slug}, ip)
        return OrgAccess(org, user, Role.OWNER, membership)

    async def _free_slug(self, name: str) -> str:
        """The first slug derived from the name that no organization has."""
        candidates = slug_candidates(name)
        taken = await self.repo.slugs_taken(candidates)
        for candidate in candidates:
            if candidate not in taken:
                return candidate
        raise Conflict("Every slug derived from this name is taken: choose one.", code="slug_taken")

    async def list_mine(self, user: User, page: PageRequest) -> tuple[list[tuple[Organization, Role]], str | None]:
        rows, next_cursor = await paginate_rows(
            self.session,
            self.repo.orgs_of_user_query(user.id),
            order=[SortKey(Organization.name), SortKey(Organization.id)],
            params=page,
            tiebreaker=(),
        )
        return [(org, Role(role)) for org, role in rows], next_cursor

    async def update(self, access: OrgAccess, data: OrgUpdate, ip: str | None) -> Organization:
        access.require(Role.ADMIN)
        org = access.org
        values = {k: v for k, v in data.model_dump(exclude_unset=True).items() if v is not None or k == "avatar_url"}
        if values.get("slug") not in (None, org.slug) and await self.repo.slug_taken(values["slug"]):
            raise Conflict("This slug is taken.", code="slug_taken")
        changes = {k: {"from": getattr(org, k), "to": v} for k, v in values.items() if getattr(org, k) != v}
        for field, value in values.items():
            setattr(org, field, value)
        await self.session.flush()
        if changes:
            await self.audit(org.id, access.user, "org.updated", "organization", org.id, changes, ip)
        return org

    async def delete(self, access: OrgAccess, confirm_slug: str, ip: str | None) -> None:
        access.require(Role.OWNER)
        org = access.org
        if confirm_slug.strip().lower() != org.slug:
            raise ValidationFailed(
                [FieldError(field="body.confirm_slug", code="slug_mismatch", message="Type the organization's slug.")]
            )
        await self.audit(org.id, access.user, "org.deleted", "organization", org.id, {"slug": org.slug}, ip)
        await self.repo.delete_invitations(org.id)
        # What upper slices keep of the organization (repositories, scans, cached results) goes
        # with it, in this transaction.
        await org_delete_hooks.run(self.session, org)
        # Soft delete: the row stays for the audit trail; its slug is freed for someone else.
        org.deleted_at = self.clock()
        org.slug = f"deleted-{org.id.hex}"
        await self.session.flush()
        log.info("org.deleted", org_id=str(org.id))

    # --- members -------------------------------------------------------------------------

    async def members(self, access: OrgAccess, page: PageRequest) -> tuple[list[Member], str | None]:
        memberships, next_cursor = await paginate(
            self.session, self.repo.members_query(access.org.id), order=[SortKey(Membership.created_at)], params=page
        )
        users = await auth_service.users_by_ids(self.session, {m.user_id for m in memberships})
        return [Member(m, users[m.user_id]) for m in memberships if m.user_id in users], next_cursor

    async def change_role(self, access: OrgAccess, user_id: uuid.UUID, role: Role, ip: str | None) -> Member:
        access.require(Role.ADMIN)
        membership = await self._member(access, user_id)
        current = Role(membership.role)
        # Admins manage members below owner; only owners touch owners or make owners.
        if Role.OWNER in (current, role) and access.role is not Role.OWNER:
            raise Forbidden("Only owners can change owners or make owners.", code="insufficient_role")
        if current is Role.OWNER and role is not Role.OWNER:
            await self._ensure_other_owner(access.org.id)
        membership.role = role.value
        await self.session.flush()
        await self.audit(
            access.org.id, access.user, "member.role_changed", "user", user_id, {"from": current, "to": role}, ip
        )
        user = await auth_service.user_by_id(self.session, user_id)
        if user is None:  # pragma: no cover - memberships cascade with users
            raise NotFound("member")
        return Member(membership, user)

    async def remove_member(self, access: OrgAccess, user_id: uuid.UUID, ip: str | None) -> None:
        """Remove someone (admin+), or leave (anyone, for themselves)."""
        leaving = user_id == access.user.id
        if not leaving:
            access.require(Role.ADMIN)
        membership = await self._member(access, user_id)
        role = Role(membership.role)
        if role is Role.OWNER:
            if not leaving and access.role is not Role.OWNER:
                raise Forbidden("Only owners can remove owners.", code="insufficient_role")
            await self._ensure_other_owner(access.org.id)
        await self.repo.delete_membership(membership)
        action = "member.left" if leaving else "member.removed"
        await self.audit(access.org.id, access.user, action, "user", user_id, {"role": role}, ip)

    async def add_member(self, access: OrgAccess, user: User, role: Role, ip: str | None) -> Member:
        """Add an existing account without an invitation (admin+, never above one's own role):
        for operators' tools such as `codepulse seed`, whose users need no mailed link. The seat
        quota applies as to an invitation; 409 `already_member`."""
        access.require(Role.ADMIN)
        if not access.role.at_least(role):
            raise Forbidden("You cannot add someone above your own role.", code="insufficient_role")
        # The same lock as `invite`: the member check and the seat count hold until the commit.
        await advisory_xact_lock(self.session, f"orgs.seats:{access.org.id}")
        if await self.repo.membership(access.org.id, user.id) is not None:
            raise Conflict("This person is already a member.", code="already_member")
        await check_quota(self.session, self.settings, access.org.id, QuotaResource.SEATS, now=self.clock())
        membership = Membership(org_id=access.org.id, user_id=user.id, role=role.value)
        await self.repo.add(membership)
        await self.audit(access.org.id, access.user, "member.added", "user", user.id, {"role": role}, ip)
        return Member(membership, user)

    async def _member(self, access: OrgAccess, user_id: uuid.UUID) -> Membership:
        membership = await self.repo.membership(access.org.id, user_id)
        if membership is None:
            raise NotFound("member")
        return membership

    async def _ensure_other_owner(self, org_id: uuid.UUID) -> None:
        if await self.repo.count_owners(org_id) <= 1:
            raise Conflict(
                "An organization needs an owner: make someone else owner first, or delete the organization.",
                code="last_owner",
            )

    # --- audit ---------------------------------------------------------------------------

    async def audit(
        self,
        org_id: uuid.UUID,
        actor: User | None,
        action: str,
        target_type: str | None = None,
        target_id: uuid.UUID | str | None = None,
        details: dict[str, Any] | None = None,
        ip: str | None = None,
    ) -> None:
        """Record an audit event in the caller's transaction (it commits or rolls back with it)."""
        await self.repo.add(_audit_event(self.clock(), org_id, actor, action, target_type, target_id, details, ip))

    async def audit_log(
        self, access: OrgAccess, action: str | None, page: PageRequest
    ) -> tuple[list[AuditEvent], str | None]:
        access.require(Role.ADMIN)
        return await paginate(
            self.session,
            self.repo.audit_query(access.org.id, action),
            order=[SortKey(AuditEvent.created_at, "desc")],
            params=page,
        )


def _audit_event(
    now: datetime,
    org_id: uuid.UUID | None,
    actor: User | None,
    action: str,
    target_type: str | None,
    target_id: uuid.UUID | str | None,
    details: dict[str, Any] | None,
    ip: str | None,
) -> AuditEvent:
    return AuditEvent(
        org_id=org_id,
        actor_id=actor.id if actor else None,
        action=action,
        target_type=target_type,
        target_id=str(target_id) if target_id is not None else None,
        details={k: _jsonable(v) for k, v in (details or {}).items()},
        ip=ip,
        created_at=now,
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, uuid.UUID | datetime):
        return str(value)
    return value


# --- for other domains ---------------------------------------------------------------------


async def require_role(
    session: AsyncSession, settings: Settings, clock: ClockFunc, user: User, org_id: uuid.UUID, min_role: Role
) -> OrgAccess:
    """For services of other domains holding an org-owned object: the caller's access to its
    organization, 404 for outsiders, 403 below `min_role`."""
    return await OrgService(session, settings, clock).access(user, org_id, min_role)


async def refuse_last_owner(session: AsyncSession, user: User) -> None:
    """An `on_user_delete` hook of auth (registered by `codepulse.orgs.hooks`): the last owner of
    an organization cannot delete their account (409 `last_owner`)."""
    orgs = await OrgRepository(session).sole_owner_orgs(user.id)
    if orgs:
        slugs = sorted(org.slug for org in orgs)
        raise Conflict(
            f"You are the last owner of {', '.join(slugs)}: transfer ownership or delete it first.",
            code="last_owner",
            extra={"organizations": slugs},
        )


async def audit_platform_event(
    session: AsyncSession,
    clock: ClockFunc,
    actor: User | None,
    action: str,
    target_type: str | None = None,
    target_id: uuid.UUID | str | None = None,
    details: dict[str, Any] | None = None,
    ip: str | None = None,
) -> None:
    """Record a platform event (a superuser's action outside any organization: org_id null) in
    the caller's transaction. No organization's audit log shows it."""
    event = _audit_event(clock(), None, actor, action, target_type, target_id, details, ip)
    await OrgRepository(session).add(event)


async def get_membership(session: AsyncSession, org_id: uuid.UUID, user_id: uuid.UUID) -> Membership | None:
    return await OrgRepository(session).membership(org_id, user_id)


def member_user_ids(org_id: uuid.UUID, min_role: Role | None = None) -> Select[Any]:
    """The organization's members' user ids (at or above `min_role`, if given), for upper slices
    to use in their own SQL."""
    query = select(Membership.user_id).where(Membership.org_id == org_id)
    if min_role is not None:
        query = query.where(Membership.role.in_([role.value for role in Role if role.at_least(min_role)]))
    return query
