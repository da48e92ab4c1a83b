"""Logs never hold secrets: no frame locals in tracebacks (either mode), credentials in URLs and
session tokens redacted in every line, one compact traceback per error."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterator

import httpx
import pytest
import structlog
from fastapi import APIRouter, FastAPI, Request
from pydantic import BaseModel

from codepulse.config import Settings
from codepulse.logging import configure_logging, redact
from tests.helpers import with_api_prefix

PASSWORD = "correct-horse-battery-staple-41"
TOKEN = "cp_Zm9yZ2VkLXRva2VuLWZvci10aGUtbG9nZ2luZy10ZXN0"


class Credentials(BaseModel):
    email: str
    password: str


def _check_credentials(password: str, token: str | None) -> None:
    # Locals holding the secrets, a few frames deep, as in a login that hits an unexpected error.
    attempts = [password, token]
    raise RuntimeError(f"credential check failed after {len(attempts)} attempts")


def _crash_router() -> APIRouter:
    router = APIRouter(prefix="/_test", tags=["test"])

    @router.post("/login-crash")
    async def login_crash(body: Credentials, request: Request) -> None:
        password = body.password
        token = request.headers.get("authorization")
        _check_credentials(password, token)

    return router


@pytest.fixture
def log_output(base_settings: Settings) -> Iterator[Callable[[bool], io.StringIO]]:
    """`log_output(json)`: our log handler writing to a buffer in that mode (restored after)."""

    def configure(json_mode: bool) -> io.StringIO:
        stream = io.StringIO()
        configure_logging(base_settings.model_copy(update={"LOG_JSON": json_mode}), stream=stream)
        return stream

    yield configure
    configure_logging(base_settings)


@pytest.fixture
async def client(settings: Settings, app_factory: Callable[[Settings], FastAPI]) -> AsyncIterator[httpx.AsyncClient]:
    app = app_factory(settings)
    app.include_router(with_api_prefix(_crash_router(), app.state.settings))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as client:
        yield client


@pytest.mark.parametrize("json_mode", [True, False], ids=["json", "console"])
async def test_a_500_logs_neither_the_password_nor_the_token(
    client: httpx.AsyncClient, log_output: Callable[[bool], io.StringIO], json_mode: bool
) -> None:
    output = log_output(json_mode)
    response = await client.post(
        "/api/v1/_test/login-crash?token=" + TOKEN,
        json={"email": "ada@example.com", "password": PASSWORD},
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert response.status_code == 500
    assert response.json()["code"] == "internal_error"
    text = output.getvalue()
    assert "credential check failed" in text  # the error is logged...
    assert PASSWORD not in text  # ...without frame locals
    assert TOKEN not in text
    assert TOKEN[3:20] not in text
    [line] = [line for line in text.splitlines() if "http.unhandled_error" in line]
    if json_mode:
        logged = json.loads(line)
        assert isinstance(logged["exception"], str)  # the plain traceback, not frames with locals
        assert logged["exception"].count("Traceback (most recent call last)") == 1
        assert logged["path"] == "/api/v1/_test/login-crash"
        # One compact traceback: the same error logged with locals took ~68 KB.
        assert len(line) < 8_000
    else:
        assert text.count("Traceback (most recent call last)") == 1
        assert len(text) < 8_000


@pytest.mark.parametrize("json_mode", [True, False], ids=["json", "console"])
def test_credentials_in_urls_and_session_tokens_are_redacted_in_every_line(
    log_output: Callable[[bool], io.StringIO], json_mode: bool
) -> None:
    output = log_output(json_mode)
    structlog.get_logger("codepulse.test").info(
        "fetched", url=f"https://app.example/verify-email?token={TOKEN}&next=/home", nested={"auth": f"Bearer {TOKEN}"}
    )
    # A foreign (stdlib) logger, as uvicorn's: its message is formatted from args.
    logging.getLogger("uvicorn.error").info(
        '%s - "WebSocket %s" [accepted]', "127.0.0.1:5000", f"/ws/scans/1?token={TOKEN}"
    )
    logging.getLogger("uvicorn.error").info("oauth callback /cb?code=gho_secretcode123&state=s3cr3t-state")
    text = output.getvalue()
    assert TOKEN not in text
    assert TOKEN[3:20] not in text
    assert "gho_secretcode123" not in text
    assert "s3cr3t-state" not in text
    assert "verify-email?token=[redacted]&next=/home" in text
    assert "WebSocket /ws/scans/1?token=[redacted]" in text


def test_redact_keeps_what_is_not_a_credential() -> None:
    line = "user_id=42 code=insufficient_role path=/api/v1/orgs/{org}?limit=5&cursor=abc monkey=1"
    assert redact(line) == line
    assert redact("/x?tokens=1&mykey=2") == "/x?tokens=1&mykey=2"
    assert redact("/x?access_token=abc&api_key=def") == "/x?access_token=[redacted]&api_key=[redacted]"
