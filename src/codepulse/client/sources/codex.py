"""Codex CLI: JSONL rollouts under `${CODEX_HOME:-~/.codex}/sessions/` and `archived_sessions/`.

A rollout's `session_meta` names the session, each `turn_context` the model of the turns after
it, and each `event_msg` of type `token_count` the usage so far: `info.total_token_usage`
(cumulative) and `info.last_token_usage` (the last turn's). A turn's usage is `last_token_usage`,
or the difference of two cumulative totals when a build logs only those. Codex counts cached input
inside `input_tokens` and reasoning inside `output_tokens`: a record sends input - cached as input,
cached as cache reads, output as output and reasoning as `reasoning_tokens` (informational, never
priced twice). Codex logs no message id: a turn is named by its session and the cumulative total
after it, so an event written twice is one record. Turns before any `turn_context` (early builds)
have no model and are skipped.

`parse_chunk(data, state)` carries the session, the model and the last totals in `state`, so a
file read in pieces (an incremental sync) gives the same records as one read.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from codepulse.client.records import UsageRecord
from codepulse.client.sources import ParsedChunk

NAME = "codex"
_MARKERS = (b'"token_count"', b'"turn_context"', b'"session_meta"')
_USAGE_KEYS = ("input_tokens", "cached_input_tokens", "output_tokens", "reasoning_output_tokens", "total_tokens")


@dataclass
class CodexState:
    """What a rollout said before the bytes being read: its session, model and last totals."""

    session_id: str | None = None
    model: str | None = None
    totals: dict[str, int] | None = None


def initial_state(path: Path) -> CodexState:
    """A rollout's state before its first line: named by its file until its `session_meta` says."""
    return CodexState(session_id=path.stem)


def codex_home(environ: Mapping[str, str], home: Path) -> Path:
    configured = environ.get("CODEX_HOME", "").strip()
    return Path(configured).expanduser() if configured else home / ".codex"


def log_files(environ: Mapping[str, str] = os.environ, home: Path | None = None) -> list[Path]:
    root = codex_home(environ, home or Path.home())
    found: list[Path] = []
    for folder in ("sessions", "archived_sessions"):
        directory = root / folder
        if directory.is_dir():
            found.extend(path for path in sorted(directory.rglob("*.jsonl")) if path.is_file())
    return found


def _usage(value: Any) -> dict[str, int] | None:
    if not isinstance(value, dict):
        return None
    return {key: value[key] if type(value.get(key)) is int and value[key] > 0 else 0 for key in _USAGE_KEYS}


def _turn(state: CodexState, info: dict[str, Any]) -> dict[str, int] | None:
    """This event's turn usage, moving `state.totals` on."""
    last, total = _usage(info.get("last_token_usage")), _usage(info.get("total_token_usage"))
    previous = state.totals
    if total is None:
        if last is None:
            return None
        base = previous or dict.fromkeys(_USAGE_KEYS, 0)
        total = {key: base[key] + last[key] for key in _USAGE_KEYS}
    if last is None:
        base = previous or dict.fromkeys(_USAGE_KEYS, 0)
        last = {key: max(total[key] - base[key], 0) for key in _USAGE_KEYS}
    if previous is not None and total == previous:
        return None  # the same event again
    state.totals = total
    return last


def _record(state: CodexState, timestamp: Any, turn: dict[str, int]) -> UsageRecord | None:
    if state.model is None or state.session_id is None or not isinstance(timestamp, str):
        return None
    cached = min(turn["cached_input_tokens"], turn["input_tokens"])
    if not any(turn.values()):
        return None
    total = state.totals["total_tokens"] if state.totals else 0
    return UsageRecord(
        source=NAME,
        message_id=f"{state.session_id}:{total}",
        request_id=None,
        model=state.model,
        timestamp=timestamp,
        input_tokens=turn["input_tokens"] - cached,
        output_tokens=turn["output_tokens"],
        cache_read_tokens=cached,
        reasoning_tokens=min(turn["reasoning_output_tokens"], turn["output_tokens"]),
        session_id=state.session_id,
    )


def parse_chunk(data: bytes, state: CodexState) -> ParsedChunk:
    """The records of the complete lines of `data`, read after what `state` describes."""
    chunk = ParsedChunk()
    end = data.rfind(b"\n") + 1  # a last line without its newline is still being written
    chunk.consumed = end
    for line in data[:end].split(b"\n"):
        if not any(marker in line for marker in _MARKERS):
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            chunk.malformed += 1
            continue
        payload = entry.get("payload") if isinstance(entry, dict) else None
        if not isinstance(payload, dict):
            continue
        kind = entry.get("type")
        if kind == "session_meta" and isinstance(payload.get("id"), str):
            state.session_id = payload["id"]
        elif kind == "turn_context" and isinstance(payload.get("model"), str) and payload["model"]:
            state.model = payload["model"]
        elif kind == "event_msg" and payload.get("type") == "token_count" and isinstance(payload.get("info"), dict):
            turn = _turn(state, payload["info"])
            record = _record(state, entry.get("timestamp"), turn) if turn is not None else None
            if record is not None:
                chunk.records.append(record)
    return chunk
