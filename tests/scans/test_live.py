"""Live scan progress: Server-Sent Events and the WebSocket, following a scan the real worker runs.

The WebSocket tests serve the app with uvicorn on a loopback port (httpx speaks no WebSocket)
and connect with the `websockets` client, as a browser or the CLI would.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import update
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from codepulse.auth.models import User
from codepulse.db import Database
from codepulse.logging import configure_logging
from codepulse.scans import live
from codepulse.scans.models import Scan
from tests.auth.helpers import register
from tests.helpers import served
from tests.scans.conftest import Flow
from tests.scans.helpers import API, GitRepo, aws_key, config_file, request_scan


def parse_sse(text: str) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if line and not line.startswith(":"))
        if "event" in fields:
            events.append((fields["event"], json.loads(fields["data"])))
    return events


async def _scan_with_a_secret(flow: Flow, tmp_path: Path) -> dict[str, Any]:
    repo = GitRepo(tmp_path / "repo")
    repo.commit({"settings.py": config_file(aws_key(7))})
    repository = await flow.repository(repo.url)
    return await request_scan(flow.client, flow.owner, repository["id"])


async def test_events_stream_progress_then_one_final_status(
    flow: Flow, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scan = await _scan_with_a_secret(flow, tmp_path)
    first_poll = asyncio.Event()
    read_scan = live._read_scan

    async def observed_read(database: Database, scan_id: uuid.UUID, viewer: live.Viewer | None) -> Scan | None:
        found = await read_scan(database, scan_id, viewer)
        first_poll.set()
        return found

    monkeypatch.setattr(live, "_read_scan", observed_read)
    stream = asyncio.create_task(flow.client.get(f"{API}/scans/{scan['id']}/events", headers=flow.owner.headers))
    await asyncio.wait_for(first_poll.wait(), timeout=15)  # the stream has seen the scan queued
    assert await flow.run_worker() == 1
    response = await asyncio.wait_for(stream, timeout=15)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.text.startswith("retry: 2000\n\n")
    events = parse_sse(response.text)
    assert events[0][0] == "progress"
    assert events[0][1]["status"] == "queued"
    assert [name for name, _ in events].count("status") == 1
    final_name, final = events[-1]
    assert final_name == "status"
    assert final["status"] == "succeeded"
    assert final["id"] == scan["id"]
    assert final["progress"]["percent"] == 100.0


async def test_events_of_a_finished_scan_send_its_final_status_and_end(flow: Flow, tmp_path: Path) -> None:
    scan = await _scan_with_a_secret(flow, tmp_path)
    assert await flow.run_worker() == 1
    response = await flow.client.get(f"{API}/scans/{scan['id']}/events", headers=flow.owner.headers)
    assert [(name, body["status"]) for name, body in parse_sse(response.text)] == [("status", "succeeded")]


async def test_events_are_for_members_only(flow: Flow, tmp_path: Path) -> None:
    scan = await _scan_with_a_secret(flow, tmp_path)
    outsider = await register(flow.client, "mallory")
    path = f"{API}/scans/{scan['id']}/events"

    anonymous = await flow.client.get(path)
    assert anonymous.status_code == 401
    assert anonymous.headers["content-type"] == "application/problem+json"
    hidden = await flow.client.get(path, headers=outsider.headers)
    assert hidden.status_code == 404
    assert hidden.json()["code"] == "scan_not_found"


# --- WebSocket ---------------------------------------------------------------------------------


async def _messages(socket: ClientConnection) -> list[dict[str, Any]]:
    received = []
    with contextlib.suppress(ConnectionClosed):
        async for message in socket:
            received.append(json.loads(message))  # noqa: PERF401 - keep what came before an abnormal close
    return received


def _app(flow: Flow) -> FastAPI:
    transport = flow.client._transport  # the ASGITransport the flow's client was built on
    app: FastAPI = transport.app  # type: ignore[attr-defined]
    return app


async def test_websocket_streams_progress_and_closes_after_the_final_status(flow: Flow, tmp_path: Path) -> None:
    scan = await _scan_with_a_secret(flow, tmp_path)
    async with (
        served(_app(flow)) as origin,
        connect(f"{origin}/ws/scans/{scan['id']}", subprotocols=["bearer", flow.owner.token]) as socket,  # type: ignore[list-item]
    ):
        assert socket.subprotocol == "bearer"
        first = json.loads(await asyncio.wait_for(socket.recv(), timeout=5))
        assert first["type"] == "progress"
        assert first["scan"]["status"] == "queued"
        assert await flow.run_worker() == 1
        rest = await asyncio.wait_for(_messages(socket), timeout=15)
        assert socket.close_code == 1000

    assert rest[-1]["type"] == "status"
    assert rest[-1]["scan"]["status"] == "succeeded"
    assert all(message["type"] == "progress" for message in rest[:-1])


async def test_websocket_accepts_the_token_as_a_query_parameter(flow: Flow, tmp_path: Path) -> None:
    scan = await _scan_with_a_secret(flow, tmp_path)
    assert await flow.run_worker() == 1
    async with served(_app(flow)) as origin:
        async with connect(f"{origin}/ws/scans/{scan['id']}?token={flow.owner.token}") as socket:
            messages = await asyncio.wait_for(_messages(socket), timeout=10)
        assert socket.close_code == 1000
    assert [(m["type"], m["scan"]["status"]) for m in messages] == [("status", "succeeded")]


@pytest.mark.parametrize("case", ["no_token", "bad_token", "outsider", "unknown_scan", "not_a_uuid"])
async def test_websocket_close_codes(flow: Flow, tmp_path: Path, case: str) -> None:
    scan = await _scan_with_a_secret(flow, tmp_path)
    scan_id, token = scan["id"], flow.owner.token
    if case == "no_token":
        token = ""
    elif case == "bad_token":
        token = "cp_" + "x" * 43
    elif case == "outsider":
        token = (await register(flow.client, "mallory")).token
    elif case == "unknown_scan":
        scan_id = "00000000-0000-4000-8000-000000000000"
    else:
        scan_id = "not-a-scan"
    expected = 4401 if case in {"no_token", "bad_token"} else 4404

    async with served(_app(flow)) as origin:
        query = f"?token={token}" if token else ""
        async with connect(f"{origin}/ws/scans/{scan_id}{query}") as socket:
            assert await asyncio.wait_for(_messages(socket), timeout=10) == []
        assert socket.close_code == expected


class LogStream(io.StringIO):
    """A log buffer that tells when it is written to."""

    def __init__(self) -> None:
        super().__init__()
        self.written = asyncio.Event()

    def write(self, text: str) -> int:
        self.written.set()
        return super().write(text)

    async def wait_for(self, text: str) -> None:
        async with asyncio.timeout(10):
            while text not in self.getvalue():
                self.written.clear()
                await self.written.wait()


@pytest.fixture
def log_stream(flow: Flow) -> Iterator[Callable[[bool], LogStream]]:
    """`log_stream(json)`: our log handler writing into a buffer (restored to the run's after)."""

    def configure(json_mode: bool) -> LogStream:
        stream = LogStream()
        configure_logging(flow.settings.model_copy(update={"LOG_JSON": json_mode}), stream=stream)
        return stream

    yield configure
    configure_logging(flow.settings)


@pytest.mark.parametrize("json_mode", [False, True], ids=["console", "json"])
async def test_a_client_leaving_is_a_normal_end_and_the_query_token_is_never_logged(
    flow: Flow, tmp_path: Path, log_stream: Callable[[bool], LogStream], json_mode: bool
) -> None:
    """The client closes while the scan is still queued (it may never change): the server notices
    at once, logs no error, and neither uvicorn's lines nor ours hold the `?token=`."""
    scan = await _scan_with_a_secret(flow, tmp_path)
    output = log_stream(json_mode)
    async with served(_app(flow)) as origin:
        async with connect(f"{origin}/ws/scans/{scan['id']}?token={flow.owner.token}") as socket:
            first = json.loads(await asyncio.wait_for(socket.recv(), timeout=5))
            assert first["scan"]["status"] == "queued"
        await output.wait_for("scans.live_disconnected")
    text = output.getvalue()
    assert flow.owner.token not in text
    assert flow.owner.token[3:20] not in text
    assert "?token=[redacted]" in text  # uvicorn's "WebSocket /ws/scans/...?token=..." [accepted] line
    assert "Traceback" not in text
    assert "Exception in ASGI application" not in text


async def test_a_client_leaving_before_the_answer_is_a_normal_end(
    flow: Flow, tmp_path: Path, log_stream: Callable[[bool], LogStream]
) -> None:
    """The client closes right after the handshake, before the server has checked its token."""
    scan = await _scan_with_a_secret(flow, tmp_path)
    output = log_stream(False)
    async with served(_app(flow)) as origin:
        for _ in range(5):
            async with connect(f"{origin}/ws/scans/{scan['id']}", subprotocols=["bearer", flow.owner.token]):  # type: ignore[list-item]
                pass
        # A last client that stays to the end: every earlier handler has run by then.
        assert await flow.run_worker() == 1
        async with connect(f"{origin}/ws/scans/{scan['id']}", subprotocols=["bearer", flow.owner.token]) as socket:  # type: ignore[list-item]
            await asyncio.wait_for(_messages(socket), timeout=10)
    text = output.getvalue()
    assert flow.owner.token not in text
    assert "Traceback" not in text
    assert "Exception in ASGI application" not in text


# --- a session that ends while the stream is open ----------------------------------------------


async def _disable_owner(flow: Flow) -> None:
    """A superuser disables the flow's owner: every session of theirs ends at once."""
    admin = await register(flow.client, "grace")
    async with flow.database.transaction() as session:
        await session.execute(update(User).where(User.username == "grace").values(is_superuser=True))
    response = await flow.client.patch(
        f"{API}/admin/users/{flow.owner.user['id']}", headers=admin.headers, json={"disabled": True}
    )
    assert response.status_code == 200, response.text


async def test_events_of_a_disabled_account_end_with_signed_out(
    flow: Flow, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scan = await _scan_with_a_secret(flow, tmp_path)  # queued: it never ends by itself here
    first_poll = asyncio.Event()
    read_scan = live._read_scan

    async def observed_read(database: Database, scan_id: uuid.UUID, viewer: live.Viewer | None) -> Scan | None:
        found = await read_scan(database, scan_id, viewer)
        first_poll.set()
        return found

    monkeypatch.setattr(live, "_read_scan", observed_read)
    stream = asyncio.create_task(flow.client.get(f"{API}/scans/{scan['id']}/events", headers=flow.owner.headers))
    await asyncio.wait_for(first_poll.wait(), timeout=15)
    await _disable_owner(flow)
    response = await asyncio.wait_for(stream, timeout=15)  # ends at the next poll

    events = parse_sse(response.text)
    assert [name for name, _ in events] == ["progress", "signed_out"]
    assert events[-1][1]["code"] == "account_disabled"


async def test_websocket_of_a_disabled_account_is_closed_4401(flow: Flow, tmp_path: Path) -> None:
    scan = await _scan_with_a_secret(flow, tmp_path)
    async with (
        served(_app(flow)) as origin,
        connect(f"{origin}/ws/scans/{scan['id']}", subprotocols=["bearer", flow.owner.token]) as socket,  # type: ignore[list-item]
    ):
        first = json.loads(await asyncio.wait_for(socket.recv(), timeout=5))
        assert first["scan"]["status"] == "queued"
        await _disable_owner(flow)
        assert await asyncio.wait_for(_messages(socket), timeout=15) == []
    assert (socket.close_code, socket.close_reason) == (4401, "account_disabled")
