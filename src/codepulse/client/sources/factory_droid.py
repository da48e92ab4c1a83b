"""Factory Droid (the `droid` CLI of factory.ai): the per-session settings files under
`~/.factory/sessions/`.

Layout (as Factory's own droid-sdk-python reads it, `_high_level/discovery.py`): a session is
`<session id>.jsonl` (the transcript: a `session_start` line, then `message` lines) with
`<session id>.settings.json` beside it, in a directory per project (`-<cwd with / as ->`) or, for
older sessions, in `sessions/` itself. The transcript holds no token counts. The settings file holds
the session's running totals, rewritten as the session goes on: `tokenUsage` (`inputTokens`,
`outputTokens`, `cacheCreationTokens`, `cacheReadTokens`, `thinkingTokens`), with the session's
current `model` and `providerLockTimestamp` (when its provider was chosen, at its first request).

Droid keeps no per-response record, so a session is one record: message id = the session id, no
request id, timestamp = `providerLockTimestamp` (else the file's modification time). Re-reading the
rewritten file sends the same key with counts that only grow; the server keeps the largest value of
each count per key and adds only the difference to its totals (`codepulse.usage.sync`), so a
growing session is raised in place, never counted twice. What the server keeps from the first
upload of a key: its day and its model. A session's tokens therefore all land on the day it started,
priced as the model it had then. The file is rewritten in place, most often at the same size, so
whether it changed is told by a digest of its bytes (`unchanged`), not by its size.

Counts: input is already without cache reads (a session's `cacheReadTokens` is typically tens of
times its `inputTokens`); cache creations are 5-minute writes. Thinking tokens are a count of their
own beside `outputTokens` (as the public trackers that read these files take them; Droid's source
is closed): output is output + thinking, with the thinking as reasoning. A model named as a custom
(bring-your-own-key) one, `custom:Claude-Opus-4.5-[Anthropic]-0`, is sent without its `custom:`
prefix, bracketed provider and trailing index.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from codepulse.client.records import UsageRecord
from codepulse.client.sources import ParsedChunk, digest

NAME = "factory-droid"
SETTINGS_SUFFIX = ".settings.json"

_BRACKETS = re.compile(r"\[[^\]]*\]")
_INDEX = re.compile(r"-\d+$")


def log_files(environ: Mapping[str, str] = os.environ, home: Path | None = None) -> list[Path]:
    root = (home or Path.home()) / ".factory" / "sessions"
    if not root.is_dir():
        return []
    found = [*root.glob(f"*{SETTINGS_SUFFIX}"), *root.glob(f"*/*{SETTINGS_SUFFIX}")]
    return sorted(path for path in found if path.is_file())


def _count(value: Any) -> int:
    return value if type(value) is int and value > 0 else 0


def model_name(raw: str) -> str:
    """A custom model's display name as Droid stores it, back to the model's own name."""
    name = raw.strip()
    if name.startswith("custom:"):
        name = _INDEX.sub("", _BRACKETS.sub("", name.removeprefix("custom:")).strip("-"))
        name = re.sub(r"-{2,}", "-", name).strip("- ")
    return name


def _timestamp(settings: dict[str, Any], path: Path) -> str | None:
    locked = settings.get("providerLockTimestamp")
    if isinstance(locked, str):
        try:
            moment = datetime.fromisoformat(locked)
        except ValueError:
            moment = None
        if moment is not None and moment.tzinfo is not None:
            return moment.astimezone(UTC).isoformat(timespec="milliseconds")
    try:
        modified = path.stat().st_mtime
    except OSError:
        return None
    return datetime.fromtimestamp(modified, UTC).isoformat(timespec="milliseconds")


def session_id_of(path: Path) -> str:
    return path.name.removesuffix(SETTINGS_SUFFIX)


def parse_settings(data: bytes, path: Path) -> ParsedChunk:
    """The record of one session's settings file (read whole: it is rewritten, not appended to)."""
    chunk = ParsedChunk(consumed=len(data))
    try:
        settings = json.loads(data)
    except ValueError:
        chunk.malformed = 1
        return chunk
    usage = settings.get("tokenUsage") if isinstance(settings, dict) else None
    if usage is None and isinstance(settings, dict):
        return chunk  # a session that has not called a model yet
    if not isinstance(settings, dict) or not isinstance(usage, dict):
        chunk.malformed = 1
        return chunk
    inputs, output, thinking = (
        _count(usage.get("inputTokens")),
        _count(usage.get("outputTokens")),
        _count(usage.get("thinkingTokens")),
    )
    writes, reads = _count(usage.get("cacheCreationTokens")), _count(usage.get("cacheReadTokens"))
    if not (inputs or output or thinking or writes or reads):
        return chunk
    raw_model, timestamp = settings.get("model"), _timestamp(settings, path)
    model = model_name(raw_model) if isinstance(raw_model, str) else ""
    session_id = session_id_of(path)
    if not (model and timestamp and session_id):
        chunk.malformed = 1
        return chunk
    chunk.records.append(
        UsageRecord(
            source=NAME,
            message_id=session_id,
            request_id=None,
            model=model,
            timestamp=timestamp,
            input_tokens=inputs,
            output_tokens=output + thinking,
            cache_creation_5m_tokens=writes,
            cache_read_tokens=reads,
            reasoning_tokens=thinking,
            session_id=session_id,
        )
    )
    return chunk


def unchanged(path: Path, extra: dict[str, Any]) -> bool:
    """Whether a settings file holds what it held when last read (its reading state:
    `{"digest": ...}`). Droid rewrites the file in place with larger counts, most often of as many
    digits: its size, all collect compares by default, stays the same."""
    try:
        return extra.get("digest") == digest(path.read_bytes())
    except OSError:
        return False


def read(data: bytes, path: Path, _extra: dict[str, Any], _fresh: bool) -> tuple[ParsedChunk, dict[str, Any]]:
    return parse_settings(data, path), {"digest": digest(data)}
