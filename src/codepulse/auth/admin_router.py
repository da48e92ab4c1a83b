"""The superusers' account administration: `GET /admin/users` and `PATCH /admin/users/{id}`.

(`GET /admin/users/{id}`, which adds the account's organizations and usage, is composed by
`codepulse.admin.users` from the slices that own them.)"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Depends, Query, Request

from codepulse.auth.admin import UserAdminService
from codepulse.auth.admin_schemas import AdminUserOut, AdminUserUpdate
from codepulse.auth.dependencies import Superuser, device_of
from codepulse.db import DbSession
from codepulse.pagination import Page, PageParams
from codepulse.routing import DomainRouter

admin_router = DomainRouter(prefix="/admin/users", tags=["admin"])


async def user_admin_service(request: Request, session: DbSession) -> UserAdminService:
    return UserAdminService(session, request.app.state.clock, request.app.state.auth_cache)


UserAdminServiceDep = Annotated[UserAdminService, Depends(user_admin_service)]


@admin_router.get("", summary="Find accounts (superuser)")
async def list_users(
    _admin: Superuser,
    service: UserAdminServiceDep,
    page: PageParams,
    q: Annotated[
        str | None, Query(max_length=100, description="Part of the email, username or name (any case).")
    ] = None,
    superuser: Annotated[bool | None, Query(description="Only superusers (true) or only the others.")] = None,
    disabled: Annotated[bool | None, Query(description="Only disabled accounts (true) or only enabled.")] = None,
) -> Page[AdminUserOut]:
    """Newest accounts first."""
    users, next_cursor = await service.users(page, q=q, superuser=superuser, disabled=disabled)
    return Page(items=[AdminUserOut.model_validate(user) for user in users], next_cursor=next_cursor)


@admin_router.patch("/{user_id}", summary="Disable or enable an account; grant or revoke superuser (superuser)")
async def update_user(
    user_id: uuid.UUID, body: AdminUserUpdate, admin: Superuser, service: UserAdminServiceDep, request: Request
) -> AdminUserOut:
    """`disabled: true` ends every session and CLI token of the account at once (open live streams
    close within seconds) and refuses every sign-in — password, GitHub, the device flow, existing
    tokens — with 401 `account_disabled`; `disabled: false` lets it sign in again. Audited as
    platform events `user.disabled`, `user.enabled`, `user.superuser_granted`,
    `user.superuser_revoked`, with the acting superuser.

    Problems: 404 `user_not_found`; 409 `last_superuser` (the last enabled superuser can be neither
    demoted nor disabled), 409 `cannot_disable_self`."""
    user = await service.update(admin, user_id, body, device_of(request).ip)
    return AdminUserOut.model_validate(user)
