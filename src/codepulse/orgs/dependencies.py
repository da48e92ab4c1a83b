"""The role guards every org-scoped route uses, in every slice, built by one factory:

    @router.get("/orgs/{org}/things")
    async def list_things(access: OrgViewer) -> ...          # any member
    async def create_thing(access: OrgAdmin) -> ...          # admin or owner
    async def custom(access: Annotated[OrgAccess, OrgMember(Role.MEMBER)]) -> ...

`{org}` is the organization's id or slug. An outsider (or a missing organization) gets 404, a
member below the role 403 `insufficient_role`; superusers pass. The membership is loaded once.

A slice guarding its own org-scoped objects (a repository, a scan, a finding) writes its rule as
small functions and asks `org_scoped_guard` for the guard family:

    async def find_thing(thing_id: ThingId, session: DbSession) -> Thing | None: ...  # the path -> the object
    ThingMember = org_scoped_guard("thing", find_thing, org_of=lambda t: t.org_id, grant=ThingAccess)
    ThingViewer = Annotated[ThingAccess, ThingMember(Role.VIEWER)]

The object, then its organization, then the member's role there: a missing object and an outsider
alike get 404 `thing_not_found` (no existence leak), a role too low 403 `insufficient_role`.
"""

# No `from __future__ import annotations` here: FastAPI reads the guards' signatures, whose
# annotations refer to each guard's own rule (closure variables), so they must be real objects.

import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Path, Request

from codepulse.auth.dependencies import CurrentUser
from codepulse.db import DbSession
from codepulse.errors import NotFound
from codepulse.orgs.invitations import InvitationService
from codepulse.orgs.service import OrgAccess, Organization, OrgService, Role

T = TypeVar("T")
A = TypeVar("A")

OrgRef = Annotated[str, Path(description="The organization's id or slug.", min_length=1, max_length=60)]


async def org_service(request: Request, session: DbSession) -> OrgService:
    return OrgService(session, request.app.state.settings, request.app.state.clock)


OrgServiceDep = Annotated[OrgService, Depends(org_service)]


async def invitation_service(request: Request, session: DbSession) -> InvitationService:
    return InvitationService(session, request.app.state.settings, request.app.state.clock)


InvitationServiceDep = Annotated[InvitationService, Depends(invitation_service)]


def org_scoped_guard(
    resource: str,
    find: Callable[..., Awaitable[T | None]],
    *,
    org_of: Callable[[T], Organization | uuid.UUID],
    grant: Callable[[T, OrgAccess], A],
) -> Callable[[Role], Any]:
    """A guard family for the objects of one kind: `Guard(min_role)` is a dependency answering
    `grant(obj, access)`.

    - `find`: a dependency reading the route's path parameter, answering the object or None;
    - `org_of`: the object's organization (or its id);
    - `grant`: what the route receives, from the object and the caller's `OrgAccess`.

    404 `<resource>_not_found` for a missing object and for outsiders; 403 `insufficient_role`
    below `min_role`; superusers pass as owners.
    """

    def guard(min_role: Role = Role.VIEWER) -> Any:
        # The caller first: an anonymous request gets its 401 before any lookup, and a read's
        # authentication can still be answered from the cache, before the session opens.
        async def dependency(user: CurrentUser, found: Annotated[Any, Depends(find)], orgs: OrgServiceDep) -> Any:
            if found is None:
                raise NotFound(resource)
            try:
                access = await orgs.access(user, org_of(found), Role.VIEWER)
            except NotFound:
                raise NotFound(resource) from None
            access.require(min_role)
            return grant(found, access)

        dependency.__name__ = f"{resource}_{min_role.value}"
        return Depends(dependency)

    return guard


# --- organizations: the object is the organization itself ------------------------------------


async def find_org(org: OrgRef, orgs: OrgServiceDep) -> Organization | None:
    return await orgs.resolve(org)


def _the_org(org: Organization) -> Organization:
    return org


def _org_access(_org: Organization, access: OrgAccess) -> OrgAccess:
    return access


OrgMember = org_scoped_guard("organization", find_org, org_of=_the_org, grant=_org_access)

OrgViewer = Annotated[OrgAccess, OrgMember(Role.VIEWER)]
OrgAdmin = Annotated[OrgAccess, OrgMember(Role.ADMIN)]
OrgOwner = Annotated[OrgAccess, OrgMember(Role.OWNER)]
