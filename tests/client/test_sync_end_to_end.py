"""`codepulse sync` end to end: the real command over real HTTP against the app, on homes holding
every supported tool's logs, through a server that first refuses with 429 and 503.

Every count below is written by hand; the dashboard's totals must equal them after each step:
streamed lines and a resumed session counted once, a sub-agent's file counted, a truncated last
line left for the next sync, appended lines read alone, a rewritten chat and a replaced file read
again (the server's dedup makes both harmless), and the same tree synced again changing nothing.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send
from typer.testing import CliRunner, Result

from codepulse.cli import app as cli
from codepulse.client.state import STATE_FILE
from tests.auth.helpers import register
from tests.client.test_claude_code import compact
from tests.helpers import served

runner = CliRunner()
# Recent, so the server (which refuses records older than 400 days) takes them whenever this runs.
WHEN = (datetime.now(UTC) - timedelta(days=1)).replace(microsecond=0)


def stamp(seconds: int = 0) -> str:
    return (WHEN + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


class Refusing:
    """The app behind a door that answers the first uploads with 429, then 503 (each saying to
    retry at once), as a server under load or restarting would."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.refusals = [(429, "rate_limited"), (503, "database_unavailable")]
        self.refused: list[int] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/api/v1/sync" and self.refusals:
            status, code = self.refusals.pop(0)
            self.refused.append(status)
            answer = JSONResponse(
                {"type": "about:blank", "title": "Try again", "status": status, "code": code, "detail": "later"},
                status_code=status,
                headers={"Retry-After": "0"},
                media_type="application/problem+json",
            )
            await answer(scope, receive, send)
            return
        await self.app(scope, receive, send)


# --- Claude Code ---------------------------------------------------------------------------------


def claude(
    message_id: str,
    *,
    inputs: int,
    output: int,
    cache_read: int = 0,
    five_minutes: int | None = None,
    one_hour: int = 0,
    legacy_write: int = 0,
    model: str = "claude-sonnet-4-5-20250929",
    at: int = 0,
) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "input_tokens": inputs,
        "cache_creation_input_tokens": legacy_write or (five_minutes or 0) + one_hour,
        "cache_read_input_tokens": cache_read,
        "output_tokens": output,
        "service_tier": "standard",
    }
    if five_minutes is not None or one_hour:
        usage["cache_creation"] = {
            "ephemeral_5m_input_tokens": five_minutes or 0,
            "ephemeral_1h_input_tokens": one_hour,
        }
    return {
        "parentUuid": None,
        "isSidechain": False,
        "userType": "external",
        "cwd": "/work/app",
        "sessionId": "s-a",
        "version": "2.0.31",
        "gitBranch": "main",
        "message": {
            "id": message_id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": "Done."}],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage,
        },
        "requestId": f"req-{message_id}",
        "type": "assistant",
        "uuid": f"u-{message_id}-{output}",
        "timestamp": stamp(at),
    }


def lines(*entries: dict[str, Any]) -> bytes:
    return b"".join(compact(entry) + b"\n" for entry in entries)


A1_STREAMED = [claude("a1", inputs=10, output=n, five_minutes=100, cache_read=1000) for n in (1, 20, 35)]
A2 = claude("a2", inputs=5, output=50, legacy_write=200, cache_read=2000, at=5)  # no 5m/1h split: 5-minute
SUBAGENT = claude("s1", inputs=3, output=7, one_hour=40, at=7)
B1 = claude("b1", inputs=8, output=80, cache_read=500, at=9)
B2 = claude("b2", inputs=2, output=22, cache_read=300, at=11)
A3 = claude("a3", inputs=1, output=9, at=13)
TOOL_RESULT = {
    "type": "user",
    "timestamp": stamp(6),
    "message": {"role": "user", "content": [{"type": "tool_result", "content": "ok"}]},
    "toolUseResult": {"status": "completed", "usage": {"input_tokens": 999, "output_tokens": 999}},
}
SYNTHETIC = claude("syn", inputs=0, output=0, model="<synthetic>", at=10)
# a1: 10 + 35 + 100 + 1000; a2: 5 + 50 + 200 + 2000; s1: 3 + 7 + 40; b1: 8 + 80 + 500
CLAUDE_FIRST = 1145 + 2255 + 50 + 588
# b2: 2 + 22 + 300 (its line was still being written at the first sync); a3: 1 + 9
CLAUDE_AFTER = CLAUDE_FIRST + 324 + 10


# --- Codex CLI -----------------------------------------------------------------------------------


