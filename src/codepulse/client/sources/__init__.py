"""The tools whose logs the client reads: one module each, behind `ParsedChunk` and the functions
each module offers (`log_files(environ, home)`, `parse_chunk(data)`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

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
