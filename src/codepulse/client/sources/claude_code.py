"""Claude Code: JSONL transcripts under each config directory's `projects/`, recursively (sub-agent
files included).

Config directories: `$CLAUDE_CONFIG_DIR` (comma-separated) when set, otherwise
`~/.config/claude` and `~/.claude`. A usage line is an `assistant` entry whose `message` has an
`id`, a `model` and a `usage`; its request is the entry's `requestId`. Streaming writes several
lines per response (the last one complete), and a resumed session's file starts with a copy of the
earlier session's lines: both repeat (message id, request id), which `RecordSet` keeps once with
the largest counts. Other entries that carry a `usage` object (tool results of sub-agents) are not
model responses of this session and are skipped, as is the `<synthetic>` model (Claude Code's own
placeholder messages, never billed). A malformed line is counted only when it has a `"usage":{`:
the others could not hold a record, and are skipped undecoded.

Speed: a heavy user has gigabytes of transcripts, most of it tool results. The file is mapped, not
copied, and searched with StringZilla (SIMD substring search: CPython's `find` spent a third of a
run looking for the marker); only lines holding `"usage"` are decoded, from views of the map, by
msgspec into the few keys a record needs (the message's content is skipped, not built); a line
of another shape is decoded whole and read by `record_of`, so both give the same record.

Cache writes: `usage.cache_creation.ephemeral_5m_input_tokens` / `ephemeral_1h_input_tokens` when
present, otherwise all of `cache_creation_input_tokens` is a 5-minute write (older logs).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import msgspec
import stringzilla

from codepulse.client.records import UsageRecord
from codepulse.client.sources import ParsedChunk

NAME = "claude-code"
SYNTHETIC_MODEL = "<synthetic>"
# Lines without it carry no usage object: skipped before any JSON is decoded (most of a
# transcript). Claude Code writes compact JSON (no space after a colon).
_USAGE_MARKER = b'"usage":{'


class _Split(msgspec.Struct, gc=False):
    ephemeral_5m_input_tokens: int | msgspec.UnsetType = msgspec.UNSET
    ephemeral_1h_input_tokens: int | msgspec.UnsetType = msgspec.UNSET


class _Usage(msgspec.Struct, gc=False):
    """Counts typed as int: any other type sends the line to the general path (`record_of`)."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation: _Split | None = None


class _Message(msgspec.Struct, gc=False):
    id: str | None = None
    model: str | None = None
    usage: _Usage | None = None


class _Entry(msgspec.Struct, gc=False):
    """The keys a record needs: the decoder skips every other (the message's content above all)
    without building it."""

    type: str | None = None
    message: _Message | None = None
    requestId: str | None = None
    timestamp: str | None = None
    sessionId: str | None = None


_ENTRY: Final = msgspec.json.Decoder(_Entry)
_ANY: Final = msgspec.json.Decoder()


def config_dirs(environ: Mapping[str, str], home: Path) -> list[Path]:
    configured = environ.get("CLAUDE_CONFIG_DIR", "").strip()
    if configured:
        return [Path(part.strip()).expanduser() for part in configured.split(",") if part.strip()]
    return [home / ".config" / "claude", home / ".claude"]


def log_files(environ: Mapping[str, str] = os.environ, home: Path | None = None) -> list[Path]:
    """Every transcript, each once: a config directory reached twice (e.g. `~/.config/claude` a
    symlink to `~/.claude`) is walked once; symlinks inside one are not followed."""
    found: list[Path] = []
    walked: set[Path] = set()
    for directory in config_dirs(environ, home or Path.home()):
        projects = directory / "projects"
        if not projects.is_dir() or projects.resolve() in walked:
            continue
        walked.add(projects.resolve())
        for root, _directories, names in os.walk(projects):
            found.extend(Path(root, name) for name in names if name.endswith(".jsonl"))
    return sorted(found)


def _int(value: Any) -> int:
    return value if type(value) is int and value > 0 else 0


def _record(
    message_id: str, request_id: Any, model: str, timestamp: str, session_id: Any, usage: Any
) -> UsageRecord | None:
    if not message_id or not model or model == SYNTHETIC_MODEL or not isinstance(usage, dict):
        return None
    split = usage.get("cache_creation")
    if isinstance(split, dict) and ("ephemeral_5m_input_tokens" in split or "ephemeral_1h_input_tokens" in split):
        five_minutes, one_hour = (
            _int(split.get("ephemeral_5m_input_tokens")),
            _int(split.get("ephemeral_1h_input_tokens")),
        )
    else:
        five_minutes, one_hour = _int(usage.get("cache_creation_input_tokens")), 0
    # Positional: this runs for every response line of gigabytes of transcripts.
    return UsageRecord(
        NAME,
        message_id,
        request_id if isinstance(request_id, str) and request_id else None,
        model,
        timestamp,
        _int(usage.get("input_tokens")),
        _int(usage.get("output_tokens")),
        five_minutes,
        one_hour,
        _int(usage.get("cache_read_input_tokens")),
        0,
        session_id if isinstance(session_id, str) and session_id else None,
    )


