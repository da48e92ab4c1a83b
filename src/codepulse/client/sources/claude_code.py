"""Claude Code: JSONL transcripts under each config directory's `projects/`, recursively (sub-agent
files included).

Config directories: `$CLAUDE_CONFIG_DIR` (comma-separated) when set, otherwise
`~/.config/claude` and `~/.claude`. A usage line is an `assistant` entry whose `message` has an
`id`, a `model` and a `usage`; its request is the entry's `requestId`. Streaming writes several
lines per response (the last one complete), and a resumed session's file starts with a copy of the
earlier session's lines: both repeat (message id, request id), which `RecordSet` keeps once with
the largest counts. Other entries that carry a `usage` object (tool results of sub-agents) are not
model responses of this session and are skipped, as is the `<synthetic>` model (Claude Code's own
placeholder messages, never billed). A malformed line is counted only when it mentions `"usage"`:
the others could not hold a record, and are skipped unparsed.

Cache writes: `usage.cache_creation.ephemeral_5m_input_tokens` / `ephemeral_1h_input_tokens` when
present, otherwise all of `cache_creation_input_tokens` is a 5-minute write (older logs).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from codepulse.client.records import UsageRecord
from codepulse.client.sources import ParsedChunk

NAME = "claude-code"
SYNTHETIC_MODEL = "<synthetic>"
# Lines without it carry no usage: skipped before any JSON is parsed (most of a transcript).
_USAGE_MARKER = b'"usage"'


def config_dirs(environ: Mapping[str, str], home: Path) -> list[Path]:
    configured = environ.get("CLAUDE_CONFIG_DIR", "").strip()
    if configured:
        return [Path(part.strip()).expanduser() for part in configured.split(",") if part.strip()]
    return [home / ".config" / "claude", home / ".claude"]


def log_files(environ: Mapping[str, str] = os.environ, home: Path | None = None) -> list[Path]:
    """Every transcript, each once (a directory reached twice, e.g. through a symlink, counts once)."""
    found: dict[Path, Path] = {}
    for directory in config_dirs(environ, home or Path.home()):
        projects = directory / "projects"
        if not projects.is_dir():
            continue
        for path in sorted(projects.rglob("*.jsonl")):
            if path.is_file():
                found.setdefault(path.resolve(), path)
    return list(found.values())


def _int(value: Any) -> int:
    return value if type(value) is int and value > 0 else 0


def record_of(entry: Any) -> UsageRecord | None:
    """The usage record of one transcript entry, or None when it is not a model response."""
    if not isinstance(entry, dict) or entry.get("type") != "assistant":
        return None
    message = entry.get("message")
    if not isinstance(message, dict):
        return None
    message_id, model, usage = message.get("id"), message.get("model"), message.get("usage")
    if not isinstance(message_id, str) or not message_id or not isinstance(model, str) or not model:
        return None
    if model == SYNTHETIC_MODEL or not isinstance(usage, dict):
        return None
    timestamp = entry.get("timestamp")
    if not isinstance(timestamp, str):
        return None
    request_id = entry.get("requestId")
    session_id = entry.get("sessionId")
    split = usage.get("cache_creation")
    if isinstance(split, dict) and ("ephemeral_5m_input_tokens" in split or "ephemeral_1h_input_tokens" in split):
        five_minutes, one_hour = (
            _int(split.get("ephemeral_5m_input_tokens")),
            _int(split.get("ephemeral_1h_input_tokens")),
        )
    else:
        five_minutes, one_hour = _int(usage.get("cache_creation_input_tokens")), 0
    return UsageRecord(
        source=NAME,
        message_id=message_id,
        request_id=request_id if isinstance(request_id, str) and request_id else None,
        model=model,
        timestamp=timestamp,
        input_tokens=_int(usage.get("input_tokens")),
        output_tokens=_int(usage.get("output_tokens")),
        cache_creation_5m_tokens=five_minutes,
        cache_creation_1h_tokens=one_hour,
        cache_read_tokens=_int(usage.get("cache_read_input_tokens")),
        session_id=session_id if isinstance(session_id, str) and session_id else None,
    )


def parse_chunk(data: bytes) -> ParsedChunk:
    """The records of the complete lines of `data` (bytes read from some offset of a transcript)."""
    chunk = ParsedChunk()
    end = data.rfind(b"\n") + 1  # a last line without its newline is still being written
    chunk.consumed = end
    for line in data[:end].split(b"\n"):
        if _USAGE_MARKER not in line:
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            chunk.malformed += 1
            continue
        record = record_of(entry)
        if record is not None:
            chunk.records.append(record)
    return chunk
