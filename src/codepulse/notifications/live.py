"""The live notification stream: `GET /api/v1/notifications/stream` (Server-Sent Events).

One `NotificationHub` per process holds every open stream's wake-up. On PostgreSQL it LISTENs on
`STREAM_CHANNEL` over ONE connection of its own, whatever the number of streams; `notify()`
NOTIFYs the recipients' ids when its transaction commits, from any process or replica. On SQLite
(one serving process) the same wake-up comes in-process after the commit. A woken stream reads
the user's new notifications in one short read transaction: no stream holds a database connection
while it waits.

Events: `ready` first (`{"unread_count"}`: the stream is live), then one `notification` event per
new notification (the `GET /notifications` item shape), each with an `id:` the browser sends back
as `Last-Event-ID` when it reconnects; the stream then sends what came after that id first. After
the `notification` events of one look, and whenever the count changed otherwise (notifications
read or deleted anywhere: another tab, the API, mark-all-read), an `unread_count` event
(`{"unread_count"}`, no `id:`) gives the user's unread count as it is now: a client that adds one
per unread notification ends every look with the true count, and one that ignores the event
(it came later than `ready` and `notification`) loses nothing. An idle stream gets a keep-alive
comment every NOTIFICATIONS_STREAM_KEEPALIVE_SECONDS, and looks for new notifications and the
count then too (a wake-up lost with a dropped listener connection is late, not lost).

The stream lives as long as the session that opened it: at each wake-up and keep-alive it reads the
session again, and once it no longer authenticates (signed out, expired, the account disabled —
which wakes the account's streams at once) it sends a `signed_out` event (`{"code", "detail"}`,
the code a request would get as a 401 problem) and ends.

Ordering: ids are the (created_at, id) keyset. A notification whose transaction commits after a
later-created one was streamed is still sent: each read looks back LOOKBACK before the newest
notification sent and skips the ids it sent already. A resumed stream starts at the last id's
created_at and sends again any other notification of that same instant (ids are random, so
which of them came before it is unknown): a rare duplicate, which the client drops by `id`,
rather than a miss.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog
from fastapi import Request
from fastapi.responses import StreamingResponse
from fastapi.sse import KEEPALIVE_COMMENT, format_sse_event
from sqlalchemy import select, tuple_

from codepulse.auth.service import ensure_session_active
from codepulse.clock import ClockFunc
from codepulse.db import Database, Listener, listen, listen_in_process
from codepulse.db.session import RequestSessionScope
from codepulse.errors import DATABASE_UNAVAILABLE_ERRORS, BadRequest, Unauthorized
from codepulse.notifications.models import Notification
from codepulse.notifications.schemas import NotificationOut, ReadyOut, UnreadCountOut
from codepulse.notifications.service import STREAM_CHANNEL, NotificationService

log = structlog.get_logger("codepulse.notifications.live")

LOOKBACK = timedelta(seconds=30)
PAGE = 200
RETRY_MILLISECONDS = 2000
_LOWEST_ID = uuid.UUID(int=0)


class NotificationHub:
    """Wakes the streams of the users a committed `notify()` named (see the module docstring)."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self._streams: dict[uuid.UUID, set[asyncio.Event]] = {}
        self._listener: Listener | None = None
        self._stop_in_process: Callable[[], None] | None = None
        self._lock = asyncio.Lock()

    @property
    def open_streams(self) -> int:
        return sum(len(events) for events in self._streams.values())

    @property
    def listening(self) -> bool:
        if self.database.dialect == "postgresql":
            return self._listener is not None and self._listener.alive
        return self._stop_in_process is not None

    async def ensure_listening(self) -> None:
        """Start (or, after a lost connection, restart) the process's one listener; every stream
        then looks again, for what was notified while nobody listened."""
        if self.listening:
            return
        async with self._lock:
            if self.listening:
                return
            if self.database.dialect != "postgresql":
                self._stop_in_process = listen_in_process(STREAM_CHANNEL, self._on_notify)
                return
            if self._listener is not None:
                log.warning("notifications.listener_lost")
                with contextlib.suppress(Exception):
                    await self._listener.close()
                self._listener = None
            self._listener = await listen(self.database, STREAM_CHANNEL, self._on_notify)
            self._wake_all()

    def _on_notify(self, payload: str) -> None:
        for value in payload.split(","):
            try:
                user_id = uuid.UUID(value)
            except ValueError:
                continue
            for wake in self._streams.get(user_id, ()):
                wake.set()

    def _wake_all(self) -> None:
        for events in self._streams.values():
            for wake in events:
                wake.set()

    @contextlib.contextmanager
    def subscribe(self, user_id: uuid.UUID) -> Iterator[asyncio.Event]:
        wake = asyncio.Event()
        self._streams.setdefault(user_id, set()).add(wake)
        try:
            yield wake
        finally:
            events = self._streams.get(user_id)
            if events is not None:
                events.discard(wake)
                if not events:
                    del self._streams[user_id]

    async def close(self) -> None:
        if self._stop_in_process is not None:
            self._stop_in_process()
            self._stop_in_process = None
        if self._listener is not None:
            listener, self._listener = self._listener, None
            await listener.close()


@dataclass(frozen=True, order=True)
class EventId:
    """A notification's place in the stream: its (created_at, id) keyset, as `<µs>-<hex>`."""

    created_at: datetime
    id: uuid.UUID

    def __str__(self) -> str:
        micros = int((self.created_at - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(microseconds=1))
        return f"{micros}-{self.id.hex}"

    @classmethod
    def parse(cls, value: str) -> EventId:
        try:
            micros, _, hex_id = value.partition("-")
            return cls(datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=int(micros)), uuid.UUID(hex=hex_id))
        except (ValueError, OverflowError):
            raise BadRequest("Last-Event-ID is not an id this stream sent.", code="invalid_last_event_id") from None


