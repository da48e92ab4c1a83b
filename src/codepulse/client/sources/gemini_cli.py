"""Gemini CLI: chat files under `~/.gemini/tmp/<project hash>/chats/` (`*.json`, one document
rewritten as the chat goes on, or `*.jsonl`, one message per line).

A usage message is one of `type` `gemini` with an `id`, a `model` and `tokens` (`input`,
`output`, `cached`, `thoughts`, `tool`, `total`). Gemini counts cached tokens inside `input` when
`total` is input + output + thoughts + tool (the API's own accounting), and beside it when
`total` also adds `cached`: cached tokens are sent as cache reads and taken out of input only in
the first case. Thoughts are billed as output: `output_tokens` is output + thoughts, with the
thoughts as `reasoning_tokens`; tool-use prompt tokens are input. A chat file is read whole (it is
rewritten, not appended to); the server's dedup makes reading it again harmless.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from codepulse.client.records import UsageRecord
from codepulse.client.sources import ParsedChunk

NAME = "gemini-cli"


def log_files(environ: Mapping[str, str] = os.environ, home: Path | None = None) -> list[Path]:
    root = (home or Path.home()) / ".gemini" / "tmp"
    if not root.is_dir():
        return []
    return [path for path in sorted(root.glob("*/chats/*")) if path.is_file() and path.suffix in (".json", ".jsonl")]


def _int(value: Any) -> int:
    return value if type(value) is int and value > 0 else 0


def record_of(message: Any, session_id: str | None) -> UsageRecord | None:
    if not isinstance(message, dict) or message.get("type") != "gemini":
        return None
    message_id, model, tokens, timestamp = (message.get(key) for key in ("id", "model", "tokens", "timestamp"))
    if not (isinstance(message_id, str) and message_id and isinstance(model, str) and model):
        return None
    if not isinstance(tokens, dict) or not isinstance(timestamp, str):
        return None
    inputs, output, cached = _int(tokens.get("input")), _int(tokens.get("output")), _int(tokens.get("cached"))
    thoughts, tool, total = _int(tokens.get("thoughts")), _int(tokens.get("tool")), _int(tokens.get("total"))
    beside = total == inputs + cached + output + thoughts + tool and cached > 0
    cache_read = cached if beside else min(cached, inputs)
    return UsageRecord(
        source=NAME,
        message_id=message_id,
        request_id=None,
        model=model,
        timestamp=timestamp,
        input_tokens=(inputs if beside else inputs - cache_read) + tool,
        output_tokens=output + thoughts,
        cache_read_tokens=cache_read,
        reasoning_tokens=thoughts,
        session_id=session_id,
    )


def _messages(document: Any) -> tuple[Iterable[Any], str | None]:
    if isinstance(document, dict) and isinstance(document.get("messages"), list):
        session_id = document.get("sessionId")
        return document["messages"], session_id if isinstance(session_id, str) else None
    return [document], None


def parse_document(data: bytes, *, lines: bool) -> ParsedChunk:
    """The records of a chat file's bytes (`lines`: a `.jsonl` file, one message per line)."""
    chunk = ParsedChunk()
    if lines:
        end = data.rfind(b"\n") + 1  # a last line without its newline is still being written
        parts = [part for part in data[:end].split(b"\n") if part.strip()]
    else:
        end, parts = len(data), [data] if data.strip() else []
    chunk.consumed = end
    session_id: str | None = None
    for part in parts:
        try:
            document = json.loads(part)
        except ValueError:
            chunk.malformed += 1
            continue
        messages, named = _messages(document)
        session_id = named or session_id
        if isinstance(document, dict) and isinstance(document.get("sessionId"), str):
            session_id = document["sessionId"]
        for message in messages:
            record = record_of(message, session_id)
            if record is not None:
                chunk.records.append(record)
    return chunk
