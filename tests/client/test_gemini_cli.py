"""Gemini CLI chats: `gemini` messages with token counts, cached input taken out of input only when
it is counted inside it, thoughts billed as output, tool prompts as input; `.json` documents and
`.jsonl` lines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from codepulse.client.sources import gemini_cli


def gemini(message_id: str, **tokens: int) -> dict[str, Any]:
    return {
        "id": message_id,
        "timestamp": "2026-11-23T09:41:07.512Z",
        "type": "gemini",
        "content": "done",
        "model": "gemini-2.5-pro",
        "tokens": tokens,
    }


CHAT = {
    "sessionId": "f86f5318",
    "projectHash": "79b6fa86",
    "startTime": "2026-11-23T09:40:00.000Z",
    "messages": [
        {"id": "u1", "timestamp": "2026-11-23T09:40:00.000Z", "type": "user", "content": "list files"},
        # cached inside input: total = input + output + thoughts + tool
        gemini("g1", input=1000, output=50, cached=600, thoughts=30, tool=20, total=1100),
        # cached beside input: total adds it
        gemini("g2", input=400, output=10, cached=300, thoughts=0, tool=0, total=710),
        {"id": "g3", "timestamp": "2026-11-23T09:41:00.000Z", "type": "gemini", "content": "no tokens"},
        {"id": "i1", "timestamp": "2026-11-23T09:41:00.000Z", "type": "info", "content": "cancelled"},
    ],
}


def test_chats_are_found_per_project(tmp_path: Path) -> None:
    chats = tmp_path / ".gemini" / "tmp" / "79b6fa86" / "chats"
    chats.mkdir(parents=True)
    document, lines = chats / "session-1.json", chats / "session-2.jsonl"
    for path in (document, lines, chats / "notes.txt"):
        path.write_text("{}")
    assert gemini_cli.log_files({}, tmp_path) == [document, lines]
    assert gemini_cli.log_files({}, tmp_path / "nobody") == []


def test_a_chat_document_gives_one_record_per_gemini_message() -> None:
    chunk = gemini_cli.parse_document(json.dumps(CHAT).encode(), lines=False)
    assert chunk.malformed == 0
    found = {record.message_id: record for record in chunk.records}
    assert sorted(found) == ["g1", "g2"]
    first, second = found["g1"], found["g2"]
    assert (first.input_tokens, first.cache_read_tokens, first.output_tokens, first.reasoning_tokens) == (
        420,
        600,
        80,
        30,
    )
    assert (second.input_tokens, second.cache_read_tokens, second.output_tokens) == (400, 300, 10)
    assert first.session_id == "f86f5318"
    assert first.source == "gemini-cli"


def test_chat_lines_and_a_broken_line() -> None:
    data = (
        json.dumps({"sessionId": "s-9", "kind": "header"}).encode()
        + b"\n"
        + json.dumps(gemini("g1", input=10, output=5, cached=0, thoughts=0, tool=0, total=15)).encode()
        + b"\n{broken\n"
        + json.dumps(gemini("g2", input=1, output=1, total=2)).encode()[:20]  # still being written
    )
    chunk = gemini_cli.parse_document(data, lines=True)
    assert chunk.malformed == 1
    assert [(record.message_id, record.session_id) for record in chunk.records] == [("g1", "s-9")]
    assert chunk.consumed == data.rfind(b"\n") + 1