class NotificationStream:
    """One user's stream: what to send next, from which point."""

    def __init__(self, database: Database, user_id: uuid.UUID, *, start: datetime, resume: EventId | None) -> None:
        self.database = database
        self.user_id = user_id
        self.resume = resume
        self.floor = resume.created_at if resume is not None else start
        self.newest = self.floor
        self.sent: dict[uuid.UUID, datetime] = {}

    async def unread_count(self) -> int:
        async with self.database.transaction(write=False) as session:
            return await NotificationService(session, self.user_id).unread_count()

    async def new_notifications(self) -> list[Notification]:
        """Everything not sent yet, oldest first (one read transaction per page)."""
        after = EventId(max(self.floor, self.newest - LOOKBACK), _LOWEST_ID)
        keyset = tuple_(Notification.created_at, Notification.id)
        found: list[Notification] = []
        first = True
        while True:
            position = tuple_(after.created_at, after.id)
            async with self.database.transaction(write=False) as session:
                page = list(
                    await session.scalars(
                        select(Notification)
                        .where(Notification.user_id == self.user_id, keyset >= position if first else keyset > position)
                        .order_by(Notification.created_at, Notification.id)
                        .limit(PAGE)
                    )
                )
            for notification in page:
                if notification.id in self.sent or (self.resume is not None and notification.id == self.resume.id):
                    continue
                found.append(notification)
                self.sent[notification.id] = notification.created_at
                self.newest = max(self.newest, notification.created_at)
            if len(page) < PAGE:
                break
            after, first = EventId(page[-1].created_at, page[-1].id), False
        horizon = self.newest - LOOKBACK
        self.sent = {key: created for key, created in self.sent.items() if created >= horizon}
        return found


def _event(notification: Notification) -> bytes:
    return format_sse_event(
        data_str=NotificationOut.model_validate(notification).model_dump_json(),
        event="notification",
        id=str(EventId(notification.created_at, notification.id)),
    )


def _unread_count_event(count: int) -> bytes:
    return format_sse_event(data_str=UnreadCountOut(unread_count=count).model_dump_json(), event="unread_count")


def signed_out_event(error: Unauthorized) -> bytes:
    """The last event of a stream whose session no longer authenticates."""
    return format_sse_event(
        data_str=json.dumps({"code": error.instance_code, "detail": error.detail}), event="signed_out"
    )


async def _session_ended(database: Database, clock: ClockFunc, auth_session_id: uuid.UUID) -> Unauthorized | None:
    async with database.transaction(write=False) as session:
        try:
            await ensure_session_active(session, clock, auth_session_id)
        except Unauthorized as ended:
            return ended
    return None


async def stream_events(
    hub: NotificationHub,
    user_id: uuid.UUID,
    *,
    auth_session_id: uuid.UUID,
    clock: ClockFunc,
    keepalive_seconds: float,
    last_event_id: EventId | None,
) -> AsyncIterator[bytes]:
    """The bytes of one user's stream until the client leaves (the server cancels it then)."""
    stream = NotificationStream(hub.database, user_id, start=clock(), resume=last_event_id)
    with hub.subscribe(user_id) as wake:
        yield f"retry: {RETRY_MILLISECONDS}\n\n".encode()
        # Subscribed before the first read: a notification committed from now on wakes us, one
        # committed before is in this read.
        backlog = await stream.new_notifications()
        count = await stream.unread_count()
        yield format_sse_event(data_str=ReadyOut(unread_count=count).model_dump_json(), event="ready")
        for notification in backlog:
            yield _event(notification)
        if backlog:
            yield _unread_count_event(count)
        while True:
            try:
                await asyncio.wait_for(wake.wait(), timeout=keepalive_seconds)
            except TimeoutError:
                yield KEEPALIVE_COMMENT
            wake.clear()
            try:
                await hub.ensure_listening()
                ended = await _session_ended(hub.database, clock, auth_session_id)
                if ended is not None:
                    yield signed_out_event(ended)
                    return
                found = await stream.new_notifications()
                # Read after the notifications: it counts every one just sent (and perhaps one the
                # next look sends, which this event then follows again).
                now_unread = await stream.unread_count()
            except DATABASE_UNAVAILABLE_ERRORS as error:
                # End the stream: the client reconnects (after `retry`) with Last-Event-ID and
                # gets a 503 until the database is back, then everything it missed.
                log.warning("notifications.stream_ended", reason="database_unavailable", error=type(error).__name__)
                return
            for notification in found:
                yield _event(notification)
            if found or now_unread != count:
                count = now_unread
                yield _unread_count_event(count)


async def event_stream_response(
    request: Request,
    scope: RequestSessionScope,
    user_id: uuid.UUID,
    *,
    auth_session_id: uuid.UUID,
    last_event_id: EventId | None,
) -> StreamingResponse:
    """The Server-Sent Events answer of one user's stream, for a caller the route authenticated
    with `auth_session_id` (a bearer token in the API; the dashboard's bell passes its cookie's
    session): the stream ends once that session no longer authenticates."""
    # Authenticated: give the request's connection back now. Starting the listener needs one of
    # its own, and a burst of streams each holding theirs while waiting for it would drain the pool.
    await scope.commit()
    hub: NotificationHub = request.app.state.notification_hub
    await hub.ensure_listening()  # the database unreachable: a 503 now, not a stream that never wakes
    events = stream_events(
        hub,
        user_id,
        auth_session_id=auth_session_id,
        clock=request.app.state.clock,
        keepalive_seconds=request.app.state.settings.NOTIFICATIONS_STREAM_KEEPALIVE_SECONDS,
        last_event_id=last_event_id,
    )
    return StreamingResponse(
        events, media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
