"""One pass over the local logs: find each source's files, read what is new in each since the
saved state, parse it, and keep every record once (`RecordSet`).

`collect(...)` returns the records, per-source figures (the `--dry-run --json` shape), malformed
lines, files that could not be read, and the state to save once the records are uploaded (a run
that fails to upload saves nothing, so the next one reads the same bytes again).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from codepulse.client.records import RecordSet, UsageRecord
from codepulse.client.sources import ParsedChunk, claude_code, codex, gemini_cli
from codepulse.client.state import FileState, SyncState

# (the chunk's records, the source's reading state after it)
Read = tuple[ParsedChunk, dict[str, Any]]
Reader = Callable[[bytes, Path, dict[str, Any], bool], Read]


def _read_claude_code(
    data: bytes, _path: Path, _extra: dict[str, Any], _fresh: bool
) -> tuple[ParsedChunk, dict[str, Any]]:
    return claude_code.parse_chunk(data), {}


def _read_codex(data: bytes, path: Path, extra: dict[str, Any], fresh: bool) -> Read:
    state = codex.initial_state(path) if fresh or not extra else codex.CodexState(**extra)
    return codex.parse_chunk(data, state), asdict(state)


def _read_gemini_cli(
    data: bytes, path: Path, _extra: dict[str, Any], _fresh: bool
) -> tuple[ParsedChunk, dict[str, Any]]:
    return gemini_cli.parse_document(data, lines=path.suffix == ".jsonl"), {}


@dataclass(frozen=True)
class Source:
    name: str
    log_files: Callable[[Mapping[str, str], Path | None], list[Path]]
    read: Reader
    # Rewritten rather than appended to: read whole every time it changed.
    whole_file: bool = False
    # A database (SQLite) or other file the reader opens itself: it is handed no bytes (`b""`).
    opens_file: bool = False


SOURCES: dict[str, Source] = {
    source.name: source
    for source in (
        Source(claude_code.NAME, claude_code.log_files, _read_claude_code),
        Source(codex.NAME, codex.log_files, _read_codex),
        Source(gemini_cli.NAME, gemini_cli.log_files, _read_gemini_cli, whole_file=True),
    )
}


@dataclass
class SourceFigures:
    files: int = 0
    records: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_tokens: int = 0  # 5-minute + 1-hour writes
    cache_read_tokens: int = 0
    reasoning_tokens: int = 0


@dataclass
class Collection:
    records: RecordSet = field(default_factory=RecordSet)
    figures: dict[str, SourceFigures] = field(default_factory=dict)
    malformed: dict[str, int] = field(default_factory=dict)
    unreadable: list[tuple[Path, str]] = field(default_factory=list)
    state: SyncState = field(default_factory=SyncState)  # to save after a successful upload

    def summary(self) -> dict[str, Any]:
        """`{"sources": {NAME: {"files", "records", "input_tokens", ...}}}`."""
        return {"sources": {name: asdict(figures) for name, figures in self.figures.items()}}


def _unchanged(known: FileState, stat: os.stat_result) -> bool:
    """A file read whole (rewritten, not appended to) is the one read last time, at the same size."""
    return bool(known.offset) and (known.size, known.inode) == (stat.st_size, stat.st_ino)


def _read_new_bytes(path: Path, start: int) -> bytes:
    with path.open("rb") as handle:
        handle.seek(start)
        return handle.read()


def _on_or_after(since: datetime) -> Callable[[UsageRecord], bool]:
    def keep(record: UsageRecord) -> bool:
        try:
            moment = datetime.fromisoformat(record.timestamp)
        except ValueError:
            return True  # the server judges (and rejects) a bad timestamp
        return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)) >= since

    return keep


def collect(
    sources: Iterable[str],
    state: SyncState,
    environ: Mapping[str, str] = os.environ,
    home: Path | None = None,
    *,
    since: datetime | None = None,
) -> Collection:
    """`since`: only records from then on (the files are still read, and marked read, whole)."""
    keep = _on_or_after(since) if since is not None else None
    collection = Collection(
        state=SyncState(files={k: dict(v) for k, v in state.files.items()}, last_sync=dict(state.last_sync))
    )
    for name in sources:
        source = SOURCES[name]
        figures = collection.figures.setdefault(name, SourceFigures())
        for path in source.log_files(environ, home):
            figures.files += 1
            try:
                stat = path.stat()
                known = state.file(name, path)
                start = 0 if source.whole_file else known.start_for(stat)
                if source.whole_file and _unchanged(known, stat):
                    continue
                data = b"" if source.opens_file else _read_new_bytes(path, start)
                # A reader that opens the file itself reports a file it cannot read as OSError.
                chunk, extra = source.read(data, path, known.extra, start == 0)
            except OSError as error:
                collection.unreadable.append((path, error.strerror or str(error) or type(error).__name__))
                continue
            collection.records.extend(chunk.records if keep is None else filter(keep, chunk.records))
            if chunk.malformed:
                collection.malformed[name] = collection.malformed.get(name, 0) + chunk.malformed
            collection.state.remember(
                name,
                path,
                FileState(
                    offset=start + chunk.consumed, size=stat.st_size, device=stat.st_dev, inode=stat.st_ino, extra=extra
                ),
            )
    for record in collection.records:
        figures = collection.figures[record.source]
        figures.records += 1
        figures.input_tokens += record.input_tokens
        figures.output_tokens += record.output_tokens
        figures.cache_creation_tokens += record.cache_creation_5m_tokens + record.cache_creation_1h_tokens
        figures.cache_read_tokens += record.cache_read_tokens
        figures.reasoning_tokens += record.reasoning_tokens
    return collection


@dataclass
class Pending:
    files: int = 0
    bytes: int = 0


def pending(
    sources: Iterable[str], state: SyncState, environ: Mapping[str, str] = os.environ, home: Path | None = None
) -> dict[str, Pending]:
    """Per source: the files with bytes not read yet, and how many bytes (nothing is parsed)."""
    found: dict[str, Pending] = {}
    for name in sources:
        source = SOURCES[name]
        waiting = found.setdefault(name, Pending())
        for path in source.log_files(environ, home):
            try:
                stat = path.stat()
            except OSError:
                continue
            known = state.file(name, path)
            if source.whole_file:
                unread = (
                    0 if (known.size, known.inode) == (stat.st_size, stat.st_ino) and known.offset else stat.st_size
                )
            else:
                unread = stat.st_size - known.start_for(stat)
            if unread > 0:
                waiting.files += 1
                waiting.bytes += unread
    return found