def codex_line(kind: str, payload: dict[str, Any], at: int = 0) -> bytes:
    return json.dumps({"timestamp": stamp(at), "type": kind, "payload": payload}).encode() + b"\n"


def counts(inputs: int, cached: int, output: int, reasoning: int) -> dict[str, int]:
    return {
        "input_tokens": inputs,
        "cached_input_tokens": cached,
        "output_tokens": output,
        "reasoning_output_tokens": reasoning,
        "total_tokens": inputs + output,
    }


def token_count(total: dict[str, int], last: dict[str, int], at: int) -> bytes:
    info = {"total_token_usage": total, "last_token_usage": last, "model_context_window": 272000}
    return codex_line("event_msg", {"type": "token_count", "info": info, "rate_limits": {}}, at)


ROLLOUT = (
    codex_line("session_meta", {"id": "codex-session", "cwd": "/work/app", "cli_version": "0.58.0"})
    + codex_line("turn_context", {"model": "gpt-5-codex", "cwd": "/work/app"})
    + token_count(counts(1000, 600, 50, 20), counts(1000, 600, 50, 20), 1)
    + token_count(counts(1000, 600, 50, 20), counts(1000, 600, 50, 20), 1)  # the same event twice
    + token_count(counts(3000, 1600, 80, 20), counts(2000, 1000, 30, 0), 2)
)
ROLLOUT_MORE = token_count(counts(3500, 1800, 100, 20), counts(500, 200, 20, 0), 3)
# input less cached + output + cached (reasoning is inside output): 400 + 50 + 600; 1000 + 30 + 1000
CODEX_FIRST = 1050 + 2030
CODEX_AFTER = CODEX_FIRST + (300 + 20 + 200)


# --- Gemini CLI ----------------------------------------------------------------------------------


def gemini(message_id: str, at: int, **tokens: int) -> dict[str, Any]:
    return {"id": message_id, "timestamp": stamp(at), "type": "gemini", "model": "gemini-2.5-pro", "tokens": tokens}


def chat(*messages: dict[str, Any]) -> str:
    return json.dumps({"sessionId": "gem-1", "projectHash": "79b6fa86", "messages": list(messages)})


G1 = gemini("g1", 1, input=100, output=10, cached=40, thoughts=5, tool=0, total=115)  # cached inside input
G2 = gemini("g2", 2, input=50, output=20, cached=0, thoughts=0, tool=0, total=70)
G3 = gemini("g3", 3, input=30, output=3, cached=0, thoughts=0, tool=0, total=33)
GEMINI_FIRST = (60 + 15 + 40) + 70
GEMINI_AFTER = GEMINI_FIRST + 33


# --- the test ------------------------------------------------------------------------------------


@pytest.fixture
async def door(app: FastAPI) -> AsyncIterator[tuple[str, Refusing]]:
    refusing = Refusing(app)
    async with served(refusing, scheme="http") as origin:  # type: ignore[arg-type]
        yield origin, refusing


def command(tmp_path: Path, home: Path) -> Callable[..., Awaitable[Result]]:
    env = {
        "HOME": str(home),
        "CODEPULSE_CONFIG_DIR": str(tmp_path / "config"),
        "CODEPULSE_STATE_DIR": str(tmp_path / "state"),
        "CLAUDE_CONFIG_DIR": "",
        "CODEX_HOME": "",
        "CODEPULSE_PROGRESS": "0",
    }

    async def run(*args: str) -> Result:
        return await asyncio.to_thread(runner.invoke, cli, list(args), env=env)

    return run


