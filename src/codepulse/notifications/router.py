"""HTTP endpoints of notifications: the signed-in user's own notifications and preferences, and the
kinds there are. Another user's notification is a 404."""

from __future__ import annotations

import uuid
from html import escape
from typing import Annotated

from fastapi import Depends, Header, Query, Request, Response, status
from fastapi.responses import HTMLResponse, StreamingResponse

from codepulse.auth import service as auth_service
from codepulse.auth.dependencies import CurrentSession, CurrentUser
from codepulse.db import DbSession
from codepulse.db.session import RequestScope
from codepulse.errors import BadRequest
from codepulse.notifications.kinds import KINDS, Kind
from codepulse.notifications.live import EventId, event_stream_response
from codepulse.notifications.mail import read_unsubscribe_token
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

# One Server-Sent Event (OpenAPI 3.2's `itemSchema` for event streams).
SSE_EVENT_SCHEMA = {
    "type": "object",
    "properties": {
        "event": {"type": "string", "enum": ["ready", "notification", "unread_count", "signed_out"]},
        "data": {"type": "string", "contentMediaType": "application/json"},
        "id": {"type": "string"},
        "retry": {"type": "integer", "minimum": 0},
    },
}


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


@router.get(
    "/stream",
    summary="My new notifications as they come (Server-Sent Events)",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "An event stream: `ready` (`{unread_count}`) once, then a `notification` event "
            "(the list's item shape) per new notification, each with an `id:`; keep-alive comments when idle. "
            "Send the last id back as `Last-Event-ID` to resume without missing any. After new notifications, "
            "and whenever some are read or deleted (anywhere), an `unread_count` event (`{unread_count}`, no "
            "`id:`) gives the unread count as it is now. `signed_out` (`{code, detail}`) ends the stream once "
            "its session does.",
            "content": {"text/event-stream": {"itemSchema": SSE_EVENT_SCHEMA}},
        }
    },
)
async def stream(
    request: Request,
    user: CurrentUser,
    current: CurrentSession,
    scope: RequestScope,
    last_event_id: Annotated[str | None, Header(max_length=100, description="Resume after this event.")] = None,
) -> StreamingResponse:
    """400 `invalid_last_event_id` for an id this stream did not send. The request's own session
    ends here; the stream reads with short transactions when woken."""
    resume = EventId.parse(last_event_id) if last_event_id else None
    return await event_stream_response(request, scope, user.id, auth_session_id=current.id, last_event_id=resume)


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


# --- one-click unsubscribe (from a notification mail; no sign-in) --------------------------------

UnsubscribeToken = Annotated[str, Query(max_length=400, description="The token of the mail's unsubscribe link.")]


async def _unsubscribe(request: Request, session: DbSession, token: str) -> Kind:
    found = read_unsubscribe_token(request.app.state.settings, token)
    if found is None or found[1] not in KINDS:
        raise BadRequest("This unsubscribe link is not valid.", code="invalid_unsubscribe_token")
    user_id, kind = found
    # A deleted account has nothing left to unsubscribe: the same answer.
    if await auth_service.user_by_id(session, user_id) is not None:
        await NotificationService(session, user_id).set_preferences([(kind, None, False)], request.app.state.clock())
    return KINDS[kind]


@router.get(
    "/unsubscribe",
    response_class=HTMLResponse,
    summary="Stop one kind of notification mail (the link in the mail; no sign-in)",
)
async def unsubscribe_link(request: Request, session: DbSession, token: UnsubscribeToken) -> HTMLResponse:
    """Turns the kind's email off for the user the link was made for, and says so; idempotent.
    400 `invalid_unsubscribe_token` for a link this server did not sign."""
    kind = await _unsubscribe(request, session, token)
    page = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Unsubscribed</title>'
        '<meta name="viewport" content="width=device-width"></head><body>'
        f"<h1>Unsubscribed</h1><p>You will get no more email for: {escape(kind.description)}</p>"
        "<p>In-app notifications stay on; change any choice in your notification settings.</p></body></html>"
    )
    return HTMLResponse(page)


@router.post(
    "/unsubscribe",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="One-click unsubscribe (RFC 8058, sent by mail clients; no sign-in)",
)
async def unsubscribe_one_click(request: Request, session: DbSession, token: UnsubscribeToken) -> Response:
    """The same as the link, for a mail client's `List-Unsubscribe-Post` request."""
    await _unsubscribe(request, session, token)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
