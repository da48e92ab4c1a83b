"""HTTP endpoints of notifications: the signed-in user's own notifications and preferences, and the
kinds there are. Another user's notification is a 404."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Depends, Query, Request, Response, status

from codepulse.auth.dependencies import CurrentUser
from codepulse.db import DbSession
from codepulse.notifications.kinds import KINDS
from codepulse.notifications.schemas import (
    KindOut,
    MarkedRead,
    NotificationOut,
    PreferenceOut,
    PreferencesIn,
    PreferencesOut,
    UnreadCount,
)
from codepulse.notifications.service import NotificationService, Preference
from codepulse.pagination import Page, PageParams
from codepulse.routing import DomainRouter

router = DomainRouter(prefix="/notifications", tags=["notifications"])


async def notification_service(user: CurrentUser, session: DbSession) -> NotificationService:
    return NotificationService(session, user.id)


NotificationServiceDep = Annotated[NotificationService, Depends(notification_service)]


def _preferences(preferences: list[Preference]) -> PreferencesOut:
    return PreferencesOut(items=[PreferenceOut(kind=p.kind.name, in_app=p.in_app, email=p.email) for p in preferences])


@router.get("", summary="My notifications, newest first")
async def list_notifications(
    service: NotificationServiceDep,
    page: PageParams,
    unread: Annotated[bool, Query(description="Only the unread ones.")] = False,
    kind: Annotated[str | None, Query(max_length=64, description="Only this kind.")] = None,
) -> Page[NotificationOut]:
    items, next_cursor = await service.page(unread=unread, kind=kind, page=page)
    return Page(items=[NotificationOut.model_validate(item) for item in items], next_cursor=next_cursor)


@router.get("/unread-count", summary="How many of my notifications are unread")
async def unread_count(service: NotificationServiceDep) -> UnreadCount:
    return UnreadCount(count=await service.unread_count())


@router.get("/kinds", summary="The kinds of notifications, with their defaults")
async def list_kinds(_user: CurrentUser) -> list[KindOut]:
    return [KindOut(kind=k.name, description=k.description, in_app=k.in_app, email=k.email) for k in KINDS.values()]


@router.get("/preferences", summary="My choices per kind (in the app, by email)")
async def get_preferences(service: NotificationServiceDep) -> PreferencesOut:
    return _preferences(await service.preferences())


@router.put("/preferences", summary="Change my choices for some kinds")
async def put_preferences(body: PreferencesIn, service: NotificationServiceDep, request: Request) -> PreferencesOut:
    """Only the kinds listed change (a null field keeps its value); 422 `unknown_kind` per kind
    that does not exist. Answers every kind's choice."""
    changes = [(item.kind, item.in_app, item.email) for item in body.items]
    return _preferences(await service.set_preferences(changes, request.app.state.clock()))


@router.post("/read-all", summary="Mark all my notifications read")
async def read_all(service: NotificationServiceDep, request: Request) -> MarkedRead:
    return MarkedRead(updated=await service.mark_all_read(request.app.state.clock()))


@router.post("/{notification_id}/read", summary="Mark one of my notifications read")
async def read_one(notification_id: uuid.UUID, service: NotificationServiceDep, request: Request) -> NotificationOut:
    """Idempotent: a notification already read keeps its `read_at`. 404 `notification_not_found`."""
    return NotificationOut.model_validate(await service.mark_read(notification_id, request.app.state.clock()))


@router.delete("/{notification_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Delete one of my notifications")
async def delete_one(notification_id: uuid.UUID, service: NotificationServiceDep) -> Response:
    """404 `notification_not_found`."""
    await service.delete(notification_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