async def test_sync_counts_every_response_once_through_refusals_appends_and_replaced_files(
    client: httpx.AsyncClient, door: tuple[str, Refusing], tmp_path: Path
) -> None:
    origin, refusing = door
    ada = await register(client, "ada")
    token = (await client.post("/api/v1/auth/tokens", headers=ada.headers, json={"name": "laptop"})).json()["token"]
    home = tmp_path / "home"
    project = home / ".claude" / "projects" / "-work-app"
    project.mkdir(parents=True)
    session_a, session_b = project / "s-a.jsonl", project / "s-b.jsonl"
    session_a.write_bytes(lines(*A1_STREAMED, A2, TOOL_RESULT) + b'{"type":"assistant","message":{"usage":{"inp\n')
    subagents = project / "s-a" / "subagents"
    subagents.mkdir(parents=True)
    (subagents / "agent-1.jsonl").write_bytes(lines(SUBAGENT))
    (project / "gone.jsonl").symlink_to(tmp_path / "deleted.jsonl")  # listed, unreadable
    b2_line = compact(B2)
    # Resumed: session b starts with a copy of session a, then goes on; its last line is cut short.
    session_b.write_bytes(lines(*A1_STREAMED, A2, B1, SYNTHETIC) + b2_line[:70])
    rollout = home / ".codex" / "sessions" / "2026" / "12" / "01" / "rollout-1.jsonl"
    rollout.parent.mkdir(parents=True)
    rollout.write_bytes(ROLLOUT)
    chat_file = home / ".gemini" / "tmp" / "79b6fa86" / "chats" / "session-1.json"
    chat_file.parent.mkdir(parents=True)
    chat_file.write_text(chat(G1, G2))
    run = command(tmp_path, home)

    async def dashboard() -> tuple[int, dict[str, int]]:
        overview = (await client.get("/api/v1/dashboard/overview", headers=ada.headers)).json()
        sources = (await client.get("/api/v1/dashboard/sources?range=all", headers=ada.headers)).json()
        per_source = {item["source"]: item["tokens"]["total"] for item in sources["items"]}
        return overview["periods"]["all"]["tokens"]["total"], per_source

    assert (await run("login", "--server", origin, "--token", token)).exit_code == 0
    first = await run("sync", "--json")
    assert first.exit_code == 0, first.output
    assert refusing.refused == [429, 503]  # retried, honouring Retry-After, then accepted
    summary = json.loads(first.stdout)
    assert (summary["received"], summary["inserted"], summary["rejected"]) == (8, 8, 0)
    assert "skipped 1 malformed line" in first.stderr
    assert "1 file(s) could not be read" in first.stderr
    assert f"{project / 'gone.jsonl'}: No such file or directory" in first.stderr
    assert await dashboard() == (
        CLAUDE_FIRST + CODEX_FIRST + GEMINI_FIRST,
        {"claude-code": CLAUDE_FIRST, "codex": CODEX_FIRST, "gemini-cli": GEMINI_FIRST},
    )

    nothing = await run("sync", "--json")
    assert json.loads(nothing.stdout) == {"received": 0}

    # The cut line is finished, and each tool writes more.
    with session_b.open("ab") as handle:
        handle.write(b2_line[70:] + b"\n")
    with session_a.open("ab") as handle:
        handle.write(lines(A3))
    with rollout.open("ab") as handle:
        handle.write(ROLLOUT_MORE)
    chat_file.write_text(chat(G1, G2, G3))  # Gemini rewrites the whole chat
    more = json.loads((await run("sync", "--json")).stdout)
    # b2, a3, the third Codex turn, g3 new; g1 and g2 sent again with the rewritten chat.
    assert (more["received"], more["inserted"], more["unchanged"]) == (6, 4, 2)
    after = (
        CLAUDE_AFTER + CODEX_AFTER + GEMINI_AFTER,
        {"claude-code": CLAUDE_AFTER, "codex": CODEX_AFTER, "gemini-cli": GEMINI_AFTER},
    )
    assert await dashboard() == after

    # Replaced (a new file under the same name): read again from its start, nothing new.
    replacement = project / "s-a.jsonl.new"
    replacement.write_bytes(session_a.read_bytes())
    os.replace(replacement, session_a)
    replaced = json.loads((await run("sync", "--json")).stdout)
    assert (replaced["received"], replaced["inserted"], replaced["updated"]) == (3, 0, 0)  # a1, a2, a3

    # The same tree synced again from nothing: the server already has every record as it is.
    (tmp_path / "state" / STATE_FILE).unlink()
    again = json.loads((await run("sync", "--json")).stdout)
    assert (again["received"], again["inserted"], again["updated"], again["unchanged"]) == (12, 0, 0, 12)
    assert await dashboard() == after


# --- the other tools: task folders, append-only logs, a database, running totals ------------------

MS = int(WHEN.timestamp() * 1000)
CLINE_MODEL = {"providerId": "anthropic", "modelId": "claude-sonnet-4-5-20250929", "mode": "act"}


def api_request(ts: int, tokens_in: int, tokens_out: int, writes: int, reads: int, **extra: Any) -> dict[str, Any]:
    """A VS Code task folder's `api_req_started` message (Cline, Roo Code, Kilo Code)."""
    counts = {"tokensIn": tokens_in, "tokensOut": tokens_out, "cacheWrites": writes, "cacheReads": reads, "cost": 0.01}
    return {"ts": ts, "type": "say", "say": "api_req_started", "text": json.dumps(counts), **extra}


