"""Notifications in the dashboard: the header's bell (its unread count, live), the list (all or
unread, 50 a page; mark one or all read) and the preferences per kind (in the app, by email) —
through the notifications slice's `NotificationService`, as `/api/v1/notifications`, `/read`,
`/read-all` and `/preferences` do.

Live: `GET /notifications/stream` is the slice's own Server-Sent Events stream
(`codepulse.notifications.live.event_stream_response`: `ready` with the unread count, then one
`notification` event per new notification, `unread_count` with the count as it is now after
those and whenever some are read or deleted anywhere, and `signed_out` once the session ends) for
the cookie's web session — a browser's EventSource sends the cookie, never a bearer token;
`/api/v1/notifications/stream` keeps accepting bearer tokens only. `static/social.js` follows it
on every signed-in page and updates the bell.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Query, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse

from codepulse.db import DbSession
from codepulse.db.session import RequestScope
from codepulse.notifications.kinds import KINDS
from codepulse.notifications.live import event_stream_response
from codepulse.notifications.schemas import NotificationOut
from codepulse.notifications.service import NotificationService
from codepulse.pagination import MAX_CURSOR_LENGTH, PageRequest
from codepulse.routing import DomainRouter
from codepulse.web.forms import MAX_FORM_BYTES, read_form
from codepulse.web.rendering import render
from codepulse.web.session import SessionCsrf, SignedIn

router = DomainRouter(tags=["web"])

LIST_LIMIT = 50
LIST_PATH = "/notifications"
PREFERENCES_PATH = "/notifications/preferences"


def _back(path: str) -> RedirectResponse:
    return RedirectResponse(path, status_code=status.HTTP_303_SEE_OTHER)


@router.get(LIST_PATH, include_in_schema=False, response_class=HTMLResponse)
async def notifications_page(
    request: Request,
    viewer: SignedIn,
    session: DbSession,
    unread: bool = False,
    cursor: Annotated[str | None, Query(max_length=MAX_CURSOR_LENGTH)] = None,
) -> HTMLResponse:
    service = NotificationService(session, viewer.user.id)
    page = PageRequest(limit=LIST_LIMIT, cursor=cursor, signer=request.app.state.cursor_signer)
    items, next_cursor = await service.page(unread=unread, kind=None, page=page)
    return render(
        request,
        "notifications.html",
        items=[NotificationOut.model_validate(item) for item in items],
        next_cursor=next_cursor,
        unread_only=unread,
        cursor_given=cursor is not None,
        unread_count=await service.unread_count(),
    )


@router.post(
    "/notifications/read-all", include_in_schema=False, response_class=HTMLResponse, max_body_size=MAX_FORM_BYTES
)
async def read_all(request: Request, viewer: SessionCsrf, session: DbSession) -> Response:
    await NotificationService(session, viewer.user.id).mark_all_read(request.app.state.clock())
    return _back(LIST_PATH)


@router.post(
    "/notifications/{notification_id}/read",
    include_in_schema=False,
    response_class=HTMLResponse,
    max_body_size=MAX_FORM_BYTES,
)
async def read_one(request: Request, notification_id: uuid.UUID, viewer: SessionCsrf, session: DbSession) -> Response:
    """Another user's notification is the 404 page, as in the API."""
    await NotificationService(session, viewer.user.id).mark_read(notification_id, request.app.state.clock())
    form = await read_form(request)
    return _back(LIST_PATH + ("?unread=true" if form.get("unread_only") == "true" else ""))


@router.get(PREFERENCES_PATH, include_in_schema=False, response_class=HTMLResponse)
async def preferences_page(request: Request, viewer: SignedIn, session: DbSession, saved: bool = False) -> HTMLResponse:
    preferences = await NotificationService(session, viewer.user.id).preferences()
    return render(request, "notification_preferences.html", preferences=preferences, saved=saved)


@router.post(PREFERENCES_PATH, include_in_schema=False, response_class=HTMLResponse, max_body_size=MAX_FORM_BYTES)
async def save_preferences(request: Request, viewer: SessionCsrf, session: DbSession) -> Response:
    """Every kind's two checkboxes (an unchecked box is absent from the form: off)."""
    form = await read_form(request)
    changes = [(kind, form.get(f"{kind}.in_app") == "on", form.get(f"{kind}.email") == "on") for kind in KINDS]
    await NotificationService(session, viewer.user.id).set_preferences(changes, request.app.state.clock())
    return _back(f"{PREFERENCES_PATH}?saved=true")


@router.get("/notifications/stream", include_in_schema=False, response_class=StreamingResponse)
async def notification_events(
    request: Request,
    viewer: SignedIn,
    scope: RequestScope,
) -> StreamingResponse:
    """The notifications slice's event stream, for this browser's session (the bell). A
    reconnecting EventSource's `Last-Event-ID` is not used: the bell needs the count, and a new
    stream's `ready` event has it afresh (what a resumed stream sent again would count twice)."""
    return await event_stream_response(
        request, scope, viewer.user.id, auth_session_id=viewer.session_id, last_event_id=None
    )
