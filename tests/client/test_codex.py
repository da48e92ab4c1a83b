"""Codex CLI rollouts: per-turn usage from `last_token_usage` or differences of cumulative totals,
cached input and reasoning split out, the model of the latest `turn_context`, a repeated event
once, and a file read in pieces giving the same records as one read."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from codepulse.client.records import RecordSet
from codepulse.client.sources import codex


def line(kind: str, payload: dict[str, Any], timestamp: str = "2026-11-23T09:41:07.512Z") -> bytes:
    return json.dumps({"timestamp": timestamp, "type": kind, "payload": payload}).encode() + b"\n"


def usage(inputs: int, cached: int, output: int, reasoning: int) -> dict[str, int]:
    return {
        "input_tokens": inputs,
        "cached_input_tokens": cached,
        "output_tokens": output,
        "reasoning_output_tokens": reasoning,
        "total_tokens": inputs + output,
    }


def token_count(total: dict[str, int] | None, last: dict[str, int] | None) -> bytes:
    info: dict[str, Any] = {"model_context_window": 272000}
    if total is not None:
        info["total_token_usage"] = total
    if last is not None:
        info["last_token_usage"] = last
    return line("event_msg", {"type": "token_count", "info": info, "rate_limits": {}})


ROLLOUT = b"".join(
    [
        line("session_meta", {"id": "0199-session", "cwd": "/work/app", "cli_version": "0.58.0"}),
        token_count(usage(100, 0, 10, 0), usage(100, 0, 10, 0)),  # before any turn_context: no model
        line("turn_context", {"model": "gpt-5-codex", "cwd": "/work/app"}),
        token_count(usage(1100, 600, 60, 20), usage(1000, 600, 50, 20)),
        token_count(usage(1100, 600, 60, 20), usage(1000, 600, 50, 20)),  # the same event again
        line("response_item", {"type": "message", "role": "assistant", "content": []}),
        line("turn_context", {"model": "gpt-5", "cwd": "/work/app"}),
        token_count(usage(3100, 2100, 90, 0), None),  # a build that logs only cumulative totals
        line("event_msg", {"type": "token_count", "info": None, "rate_limits": {}}),  # no usage yet
    ]
)


def test_rollouts_are_found_under_codex_home(tmp_path: Path) -> None:
    home = tmp_path / "home"
    live = home / ".codex" / "sessions" / "2026" / "11" / "23" / "rollout-a.jsonl"
    archived = home / ".codex" / "archived_sessions" / "rollout-b.jsonl"
    for path in (live, archived):
        path.parent.mkdir(parents=True)
        path.write_bytes(b"")
    assert codex.log_files({}, home) == [live, archived]
    moved = tmp_path / "custom" / "sessions" / "rollout-c.jsonl"
    moved.parent.mkdir(parents=True)
    moved.write_bytes(b"")
    assert codex.log_files({"CODEX_HOME": str(tmp_path / "custom")}, home) == [moved]


def test_turns_become_records_with_cached_input_and_reasoning_split_out() -> None:
    chunk = codex.parse_chunk(ROLLOUT, codex.CodexState())
    assert chunk.malformed == 0
    assert [record.payload() for record in chunk.records] == [
        {
            "source": "codex",
            "message_id": "0199-session:1160",
            "request_id": None,
            "model": "gpt-5-codex",
            "timestamp": "2026-11-23T09:41:07.512Z",
            "input_tokens": 400,
            "output_tokens": 50,
            "cache_creation_5m_tokens": 0,
            "cache_creation_1h_tokens": 0,
            "cache_read_tokens": 600,
            "reasoning_tokens": 20,
            "session_id": "0199-session",
        },
        {
            "source": "codex",
            "message_id": "0199-session:3190",
            "request_id": None,
            "model": "gpt-5",
            "timestamp": "2026-11-23T09:41:07.512Z",
            "input_tokens": 500,
            "output_tokens": 30,
            "cache_creation_5m_tokens": 0,
            "cache_creation_1h_tokens": 0,
            "cache_read_tokens": 1500,
            "reasoning_tokens": 0,
            "session_id": "0199-session",
        },
    ]


def test_a_rollout_read_in_pieces_gives_the_same_records(tmp_path: Path) -> None:
    whole = codex.parse_chunk(ROLLOUT, codex.CodexState()).records
    for cut in (len(ROLLOUT) // 3, len(ROLLOUT) // 2, len(ROLLOUT) - 5):
        state = codex.CodexState()
        first = codex.parse_chunk(ROLLOUT[:cut], state)
        rest = codex.parse_chunk(ROLLOUT[first.consumed :], state)
        assert first.records + rest.records == whole
        assert first.consumed + rest.consumed == len(ROLLOUT)


def test_a_rollout_without_session_meta_is_named_by_its_file_and_malformed_lines_are_counted(tmp_path: Path) -> None:
    path = tmp_path / "rollout-2026-11-23-abc.jsonl"
    path.write_bytes(
        line("turn_context", {"model": "gpt-5"})
        + b'{"type": "event_msg", "payload": {"type": "token_count", broken\n'
        + token_count(usage(10, 0, 5, 0), usage(10, 0, 5, 0))
    )
    chunk = codex.parse_chunk(path.read_bytes(), codex.initial_state(path))
    assert chunk.malformed == 1
    records = RecordSet()
    records.extend(chunk.records)
    assert [(record.session_id, record.input_tokens, record.output_tokens) for record in records] == [
        ("rollout-2026-11-23-abc", 10, 5)
    ]
