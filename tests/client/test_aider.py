"""Aider's analytics log (`AIDER_ANALYTICS_LOG`): one record per `message_send` event, its id a
digest of the line, so reading the log again or in pieces gives the same records."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from codepulse.client.collect import SOURCES, Source, collect
from codepulse.client.sources import aider
from codepulse.client.state import SyncState

USER = "c42c4e6b-f054-44d7-ae1f-6726cc41da88"


def event(name: str, time: int, **properties: Any) -> bytes:
    """One line as aider's Analytics.event writes it (json.dump, then a newline)."""
    return json.dumps({"event": name, "properties": properties, "user_id": USER, "time": time}).encode() + b"\n"


def send(time: int, prompt: int, completion: int, model: str = "gemini/gemini-2.5-pro", cost: float = 0.01) -> bytes:
    return event(
        "message_send",
        time,
        main_model=model,
        weak_model="gemini/gemini-2.5-flash-lite",
        editor_model=model,
        edit_format="ask",
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        cost=cost,
        total_cost=cost,
    )


LOG = b"".join(
    [
        event("launched", 1755100300),
        event("cli session", 1755100327, main_model="gemini/gemini-2.5-pro", edit_format="diff-fenced"),
        event("message_send_starting", 1755100352),
        send(1755100406, 10006, 81, cost=0.0133175),
        event("message_send_starting", 1755100791),
        send(1755100863, 10829, 591, model="anthropic/claude-sonnet-4-5-20250929", cost=0.0327),
        send(1755100900, 500, 20, model="None"),  # a model aider redacted entirely
        send(1755100950, 0, 0),  # nothing sent
        b'{"event": "message_send", "properties": {"main_model": "gpt-5", "prompt_tokens": "many"}, "time": 1}\n',
        b'{"event": "message_send", "properti\n',
        b"{not json and not a usage line}\n",
        send(1755101000, 1, 1)[:40],  # still being written
    ]
)


def test_message_send_events_are_records() -> None:
    chunk = aider.parse_chunk(LOG)
    assert chunk.malformed == 2
    assert chunk.consumed == LOG.rfind(b"\n") + 1
    first, second = chunk.records
    assert (first.source, first.model, first.timestamp) == (
        "aider",
        "gemini/gemini-2.5-pro",
        "2025-08-13T15:53:26+00:00",
    )
    assert (first.input_tokens, first.output_tokens, first.cache_read_tokens, first.reasoning_tokens) == (
        10006,
        81,
        0,
        0,
    )
    assert (first.request_id, first.session_id) == (None, None)
    assert first.message_id.startswith("aider-")
    assert first.message_id != second.message_id
    assert (second.model, second.input_tokens, second.output_tokens) == (
        "anthropic/claude-sonnet-4-5-20250929",
        10829,
        591,
    )


def test_reading_again_or_in_pieces_gives_the_same_ids() -> None:
    whole = aider.parse_chunk(LOG)
    assert [record.payload() for record in aider.parse_chunk(LOG).records] == [
        record.payload() for record in whole.records
    ]
    split = LOG.index(b"message_send_starting", LOG.index(b"10006"))
    head = aider.parse_chunk(LOG[:split])
    tail = aider.parse_chunk(LOG[head.consumed :])
    assert [record.message_id for record in head.records + tail.records] == [
        record.message_id for record in whole.records
    ]


def test_the_log_is_the_file_aider_analytics_log_names(tmp_path: Path) -> None:
    home = tmp_path / "home"
    log = home / "logs" / "aider.jsonl"
    log.parent.mkdir(parents=True)
    log.write_bytes(LOG)
    assert aider.log_files({}, home) == []
    assert aider.log_files({"AIDER_ANALYTICS_LOG": str(log)}, home) == [log]
    assert aider.log_files({"AIDER_ANALYTICS_LOG": "~/logs/aider.jsonl"}, home) == [log]
    assert aider.log_files({"AIDER_ANALYTICS_LOG": str(home / "missing.jsonl")}, home) == []


def test_collect_reads_only_what_was_appended(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(SOURCES, aider.NAME, Source(aider.NAME, aider.log_files, aider.read))
    log = tmp_path / "aider.jsonl"
    log.write_bytes(LOG)
    environ = {"AIDER_ANALYTICS_LOG": str(log)}
    first = collect([aider.NAME], SyncState(), environ, tmp_path)
    assert len(first.records) == 2
    with log.open("ab") as handle:
        handle.write(send(1755101000, 1, 1)[40:] + send(1755102000, 300, 40))
    later = collect([aider.NAME], first.state, environ, tmp_path)
    assert [(record.input_tokens, record.output_tokens) for record in later.records] == [(1, 1), (300, 40)]