def roo_history(ts: int, model: str) -> list[dict[str, Any]]:
    details = f"<environment_details>\n# Current Mode\n<model>{model}</model>\n</environment_details>"
    return [{"role": "user", "content": [{"type": "text", "text": details}], "ts": ts}]


def task(storage: Path, extension: str, messages: list[Any], history: list[Any] | None = None) -> Path:
    folder = storage / extension / "tasks" / f"{MS}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ui_messages.json").write_text(json.dumps(messages))
    if history is not None:
        (folder / "api_conversation_history.json").write_text(json.dumps(history))
    return folder / "ui_messages.json"


def continue_event(seconds: int, prompt: int, generated: int) -> bytes:
    return (
        json.dumps(
            {
                "eventName": "tokensGenerated",
                "schema": "0.2.0",
                "timestamp": stamp(seconds),
                "model": "claude-sonnet-4-5",
                "provider": "anthropic",
                "promptTokens": prompt,
                "generatedTokens": generated,
            }
        ).encode()
        + b"\n"
    )


def opencode_row(message_id: str, seconds: int, **tokens: int) -> tuple[str, str]:
    counts = {"input": tokens["input"], "output": tokens["output"], "reasoning": 0}
    counts["cache"] = {"read": tokens.get("read", 0), "write": tokens.get("write", 0)}  # type: ignore[assignment]
    counts["total"] = tokens["input"] + tokens["output"] + tokens.get("read", 0) + tokens.get("write", 0)
    message = {
        "role": "assistant",
        "time": {"created": MS + seconds * 1000, "completed": MS + seconds * 1000 + 900},
        "modelID": "claude-sonnet-4-5",
        "providerID": "anthropic",
        "tokens": counts,
    }
    return message_id, json.dumps(message)


def opencode_insert(database: Path, *rows: tuple[str, str]) -> None:
    import sqlite3

    connection = sqlite3.connect(database)
    with connection:
        connection.execute(
            "CREATE TABLE IF NOT EXISTS message (id text PRIMARY KEY, session_id text NOT NULL,"
            " time_created integer NOT NULL, time_updated integer NOT NULL, data text NOT NULL)"
        )
        connection.executemany("INSERT INTO message VALUES (?, 'ses_1', 0, 0, ?)", rows)
    connection.close()


def droid_settings(**usage: int) -> str:
    totals = {"inputTokens": 0, "outputTokens": 0, "cacheCreationTokens": 0, "cacheReadTokens": 0, "thinkingTokens": 0}
    document = {"model": "claude-sonnet-4-5-20250929", "providerLockTimestamp": stamp(), "tokenUsage": totals | usage}
    return json.dumps(document, indent=2)


