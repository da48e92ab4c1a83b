"""Live scan progress: a WebSocket (`/ws/scans/{id}`) and Server-Sent Events
(`GET /api/v1/scans/{id}/events`; the web dashboard serves the same stream to a signed-in browser
through `event_stream_response`, authenticated by its cookie on its own page route).

Both poll the scan row (every `POLL_SECONDS`, each poll its own short read transaction), so they
follow a scan whatever process runs it (`codepulse serve` or `codepulse worker`), and they hold no
database connection between polls. Each sends the scan (the `ScanRead` shape) when it changes, and
a last message with the final status, then ends. Each poll also reads the bearer session again:
once it no longer authenticates (signed out, expired, the account disabled) the stream ends — an
SSE `signed_out` event (`{"code", "detail"}`), a WebSocket close 4401 with the code as reason.

WebSocket authentication: browsers cannot set an Authorization header on a WebSocket, so the
token comes as a subprotocol pair (`new WebSocket(url, ["bearer", token])`; the server answers
with the `bearer` subprotocol), the preferred form, or as a `token` query parameter (URLs end up
in proxies' logs; ours redact it). Close codes: 4401 without a valid token, 4404 for a scan that
does not exist or that the caller may not see, 1013 while the database is unavailable, 1000
after the final status. A client may leave at any time: that is a normal end, noticed at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Any

import structlog
from fastapi import APIRouter, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import StreamingResponse
from starlette.websockets import WebSocketState

from codepulse.auth.dependencies import CurrentSession, authenticate_token
from codepulse.auth.service import ensure_session_active
from codepulse.clock import ClockFunc
from codepulse.db import Database
from codepulse.errors import DATABASE_UNAVAILABLE_ERRORS, NotFound, Unauthorized
from codepulse.routing import DomainRouter
from codepulse.scans import service as scans_service
from codepulse.scans.dependencies import ScanViewer
from codepulse.scans.models import Scan, ScanStatus
from codepulse.scans.schemas import ScanRead

log = structlog.get_logger("codepulse.scans.live")

POLL_SECONDS = 0.5
# A comment line now and then keeps proxies from closing an idle event stream.
KEEPALIVE_SECONDS = 15.0
FINAL_STATUSES = frozenset({ScanStatus.SUCCEEDED.value, ScanStatus.FAILED.value, ScanStatus.CANCELED.value})

CLOSE_UNAUTHORIZED = 4401
CLOSE_NOT_FOUND = 4404
CLOSE_TRY_AGAIN_LATER = 1013  # RFC 6455 registry: the database is unavailable
BEARER_SUBPROTOCOL = "bearer"

router = DomainRouter(tags=["scans"])
ws_router = APIRouter()


@dataclass(frozen=True)
class Viewer:
    """The bearer session a stream was opened with, read again at each poll."""

    auth_session_id: uuid.UUID
    clock: ClockFunc


async def _read_scan(database: Database, scan_id: uuid.UUID, viewer: Viewer | None) -> Scan | None:
    async with database.transaction(write=False) as session:
        if viewer is not None:
            await ensure_session_active(session, viewer.clock, viewer.auth_session_id)
        return await scans_service.get_scan(session, scan_id)


async def scan_updates(
    database: Database, scan_id: uuid.UUID, *, poll_seconds: float = POLL_SECONDS, viewer: Viewer | None = None
) -> AsyncGenerator[dict[str, Any]]:
    """The scan as JSON each time it changes, ending after a final status (or if it disappears).
    With `viewer`, raises Unauthorized at the first poll that finds its session ended."""
    last: dict[str, Any] | None = None
    while True:
        scan = await _read_scan(database, scan_id, viewer)
        if scan is None:
            return  # deleted with its repository
        current = ScanRead.of(scan).model_dump(mode="json")
        if current != last:
            last = current
            yield current
        if scan.status in FINAL_STATUSES:
            return
        await asyncio.sleep(poll_seconds)


# --- Server-Sent Events ------------------------------------------------------------------------


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def _signed_out(error: Unauthorized) -> dict[str, Any]:
    return {"code": error.instance_code, "detail": error.detail}


async def _event_stream(
    request: Request, database: Database, scan_id: uuid.UUID, viewer: Viewer
) -> AsyncIterator[bytes]:
    updates = scan_updates(database, scan_id, viewer=viewer).__aiter__()
    next_update: asyncio.Task[dict[str, Any]] | None = None
    # Clients reconnect after 2 s when the connection drops.
    yield b"retry: 2000\n\n"
    try:
        while True:
            if next_update is None:
                next_update = asyncio.ensure_future(updates.__anext__())
            done, _ = await asyncio.wait({next_update}, timeout=KEEPALIVE_SECONDS)
            if await request.is_disconnected():
                return
            if not done:
                yield b": keepalive\n\n"
                continue
            try:
                scan = next_update.result()
            except StopAsyncIteration:
                return
            except Unauthorized as ended:
                next_update = None
                yield _sse("signed_out", _signed_out(ended))
                return
            next_update = None
            final = scan["status"] in FINAL_STATUSES
            yield _sse("status" if final else "progress", scan)
            if final:
                return
    finally:
        if next_update is not None:
            next_update.cancel()


@router.get(
    "/scans/{scan_id}/events",
    summary="Follow a scan's progress (Server-Sent Events)",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "An event stream: `progress` events while the scan is queued or running, "
            "then one `status` event with the final state. Each `data` is the scan (as `GET /scans/{id}`).",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        }
    },
)
async def scan_events(request: Request, target: ScanViewer, current: CurrentSession) -> StreamingResponse:
    return event_stream_response(request, target.scan.id, current.id)


def event_stream_response(request: Request, scan_id: uuid.UUID, auth_session_id: uuid.UUID) -> StreamingResponse:
    """The Server-Sent Events answer following one scan, for a caller whose access the route has
    checked, signed in with `auth_session_id` (a bearer token here; the web dashboard's page stream
    passes its cookie's session): the stream ends once that session no longer authenticates."""
    # The request's own session ends with the route; the stream polls with short sessions.
    database: Database = request.app.state.database
    viewer = Viewer(auth_session_id, request.app.state.clock)
    return StreamingResponse(
        _event_stream(request, database, scan_id, viewer),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


# --- WebSocket ---------------------------------------------------------------------------------


def _token_of(websocket: WebSocket) -> tuple[str | None, str | None]:
    """The bearer token and the subprotocol to answer with."""
    offered = [p.strip() for p in websocket.headers.get("sec-websocket-protocol", "").split(",") if p.strip()]
    if BEARER_SUBPROTOCOL in offered:
        index = offered.index(BEARER_SUBPROTOCOL)
        if index + 1 < len(offered):
            return offered[index + 1], BEARER_SUBPROTOCOL
    return websocket.query_params.get("token"), None


@ws_router.websocket("/ws/scans/{scan_id}")
async def scan_socket(websocket: WebSocket, scan_id: str) -> None:
    try:
        await _serve_socket(websocket, scan_id)
    except WebSocketDisconnect:
        # The client left (closed the tab, lost the network): normal, whenever it happens.
        log.debug("scans.live_disconnected", scan_id=scan_id)
    except DATABASE_UNAVAILABLE_ERRORS as error:
        log.warning("db.unavailable", error=type(getattr(error, "orig", None) or error).__name__)
        if websocket.application_state is WebSocketState.CONNECTED:
            with contextlib.suppress(WebSocketDisconnect, RuntimeError):
                await websocket.close(code=CLOSE_TRY_AGAIN_LATER, reason="database_unavailable")


async def _serve_socket(websocket: WebSocket, scan_id: str) -> None:
    token, subprotocol = _token_of(websocket)
    # Accept first: a close before accepting is an HTTP 403 to the client, without our codes.
    await websocket.accept(subprotocol=subprotocol)
    database: Database = websocket.app.state.database
    try:
        scan_uuid = uuid.UUID(scan_id)
    except ValueError:
        await websocket.close(code=CLOSE_NOT_FOUND, reason="scan_not_found")
        return
    try:
        if not token:
            raise Unauthorized("Send a bearer token.", code="not_authenticated")
        async with database.transaction(write=False) as session:
            authenticated = await authenticate_token(websocket.app, session, token)
            await scans_service.require_scan(
                session, websocket.app.state.settings, websocket.app.state.clock, authenticated.user, scan_uuid
            )
    except Unauthorized as error:
        await websocket.close(code=CLOSE_UNAUTHORIZED, reason=error.code)
        return
    except NotFound:
        await websocket.close(code=CLOSE_NOT_FOUND, reason="scan_not_found")
        return
    await _stream(websocket, database, scan_uuid, Viewer(authenticated.session.id, websocket.app.state.clock))


async def _client_gone(websocket: WebSocket) -> None:
    """Returns when the client disconnects. The client sends nothing; reading is how a
    disconnect is noticed (whatever it sends meanwhile is ignored)."""
    while (await websocket.receive())["type"] != "websocket.disconnect":
        pass


async def _stream(websocket: WebSocket, database: Database, scan_id: uuid.UUID, viewer: Viewer) -> None:
    """Send each change of the scan until its final status, or until the client leaves: a gone
    client is noticed at once, not at the next change of the scan (which may be never). A session
    that ends meanwhile closes the socket with 4401."""
    gone = asyncio.ensure_future(_client_gone(websocket))
    updates = scan_updates(database, scan_id, viewer=viewer)
    next_update: asyncio.Future[dict[str, Any]] | None = None
    try:
        while True:
            next_update = asyncio.ensure_future(updates.__anext__())
            await asyncio.wait({next_update, gone}, return_when=asyncio.FIRST_COMPLETED)
            if gone.done():
                log.debug("scans.live_disconnected", scan_id=str(scan_id))
                return
            try:
                scan = next_update.result()
            except StopAsyncIteration:
                break
            except Unauthorized as ended:
                next_update = None
                await websocket.close(code=CLOSE_UNAUTHORIZED, reason=ended.instance_code)
                return
            next_update = None
            final = scan["status"] in FINAL_STATUSES
            await websocket.send_json({"type": "status" if final else "progress", "scan": scan})
        await websocket.close(code=1000)
    finally:
        pending = [task for task in (next_update, gone) if task is not None]
        for task in pending:
            task.cancel()
        # Collected, so no error of theirs goes unretrieved; then the poller can be closed.
        await asyncio.gather(*pending, return_exceptions=True)
        await updates.aclose()
