"""Continue (continue.dev, VS Code and JetBrains): the local development data it always writes,
`<Continue dir>/dev_data/<schema version>/tokensGenerated.jsonl`, one JSON event per line, appended.

The Continue dir is `$CONTINUE_GLOBAL_DIR` (a relative one taken from the working directory, as
Continue does) or `~/.continue`. Continue logs one `tokensGenerated` event at the end of every model
call (chat, agent, edit, autocomplete: `core/llm/index.ts` `_logEnd`); schema 0.2.0
(`packages/config-yaml/src/schemas/data/tokensGenerated/v0.2.0.ts`) holds `timestamp` (ISO 8601,
UTC), `model`, `provider`, `promptTokens` and `generatedTokens`, beside the user's id and token,
which are never read. Schema 0.1.0 lines have no timestamp and are skipped.

The counts are Continue's own estimates (`countTokens` over the prompt it rendered and the
completion text), not the provider's billed usage: no cache split is known, so `promptTokens` is
all input and no cache tokens are sent; thinking text is not in `generatedTokens`. The provider's
reported usage is kept only in memory (and, for the `cn` CLI, as per-session totals).

Events have no id. A record's id is its timestamp and a digest of its model, provider and counts:
reading the file again gives the same ids, and the server's dedup keeps each event once. Two events
identical in all of these within one millisecond would be one record (a loss too small to matter).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from codepulse.client.records import UsageRecord
from codepulse.client.sources import ParsedChunk, digest, parse_json_lines

NAME = "continue"
EVENTS_FILE = "tokensGenerated.jsonl"


def continue_dir(environ: Mapping[str, str], home: Path) -> Path:
    configured = environ.get("CONTINUE_GLOBAL_DIR", "").strip()
    if not configured:
        return home / ".continue"
    folder = Path(configured).expanduser()
    return folder if folder.is_absolute() else Path.cwd() / folder


def log_files(environ: Mapping[str, str] = os.environ, home: Path | None = None) -> list[Path]:
    dev_data = continue_dir(environ, home or Path.home()) / "dev_data"
    if not dev_data.is_dir():
        return []
    return [path for path in sorted(dev_data.glob(f"*/{EVENTS_FILE}")) if path.is_file()]


def _count(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not value.is_integer():
        return None
    return max(0, int(value))


def _has_offset(timestamp: str) -> bool:
    try:
        return datetime.fromisoformat(timestamp).tzinfo is not None
    except ValueError:
        return False


def record_of(event: Any) -> UsageRecord | None:
    """The record of one event; None for another kind of line or one too old to carry a time.
    Raises ValueError for a tokensGenerated event whose fields are not what the schema says."""
    if not isinstance(event, dict) or event.get("eventName", "tokensGenerated") != "tokensGenerated":
        return None
    timestamp = event.get("timestamp")
    if timestamp is None:
        return None  # schema 0.1.0: no time to date it by
    model, provider = event.get("model"), event.get("provider")
    prompt, generated = _count(event.get("promptTokens")), _count(event.get("generatedTokens"))
    if not isinstance(timestamp, str) or not _has_offset(timestamp):
        raise ValueError("timestamp")
    if not isinstance(model, str) or not model.strip() or prompt is None or generated is None:
        raise ValueError("fields")
    if not (prompt or generated):
        return None
    provider = provider if isinstance(provider, str) else ""
    fingerprint = digest(f"{model}\0{provider}\0{prompt}\0{generated}".encode())
    return UsageRecord(
        source=NAME,
        message_id=f"{timestamp}:{fingerprint}",
        request_id=None,
        model=model.strip(),
        timestamp=timestamp,
        input_tokens=prompt,
        output_tokens=generated,
    )


def parse_chunk(data: bytes) -> ParsedChunk:
    """The records of complete lines (a last line still being written is left for the next read)."""
    return parse_json_lines(data, lambda _line, event: record_of(event))


def read(data: bytes, _path: Path, _extra: dict[str, Any], _fresh: bool) -> tuple[ParsedChunk, dict[str, Any]]:
    """collect's `read`: an append-only file read from the saved offset, no other state."""
    return parse_chunk(data), {}
