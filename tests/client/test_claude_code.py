"""Claude Code's transcripts: where they are found, and each response counted once with its
largest counts across streamed lines, resumed sessions and sub-agent files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from codepulse.client.records import RecordSet, UsageRecord
from codepulse.client.sources import claude_code


def assistant(
    message_id: str, request_id: str | None, *, output: int, model: str = "claude-sonnet-4-5-20250929", **usage: Any
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "type": "assistant",
        "sessionId": "s-1",
        "timestamp": "2026-11-23T09:41:07.512Z",
        "message": {
            "id": message_id,
            "model": model,
            "role": "assistant",
            "content": [{"type": "text", "text": "hi"}],
            "usage": {"input_tokens": 12, "output_tokens": output, "cache_read_input_tokens": 100, **usage},
        },
    }
    if request_id is not None:
        entry["requestId"] = request_id
    return entry


def compact(entry: dict[str, Any]) -> bytes:
    """One transcript line as Claude Code writes it (JavaScript's JSON.stringify: no spaces)."""
    return json.dumps(entry, separators=(",", ":"), ensure_ascii=False).encode()


def write(path: Path, entries: list[dict[str, Any]], tail: bytes = b"") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(compact(entry) + b"\n" for entry in entries) + tail)
    return path


def parse_all(paths: list[Path]) -> tuple[RecordSet, int]:
    records, malformed = RecordSet(), 0
    for path in paths:
        chunk = claude_code.parse_chunk(path.read_bytes())
        records.extend(chunk.records)
        malformed += chunk.malformed
    return records, malformed


def by_message(records: RecordSet) -> dict[str, UsageRecord]:
    return {record.message_id: record for record in records}


def test_transcripts_are_found_under_every_config_directory(tmp_path: Path) -> None:
    home = tmp_path / "home"
    first = write(home / ".claude" / "projects" / "-work-app" / "a.jsonl", [])
    nested = write(home / ".config" / "claude" / "projects" / "-work-api" / "b" / "subagents" / "agent-1.jsonl", [])
    (home / ".claude" / "projects" / "notes.txt").write_text("not a transcript")
    assert sorted(claude_code.log_files({}, home)) == sorted([first, nested])

    custom = write(tmp_path / "elsewhere" / "projects" / "p" / "c.jsonl", [])
    other = write(tmp_path / "other" / "projects" / "d.jsonl", [])
    environ = {"CLAUDE_CONFIG_DIR": f"{tmp_path / 'elsewhere'}, {tmp_path / 'other'}"}
    assert sorted(claude_code.log_files(environ, home)) == sorted([custom, other])


def test_streamed_lines_and_resumed_sessions_count_once_with_the_largest_counts(tmp_path: Path) -> None:
    first_session = [
        {"type": "user", "message": {"role": "user", "content": "go"}},
        assistant("msg_1", "req_1", output=1),  # streaming: partial counts first
        assistant("msg_1", "req_1", output=40),
        assistant("msg_1", "req_1", output=42),  # the complete line
        assistant("msg_2", "req_2", output=7),
    ]
    one = write(tmp_path / "projects" / "p" / "one.jsonl", first_session)
    # A resumed session starts with a copy of the earlier one, then goes on.
    resumed = write(tmp_path / "projects" / "p" / "two.jsonl", [*first_session, assistant("msg_3", "req_3", output=5)])
    records, malformed = parse_all([one, resumed])
    assert malformed == 0
    found = by_message(records)
    assert sorted(found) == ["msg_1", "msg_2", "msg_3"]
    assert found["msg_1"].output_tokens == 42
    assert found["msg_1"].payload() == {
        "source": "claude-code",
        "message_id": "msg_1",
        "request_id": "req_1",
        "model": "claude-sonnet-4-5-20250929",
        "timestamp": "2026-11-23T09:41:07.512Z",
        "input_tokens": 12,
        "output_tokens": 42,
        "cache_creation_5m_tokens": 0,
        "cache_creation_1h_tokens": 0,
        "cache_read_tokens": 100,
        "reasoning_tokens": 0,
        "session_id": "s-1",
    }


def test_cache_writes_are_split_by_lifetime_when_the_log_says(tmp_path: Path) -> None:
    split = assistant(
        "msg_split",
        "req_a",
        output=1,
        cache_creation_input_tokens=300,
        cache_creation={"ephemeral_5m_input_tokens": 100, "ephemeral_1h_input_tokens": 200},
    )
    older = assistant("msg_old", "req_b", output=1, cache_creation_input_tokens=250)
    records, _ = parse_all([write(tmp_path / "t.jsonl", [split, older])])
    found = by_message(records)
    assert (found["msg_split"].cache_creation_5m_tokens, found["msg_split"].cache_creation_1h_tokens) == (100, 200)
    assert (found["msg_old"].cache_creation_5m_tokens, found["msg_old"].cache_creation_1h_tokens) == (250, 0)


