"""The tools whose logs the client reads: one module each, behind `ParsedChunk` and the functions
each module offers (`log_files(environ, home)`, `parse_chunk(data)`)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # `codepulse --help` imports this module for SOURCE_NAMES: nothing more
    from codepulse.client.records import UsageRecord

# The tools `codepulse sync` reads, in the order it reads them (`codepulse.client.collect.SOURCES`).
SOURCE_NAMES = (
    "claude-code",
    "codex",
    "gemini-cli",
    "cline",
    "roo-code",
    "kilo-code",
    "continue",
    "opencode",
    "factory-droid",
    "aider",
)


@dataclass
class ParsedChunk:
    """What one read of a log file gave: its records, the malformed lines skipped, and how many
    bytes were consumed (complete lines only: a last line still being written is left for the
    next read)."""

    records: list[UsageRecord] = field(default_factory=list)
    malformed: int = 0
    consumed: int = 0


def digest(data: bytes) -> str:
    """A short stable id for bytes (a line, a file) a tool logs without one. hashlib is imported
    here, when a source first needs it: its import is a noticeable part of a sync's start."""
    import hashlib

    return hashlib.blake2b(data, digest_size=16).hexdigest()


def parse_json_lines(
    data: bytes, record_of: Callable[[bytes, Any], UsageRecord | None], marker: bytes | None = None
) -> ParsedChunk:
    """The records of the complete lines of an append-only JSON-lines log (a last line without
    its newline is still being written); `record_of(line, decoded)` reads one. With `marker`, a
    line without it is skipped undecoded. A line that is not JSON counts as malformed."""
    end = data.rfind(b"\n") + 1
    chunk = ParsedChunk(consumed=end)
    for raw in data[:end].split(b"\n"):
        line = raw.strip()
        if not line or (marker is not None and marker not in line):
            continue
        try:
            record = record_of(line, json.loads(line))
        except ValueError:
            chunk.malformed += 1
            continue
        if record is not None:
            chunk.records.append(record)
    return chunk