def aider_send(seconds: int, prompt: int, completion: int) -> bytes:
    properties = {
        "main_model": "anthropic/claude-sonnet-4-5-20250929",
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    moment = int(WHEN.timestamp()) + seconds
    return json.dumps({"event": "message_send", "properties": properties, "time": moment}).encode() + b"\n"


async def test_every_other_tool_syncs_once_and_again_only_what_changed(
    client: httpx.AsyncClient, door: tuple[str, Refusing], tmp_path: Path
) -> None:
    origin, _refusing = door
    ada = await register(client, "ada")
    token = (await client.post("/api/v1/auth/tokens", headers=ada.headers, json={"name": "laptop"})).json()["token"]
    home = tmp_path / "home"
    storage = home / ".config" / "Code" / "User" / "globalStorage"
    cline_r1 = api_request(MS + 1_000, 3, 120, 900, 0, modelInfo=CLINE_MODEL)  # Anthropic: input without cache
    cline_r2 = api_request(MS + 5_000, 5, 200, 300, 9_000, modelInfo=CLINE_MODEL)
    cline_file = task(storage, "saoudrizwan.claude-dev", [cline_r1, cline_r2])
    # Roo and Kilo log input with the cache inside it: 10,500 = 500 + 10,000 read; 2,300 = 1,000 + 300 + 1,000
    task(
        storage,
        "rooveterinaryinc.roo-cline",
        [api_request(MS + 2_000, 10_500, 50, 0, 10_000, apiProtocol="anthropic")],
        roo_history(MS + 1_900, "claude-sonnet-4-5"),
    )
    task(
        storage,
        "kilocode.kilo-code",
        [api_request(MS + 3_000, 2_300, 30, 300, 1_000, apiProtocol="anthropic")],
        roo_history(MS + 2_900, "claude-sonnet-4-5"),
    )
    continue_log = home / ".continue" / "dev_data" / "0.2.0" / "tokensGenerated.jsonl"
    continue_log.parent.mkdir(parents=True)
    continue_log.write_bytes(continue_event(4, 1_200, 80))
    database = home / ".local" / "share" / "opencode" / "opencode.db"
    database.parent.mkdir(parents=True)
    opencode_insert(database, opencode_row("msg_1", 5, input=100, output=20, read=1_000, write=50))
    droid = home / ".factory" / "sessions" / "7f3c2a10-5b6d-4e8f-9a01-2b3c4d5e6f70.settings.json"
    droid.parent.mkdir(parents=True)
    droid.write_text(droid_settings(inputTokens=500, outputTokens=40, cacheCreationTokens=10, cacheReadTokens=2_000))
    aider_log = home / "aider-analytics.jsonl"
    aider_log.write_bytes(b'{"event": "launched", "properties": {}, "time": 1}\n' + aider_send(6, 900, 100))

    env: dict[str, str | None] = {
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_DATA_HOME": str(home / ".local" / "share"),
        "AIDER_ANALYTICS_LOG": str(aider_log),
        "CODEPULSE_CONFIG_DIR": str(tmp_path / "config"),
        "CODEPULSE_STATE_DIR": str(tmp_path / "state"),
        "CODEPULSE_PROGRESS": "0",
    }
    for variable in ("CLAUDE_CONFIG_DIR", "CODEX_HOME", "APPDATA", "VSCODE_PORTABLE", "VSCODE_APPDATA"):
        env[variable] = None
    for variable in ("CLINE_DATA_DIR", "CLINE_DIR", "CLINE_SESSION_DATA_DIR", "CONTINUE_GLOBAL_DIR", "OPENCODE_DB"):
        env[variable] = None

    async def run(*args: str) -> Result:
        return await asyncio.to_thread(runner.invoke, cli, list(args), env=env)

    async def per_source() -> dict[str, int]:
        sources = (await client.get("/api/v1/dashboard/sources?range=all", headers=ada.headers)).json()
        return {item["source"]: item["tokens"]["total"] for item in sources["items"]}

    assert (await run("login", "--server", origin, "--token", token)).exit_code == 0
    first = await run("sync", "--json")
    assert first.exit_code == 0, first.output
    summary = json.loads(first.stdout)
    assert (summary["received"], summary["inserted"], summary["rejected"]) == (8, 8, 0)
    assert await per_source() == {
        "cline": (3 + 120 + 900) + (5 + 200 + 300 + 9_000),
        "roo-code": 500 + 50 + 10_000,
        "kilo-code": 1_000 + 30 + 300 + 1_000,
        "continue": 1_200 + 80,
        "opencode": 100 + 20 + 1_000 + 50,
        "factory-droid": 500 + 40 + 10 + 2_000,
        "aider": 900 + 100,
    }
    assert json.loads((await run("sync", "--json")).stdout) == {"received": 0}  # nothing changed

    cline_file.write_text(
        json.dumps([cline_r1, cline_r2, api_request(MS + 9_000, 7, 10, 0, 100, modelInfo=CLINE_MODEL)])
    )
    with continue_log.open("ab") as handle:
        handle.write(continue_event(8, 300, 20))
    opencode_insert(database, opencode_row("msg_2", 9, input=10, output=5))
    droid.write_text(droid_settings(inputTokens=600, outputTokens=60, cacheCreationTokens=10, cacheReadTokens=2_000))
    with aider_log.open("ab") as handle:
        handle.write(aider_send(66, 300, 30))
    more = json.loads((await run("sync", "--json")).stdout)
    # New: Cline's third request, Continue's and Aider's appended events, OpenCode's new row; raised:
    # Droid's session; sent again unchanged: the rewritten task's first two requests, OpenCode's first row.
    assert (more["received"], more["inserted"], more["updated"], more["unchanged"]) == (8, 4, 1, 3)
    after = {
        "cline": 10_528 + (7 + 10 + 100),
        "roo-code": 10_550,
        "kilo-code": 2_330,
        "continue": 1_280 + 320,
        "opencode": 1_170 + 15,
        "factory-droid": 600 + 60 + 10 + 2_000,
        "aider": 1_000 + 330,
    }
    assert await per_source() == after

    (tmp_path / "state" / STATE_FILE).unlink()
    again = json.loads((await run("sync", "--json")).stdout)
    assert (again["received"], again["inserted"], again["updated"], again["unchanged"]) == (12, 0, 0, 12)
    assert await per_source() == after