def test_entries_that_are_not_billed_model_responses_are_skipped(tmp_path: Path) -> None:
    entries = [
        assistant("msg_ok", "req_ok", output=3),
        assistant("msg_syn", "req_syn", output=9, model="<synthetic>"),
        {**assistant("msg_tool", "req_tool", output=9), "type": "user"},  # a tool result carrying usage
        {"type": "assistant", "timestamp": "2026-11-23T09:41:07Z", "message": {"model": "m", "usage": {}}},  # no id
        {"type": "assistant", "timestamp": "2026-11-23T09:41:07Z", "message": {"id": "msg_x", "usage": {}}},  # no model
        {"type": "summary", "summary": "a title", "usage": "mentioned in text"},
    ]
    records, malformed = parse_all([write(tmp_path / "t.jsonl", entries)])
    assert [record.message_id for record in records] == ["msg_ok"]
    assert malformed == 0


def test_malformed_lines_are_counted_and_a_last_line_being_written_is_left_for_later(tmp_path: Path) -> None:
    complete = [assistant("msg_1", "req_1", output=2)]
    partial = compact(assistant("msg_2", "req_2", output=8))[:60]  # no newline yet
    cut_short = compact(assistant("msg_0", "req_0", output=4))  # a crash mid-line, then a newline
    cut_short = cut_short[: cut_short.index(b'"usage":{') + 20] + b"\n"
    path = write(tmp_path / "t.jsonl", complete, tail=cut_short + partial)
    chunk = claude_code.parse_chunk(path.read_bytes())
    assert [record.message_id for record in chunk.records] == ["msg_1"]
    assert chunk.malformed == 1
    assert chunk.consumed == len(path.read_bytes()) - len(partial)
    # Once the writer finishes the line, reading on from `consumed` finds it.
    path.write_bytes(path.read_bytes()[: chunk.consumed] + compact(assistant("msg_2", "req_2", output=8)) + b"\n")
    rest = claude_code.parse_chunk(path.read_bytes()[chunk.consumed :])
    assert [(record.message_id, record.output_tokens) for record in rest.records] == [("msg_2", 8)]


def test_the_typed_decoder_agrees_with_the_general_reading_on_every_shape() -> None:
    """`line_record` decodes only the keys a record needs, typed; whatever the line holds, it must
    give what decoding the whole line and reading it with `record_of` gives."""
    base = assistant("msg_1", "req_1", output=5, cache_creation_input_tokens=30)
    usage = base["message"]["usage"]

    def variant(**changes: Any) -> dict[str, Any]:
        entry: dict[str, Any] = json.loads(json.dumps(base))
        for dotted, value in changes.items():
            target = entry
            *parents, last = dotted.split("__")
            for parent in parents:
                target = target[parent]
            if value is KeyError:
                target.pop(last, None)
            else:
                target[last] = value
        return entry

    shapes = [
        base,
        {**base, "message": {"model": "claude-opus-4-1", **base["message"]}},  # a later version's key order
        variant(requestId=KeyError),
        variant(requestId=""),
        variant(requestId=7),
        variant(sessionId=KeyError),
        variant(sessionId=3),
        variant(timestamp=KeyError),
        variant(timestamp=17),
        variant(type="user"),
        variant(type=None),
        variant(message="text"),
        variant(message=None),
        variant(message__id=""),
        variant(message__id=KeyError),
        variant(message__model="<synthetic>"),
        variant(message__model=KeyError),
        variant(message__usage=KeyError),
        variant(message__usage=None),
        variant(message__usage=[1, 2]),
        variant(message__usage={}),
        variant(message__usage={**usage, "input_tokens": "12"}),
        variant(message__usage={**usage, "input_tokens": 1.5}),
        variant(message__usage={**usage, "output_tokens": True}),
        variant(message__usage={**usage, "output_tokens": -4}),
        variant(message__usage={**usage, "output_tokens": 2**70}),
        variant(message__usage={**usage, "cache_creation": None}),
        variant(message__usage={**usage, "cache_creation": {}}),
        variant(message__usage={**usage, "cache_creation": {"ephemeral_1h_input_tokens": 9}}),
        variant(message__usage={**usage, "cache_creation": {"ephemeral_5m_input_tokens": -1}}),
        variant(message__usage={**usage, "cache_creation": {"ephemeral_5m_input_tokens": "9"}}),
        variant(message__usage={**usage, "cache_creation": 5}),
        variant(message__usage={**usage, "server_tool_use": {"web_search_requests": 1}}),
        variant(message__content=[{"type": "tool_use", "input": {"usage": {"input_tokens": 999}, "model": "x"}}]),
        {"type": "user", "toolUseResult": {"usage": usage}, "message": {"role": "user", "content": "done"}},
    ]
    for entry in shapes:
        line = compact(entry)
        assert claude_code.line_record(line) == claude_code.record_of(json.loads(line)), entry
    assert claude_code.line_record(compact(base)) is not None
