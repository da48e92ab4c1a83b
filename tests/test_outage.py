"""While the database cannot be reached, requests that need it answer 503 `database_unavailable`
with Retry-After (clients retry), never 500 `internal_error`, and log one short line each.

Real connection failures, no mocks: an SQLite file whose directory is gone, and a PostgreSQL URL
on a loopback port nothing listens on. Neither needs a database server, so both run in each pass.
"""

from __future__ import annotations

import io
import json
import shutil
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from codepulse.app import create_app
from codepulse.config import Settings
from codepulse.errors import DATABASE_RETRY_AFTER_SECONDS
from codepulse.logging import configure_logging
from tests.databases import build_settings

PASSWORD = "correct-horse-battery-staple-41"
TOKEN = "cp_Zm9yZ2VkLXRva2VuLWZvci10aGUtb3V0YWdlLXRlc3Q"


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _sqlite_without_its_directory(tmp_path: Path) -> Settings:
    directory = tmp_path / "volume"
    settings = build_settings(f"sqlite+aiosqlite:///{directory}/codepulse.db", VAR_DIR=tmp_path / "var")
    shutil.rmtree(directory)  # load_settings made it; the volume is gone
    return settings


def _postgres_on_a_closed_port(tmp_path: Path) -> Settings:
    url = f"postgresql+asyncpg://codepulse@127.0.0.1:{_closed_port()}/codepulse"
    return build_settings(url, VAR_DIR=tmp_path / "var", DB_CONNECT_TIMEOUT_SECONDS=2.0)


UNREACHABLE: dict[str, Callable[[Path], Settings]] = {
    "sqlite": _sqlite_without_its_directory,
    "postgresql": _postgres_on_a_closed_port,
}


@pytest.fixture
def json_log(base_settings: Settings) -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging(base_settings.model_copy(update={"LOG_JSON": True}), stream=stream)
    yield stream
    configure_logging(base_settings)


@pytest.fixture(params=list(UNREACHABLE))
async def client(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(UNREACHABLE[request.param](tmp_path))  # its own engine, on the dead URL
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as client,
    ):
        yield client


def _assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["retry-after"] == str(DATABASE_RETRY_AFTER_SECONDS)
    body = response.json()
    assert body["code"] == "database_unavailable"
    assert body["type"] == "urn:codepulse:problem:database_unavailable"
    assert body["request_id"] == response.headers["x-request-id"]


async def test_requests_needing_the_database_answer_503_with_retry_after(
    client: httpx.AsyncClient, json_log: io.StringIO
) -> None:
    login = await client.post("/api/v1/auth/login", json={"login": "ada", "password": PASSWORD})
    _assert_unavailable(login)
    register = await client.post(
        "/api/v1/auth/register",
        json={"email": "ada@example.com", "username": "ada", "password": PASSWORD, "name": "Ada"},
    )
    _assert_unavailable(register)
    me = await client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {TOKEN}"})
    _assert_unavailable(me)
    orgs = await client.get("/api/v1/orgs", headers={"Authorization": f"Bearer {TOKEN}"})
    _assert_unavailable(orgs)
    # Liveness needs no database.
    assert (await client.get("/api/v1/health")).status_code == 200

    lines = [json.loads(line) for line in json_log.getvalue().splitlines()]
    outages = [line for line in lines if line["event"] == "db.unavailable"]
    assert len(outages) == 4
    assert all("exception" not in line for line in outages)  # a line each, no traceback
    assert not [line for line in lines if line["event"] == "http.unhandled_error"]
    text = json_log.getvalue()
    assert PASSWORD not in text
    assert TOKEN not in text


async def test_database_error_messages_hold_no_bound_parameters(engine: AsyncEngine) -> None:
    """Error messages (and so the log) never carry bound values: emails, names, hashes."""
    async with engine.connect() as connection:
        with pytest.raises(DBAPIError) as raised:
            await connection.execute(text("SELECT * FROM no_such_table WHERE secret = :secret"), {"secret": PASSWORD})
    assert PASSWORD not in str(raised.value)
    assert "hidden" in str(raised.value)
