"""Aider: its analytics log, a JSONL file aider appends one event to per line, written only when the
user asks for it (`--analytics-log FILE`, or `AIDER_ANALYTICS_LOG`, the environment variable aider's
option parser maps to it; aider/args.py). We read the file `AIDER_ANALYTICS_LOG` names: aider's
other output (`.aider.chat.history.md` in each repository: rounded "2.5k sent" counts, no ids, no
timestamps per reply) cannot give exact records.

A line: `{"event", "properties", "user_id", "time"}` (aider/analytics.py), `time` in epoch seconds.
A `message_send` event closes each reply of the main model (Coder.show_usage_report in
aider/coders/base_coder.py) with `main_model`, `prompt_tokens`, `completion_tokens`. Aider logs no
id for it: its message id is a digest of the line, the same on every read (two replies give equal
lines only if equal to the second in time, counts and running session cost).

Counts, as aider has them: `prompt_tokens` is the prompt aider counted as sent: for Anthropic the
uncached input plus cache writes (cache reads are not logged), for OpenAI-style providers the whole
prompt, cached part included; aider logs no cache split, so it is all sent as input.
`completion_tokens` is output, reasoning included and not split out. A model that is not in
litellm's model list is logged as `provider/REDACTED` (sent as such) or `None` (no model: skipped).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from codepulse.client.records import UsageRecord
from codepulse.client.sources import ParsedChunk, digest, parse_json_lines

NAME = "aider"
LOG_VARIABLE = "AIDER_ANALYTICS_LOG"
EVENT = "message_send"


def log_files(environ: Mapping[str, str] = os.environ, home: Path | None = None) -> list[Path]:
    configured = environ.get(LOG_VARIABLE, "").strip()
    if not configured:
        return []
    if configured == "~" or configured.startswith(("~/", "~\\")):
        path = (home or Path.home()) / configured[2:]
    else:
        path = Path(configured)
    return [path] if path.is_file() else []


def _count(value: Any) -> int | None:
    return value if type(value) is int and value >= 0 else None


def record_of(line: bytes, entry: Any) -> UsageRecord | None:
    """The record of a `message_send` event; None for other events. Raises ValueError for a
    `message_send` event without its counts or time."""
    if not isinstance(entry, dict) or entry.get("event") != EVENT:
        return None
    properties, moment = entry.get("properties"), entry.get("time")
    if not isinstance(moment, int | float) or isinstance(moment, bool) or not 0 < moment < 1e11:
        raise ValueError("message_send without a time")
    if not isinstance(properties, dict):
        raise ValueError("message_send without properties")
    prompt, completion = _count(properties.get("prompt_tokens")), _count(properties.get("completion_tokens"))
    if prompt is None or completion is None:
        raise ValueError("message_send without token counts")
    model = properties.get("main_model")
    if not isinstance(model, str) or model.strip() in ("", "None") or not prompt + completion:
        return None
    return UsageRecord(
        source=NAME,
        message_id="aider-" + digest(line),
        request_id=None,
        model=model.strip(),
        timestamp=datetime.fromtimestamp(moment, UTC).isoformat(),
        input_tokens=prompt,
        output_tokens=completion,
    )


def parse_chunk(data: bytes) -> ParsedChunk:
    """The records of complete lines; only the lines of the one event are decoded (the log is
    mostly other events)."""
    return parse_json_lines(data, record_of, EVENT.encode())


def read(data: bytes, _path: Path, _extra: dict[str, Any], _fresh: bool) -> tuple[ParsedChunk, dict[str, Any]]:
    return parse_chunk(data), {}
