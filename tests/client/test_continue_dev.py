"""Continue's dev data: `tokensGenerated` events with a timestamp become records (prompt tokens as
input, generated as output), with ids derived from the event; broken lines are counted, the
user's id and token never read, and the files found under `CONTINUE_GLOBAL_DIR` or `~/.continue`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from codepulse.client.collect import Reader
from codepulse.client.sources import continue_dev

READ: Reader = continue_dev.read  # the shape collect's `Source.read` takes


def event(timestamp: str, model: str = "claude-sonnet-4-5", prompt: Any = 1_200, generated: Any = 80) -> bytes:
    # The shape schema 0.2.0 writes (packages/config-yaml/src/schemas/data/tokensGenerated/v0.2.0.ts).
    return json.dumps(
        {
            "eventName": "tokensGenerated",
            "schema": "0.2.0",
            "timestamp": timestamp,
            "userId": "secret-user-token",
            "userAgent": "Visual Studio Code/1.104.0 (Continue/1.2.3)",
            "selectedProfileId": "local",
            "model": model,
            "provider": "anthropic",
            "promptTokens": prompt,
            "generatedTokens": generated,
        }
    ).encode()


LINES = [
    event("2026-06-18T09:00:00.120Z"),
    event("2026-06-18T09:00:05.000Z", model="codestral-latest", prompt=900, generated=12),
    # identical time, different counts: two records
    event("2026-06-18T09:00:05.000Z", model="codestral-latest", prompt=901, generated=12),
    b"{broken",
    event("2026-06-18T09:01:00.000Z", prompt="many"),
    event("yesterday"),
    json.dumps({"model": "gpt-4o", "provider": "openai", "promptTokens": 10, "generatedTokens": 2}).encode(),  # 0.1.0
    event("2026-06-18T09:02:00.000Z", prompt=0, generated=0),
    json.dumps({"eventName": "chatFeedback", "timestamp": "2026-06-18T09:03:00.000Z"}).encode(),
]


def test_events_become_records() -> None:
    data = b"\n".join(LINES) + b"\n" + event("2026-06-18T09:04:00.000Z")[:30]  # the last still being written
    chunk = continue_dev.parse_chunk(data)
    assert chunk.consumed == data.rfind(b"\n") + 1
    assert chunk.malformed == 3  # the broken line, the non-numeric count, the bad timestamp
    assert [(r.model, r.timestamp, r.input_tokens, r.output_tokens) for r in chunk.records] == [
        ("claude-sonnet-4-5", "2026-06-18T09:00:00.120Z", 1_200, 80),
        ("codestral-latest", "2026-06-18T09:00:05.000Z", 900, 12),
        ("codestral-latest", "2026-06-18T09:00:05.000Z", 901, 12),
    ]
    first = chunk.records[0]
    assert (first.source, first.request_id, first.session_id) == ("continue", None, None)
    assert (first.cache_read_tokens, first.cache_creation_5m_tokens, first.reasoning_tokens) == (0, 0, 0)
    assert first.message_id.startswith("2026-06-18T09:00:00.120Z:")
    assert len({record.message_id for record in chunk.records}) == 3
    assert "secret-user-token" not in json.dumps([record.payload() for record in chunk.records])


def test_ids_do_not_depend_on_how_the_file_is_read(tmp_path: Path) -> None:
    whole = continue_dev.parse_chunk(b"\n".join(LINES) + b"\n")
    first = continue_dev.parse_chunk(b"\n".join(LINES[:2]) + b"\n")
    rest = continue_dev.parse_chunk(b"\n".join(LINES[2:]) + b"\n")
    assert [r.message_id for r in whole.records] == [r.message_id for r in first.records + rest.records]
    path = tmp_path / "tokensGenerated.jsonl"
    path.write_bytes(b"\n".join(LINES) + b"\n")
    chunk, extra = READ(path.read_bytes(), path, {}, True)
    assert (chunk.records, extra) == (whole.records, {})


def test_files_are_found_per_schema_version(tmp_path: Path) -> None:
    home = tmp_path / "home"
    dev_data = home / ".continue" / "dev_data"
    files = [dev_data / version / "tokensGenerated.jsonl" for version in ("0.1.0", "0.2.0")]
    for path in [*files, dev_data / "0.2.0" / "chatInteraction.jsonl"]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    assert continue_dev.log_files({}, home) == files
    assert continue_dev.log_files({}, tmp_path / "nobody") == []
    elsewhere = tmp_path / "continue-global"
    moved = elsewhere / "dev_data" / "0.2.0" / "tokensGenerated.jsonl"
    moved.parent.mkdir(parents=True)
    moved.write_bytes(b"")
    assert continue_dev.log_files({"CONTINUE_GLOBAL_DIR": str(elsewhere)}, home) == [moved]


def test_a_relative_continue_dir_is_taken_from_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert continue_dev.continue_dir({"CONTINUE_GLOBAL_DIR": "cfg"}, tmp_path / "home") == tmp_path / "cfg"