def record_of(entry: Any) -> UsageRecord | None:
    """The usage record of one transcript entry, or None when it is not a model response."""
    if not isinstance(entry, dict) or entry.get("type") != "assistant":
        return None
    message = entry.get("message")
    if not isinstance(message, dict):
        return None
    message_id, model, timestamp = message.get("id"), message.get("model"), entry.get("timestamp")
    if not isinstance(message_id, str) or not isinstance(model, str) or not isinstance(timestamp, str):
        return None
    return _record(message_id, entry.get("requestId"), model, timestamp, entry.get("sessionId"), message.get("usage"))


def line_record(line: Any) -> UsageRecord | None:
    """The record of one transcript line; raises `msgspec.DecodeError` for one that is not JSON."""
    try:
        entry = _ENTRY.decode(line)
    except msgspec.ValidationError:  # valid JSON of another shape: read it as `record_of` does
        return record_of(_ANY.decode(line))
    message = entry.message
    if entry.type != "assistant" or message is None or entry.timestamp is None:
        return None
    message_id, model, usage = message.id, message.model, message.usage
    if not message_id or not model or model == SYNTHETIC_MODEL or usage is None:
        return None
    split = usage.cache_creation
    if split is not None and not (
        split.ephemeral_5m_input_tokens is msgspec.UNSET and split.ephemeral_1h_input_tokens is msgspec.UNSET
    ):
        five_minutes, one_hour = split.ephemeral_5m_input_tokens, split.ephemeral_1h_input_tokens
        five_minutes = five_minutes if isinstance(five_minutes, int) and five_minutes > 0 else 0
        one_hour = one_hour if isinstance(one_hour, int) and one_hour > 0 else 0
    else:
        five_minutes, one_hour = usage.cache_creation_input_tokens, 0
        five_minutes = five_minutes if five_minutes > 0 else 0
    # Conditionals, not max(): this runs for every response line of gigabytes of transcripts.
    inputs, output, cache_read = usage.input_tokens, usage.output_tokens, usage.cache_read_input_tokens
    return UsageRecord(
        NAME,
        message_id,
        entry.requestId or None,
        model,
        entry.timestamp,
        inputs if inputs > 0 else 0,
        output if output > 0 else 0,
        five_minutes,
        one_hour,
        cache_read if cache_read > 0 else 0,
        0,
        entry.sessionId or None,
    )


def parse_chunk(data: bytes | stringzilla.Str, start: int = 0) -> ParsedChunk:
    """The records of the complete lines of `data` (bytes or a mapped file) from `start`, an offset
    at a line's beginning."""
    text = data if isinstance(data, stringzilla.Str) else stringzilla.Str(data)
    chunk = ParsedChunk()
    end = text.rfind(b"\n", start) + 1  # a last line without its newline is still being written
    if end <= start:
        return chunk
    chunk.consumed = end - start
    records, find, rfind = chunk.records, text.find, text.rfind
    last: UsageRecord | None = None
    at = find(_USAGE_MARKER, start, end)
    while at >= 0:
        newline = rfind(b"\n", start, at)
        line_end = find(b"\n", at, end)
        try:  # a view of the line, not a copy
            record = line_record(text[newline + 1 if newline >= 0 else start : line_end])
        except msgspec.DecodeError:
            chunk.malformed += 1
        else:
            if record is None:
                pass
            elif last is not None and record.message_id == last.message_id and record.request_id == last.request_id:
                last.absorb(record)  # the next streamed line of the same response
            else:
                records.append(record)
                last = record
        at = find(_USAGE_MARKER, line_end, end)
    return chunk


def read_file(path: Path, start: int) -> ParsedChunk:
    """The records of a transcript from byte `start` on, read through a memory map (no copy)."""
    try:
        text = stringzilla.Str(stringzilla.File(os.fspath(path)))
    except ValueError as error:  # not a regular file (a directory named like a transcript)
        raise OSError(errno.EINVAL, "not a regular file", os.fspath(path)) from error
    return parse_chunk(text, start) if len(text) > start else ParsedChunk()
