"""The superusers' leaderboard routes: exclusions of accounts from every board."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Depends, Request, Response, status

from codepulse.auth.dependencies import Superuser, device_of
from codepulse.db import DbSession
from codepulse.leaderboard.admin_schemas import ExcludedUser, ExclusionIn, ExclusionOut
from codepulse.leaderboard.exclusions import Exclusion, ExclusionService
from codepulse.pagination import Page, PageParams
from codepulse.routing import DomainRouter

admin_router = DomainRouter(tags=["leaderboard"])


async def exclusion_service(request: Request, session: DbSession) -> ExclusionService:
    return ExclusionService(session, request.app.state.clock)


ExclusionServiceDep = Annotated[ExclusionService, Depends(exclusion_service)]


def _out(exclusion: Exclusion) -> ExclusionOut:
    row = exclusion.exclusion
    return ExclusionOut(
        user=ExcludedUser.model_validate(exclusion.user),
        reason=row.reason,
        excluded_by=row.excluded_by,
        created_at=row.created_at,
    )


@admin_router.post(
    "/admin/users/{user_id}/leaderboard-exclusion",
    status_code=status.HTTP_201_CREATED,
    summary="Exclude an account from every leaderboard (superuser)",
    responses={200: {"model": ExclusionOut, "description": "The account was already excluded: its exclusion."}},
)
async def exclude_user(
    user_id: uuid.UUID,
    admin: Superuser,
    service: ExclusionServiceDep,
    request: Request,
    response: Response,
    body: ExclusionIn | None = None,
) -> ExclusionOut:
    """Keeps the account off every board (global and organizations') from the next recompute on;
    201 with the new exclusion, 200 when it was already excluded (the reason is replaced; one
    exclusion per account). Audited as `leaderboard.user_excluded` (a platform event).
    404 `user_not_found` for an unknown account."""
    result = await service.exclude(admin, user_id, (body or ExclusionIn()).reason, device_of(request).ip)
    if not result.created:
        response.status_code = status.HTTP_200_OK
    return _out(result.exclusion)


@admin_router.delete(
    "/admin/users/{user_id}/leaderboard-exclusion",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Let an excluded account back onto the leaderboards (superuser)",
)
async def include_user(
    user_id: uuid.UUID, admin: Superuser, service: ExclusionServiceDep, request: Request
) -> Response:
    """Ends the exclusion; the account is ranked again from the next recompute on. Audited as
    `leaderboard.user_included`. 404 `user_not_found` for an unknown account,
    404 `leaderboard_exclusion_not_found` for an account that is not excluded."""
    await service.include(admin, user_id, device_of(request).ip)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@admin_router.get("/admin/leaderboard/exclusions", summary="Accounts excluded from the leaderboards (superuser)")
async def list_exclusions(_admin: Superuser, service: ExclusionServiceDep, page: PageParams) -> Page[ExclusionOut]:
    """Most recently excluded first."""
    exclusions, next_cursor = await service.exclusions(page)
    return Page(items=[_out(exclusion) for exclusion in exclusions], next_cursor=next_cursor)
