"""OpenCode (sst/opencode, now anomalyco/opencode): assistant messages in its SQLite database, or
in the JSON files of versions before 1.2.

Where: the data directory is `$XDG_DATA_HOME/opencode`, else `~/.local/share/opencode` (OpenCode
uses the XDG layout on every platform). Since 1.2 everything is in `opencode.db` there
(`opencode-<channel>.db` for other release channels, `$OPENCODE_DB` when set: absolute, or relative
to the data directory); the first run of 1.2 copies the older files into it, ids unchanged. Before
1.2, one JSON file per message: `storage/message/<session id>/<message id>.json`. The files are read
only when no database exists: once one does, they are stale copies of what it holds.

What: table `message` (`id`, `session_id`, `data`: the message as JSON without its id and
session), or the file's document (with `id` and `sessionID`). An assistant message carries
`modelID`, `providerID`, `time.created` (epoch ms) and `tokens` (`input`, `output`, `reasoning`,
`cache.read`, `cache.write`, and since late 2025 `total`). One record per assistant message with
tokens, keyed by OpenCode's message id; a message still streaming has all counts 0 and is skipped
until it is complete.

Counts: `input` already excludes cache reads and writes (OpenCode subtracts them), so it is sent as
is, with `cache.write` as 5-minute cache writes. Reasoning: current versions store `output` without
the reasoning tokens (`total` = input + cache + output + reasoning), older ones the provider's
output count, which for OpenAI-style providers already holds them (`total` = input + cache +
output). Output is output + reasoning in the first case, output alone otherwise; a message without
`total` counts as the older kind unless its reasoning exceeds its output.

Forks: OpenCode's "fork session" copies every earlier message into the new session under new ids,
counts and times unchanged. In the database the copies of one response (same times, model and
counts) are sent once, under the smallest (oldest) id. Old JSON files are read one by one and
cannot be matched so.

Change: new rows land in the `-wal` file first and a checkpoint may rewrite pages without growing
the database, so whether it changed is told by `unchanged` (size and time of both files), not by
the database's size alone.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from codepulse.client.records import UsageRecord
from codepulse.client.sources import ParsedChunk

NAME = "opencode"
DATABASE_VARIABLE = "OPENCODE_DB"

# `record_of`'s answer for an entry that should be a record but lacks its tokens, model or time.
_MALFORMED = object()


def data_dir(environ: Mapping[str, str], home: Path) -> Path:
    configured = environ.get("XDG_DATA_HOME", "").strip()
    return (Path(configured) if configured else home / ".local" / "share") / "opencode"


def database_files(environ: Mapping[str, str], home: Path) -> list[Path]:
    data = data_dir(environ, home)
    found: list[Path] = []
    configured = environ.get(DATABASE_VARIABLE, "").strip()
    if configured and configured != ":memory:":
        found.append(Path(configured) if Path(configured).is_absolute() else data / configured)
    if data.is_dir():
        found.extend(sorted(data.glob("opencode.db")))
        found.extend(sorted(data.glob("opencode-*.db")))
    unique: dict[Path, Path] = {}
    for path in found:
        if path.is_file():
            unique.setdefault(path.resolve(), path)
    return list(unique.values())


def log_files(environ: Mapping[str, str] = os.environ, home: Path | None = None) -> list[Path]:
    """The databases; without any, the message files of versions before 1.2."""
    home = home or Path.home()
    databases = database_files(environ, home)
    if databases:
        return databases
    messages = data_dir(environ, home) / "storage" / "message"
    if not messages.is_dir():
        return []
    return [path for path in sorted(messages.glob("*/*.json")) if path.is_file()]


def _count(value: Any) -> int:
    # JavaScript numbers: an integral float is as good as an int.
    if type(value) is int:
        return max(value, 0)
    if type(value) is float and value.is_integer() and value > 0:
        return int(value)
    return 0


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _timestamp(milliseconds: Any) -> str | None:
    if type(milliseconds) not in (int, float) or not 0 < milliseconds < 1e14:
        return None
    return datetime.fromtimestamp(milliseconds / 1000, UTC).isoformat(timespec="milliseconds")


def record_of(message_id: str, session_id: str | None, info: Any) -> UsageRecord | object | None:
    """The record of one message (`info` without or with its id); None when there is nothing to
    send, `_MALFORMED` for an assistant message with tokens but no usable model or time."""
    if not isinstance(info, dict) or info.get("role") != "assistant":
        return None if isinstance(info, dict) else _MALFORMED
    tokens = info.get("tokens")
    if not isinstance(tokens, dict):
        return _MALFORMED
    cache = _mapping(tokens.get("cache"))
    inputs, output, reasoning = (
        _count(tokens.get("input")),
        _count(tokens.get("output")),
        _count(tokens.get("reasoning")),
    )
    read, write, total = _count(cache.get("read")), _count(cache.get("write")), _count(tokens.get("total"))
    if not (inputs or output or reasoning or read or write):
        return None  # still streaming, or failed before any usage
    model, timestamp = info.get("modelID"), _timestamp(_mapping(info.get("time")).get("created"))
    if not (isinstance(model, str) and model.strip() and timestamp and message_id):
        return _MALFORMED
    beside = reasoning > output or total == inputs + read + write + output + reasoning
    output_tokens = output + reasoning if beside and reasoning else output
    return UsageRecord(
        source=NAME,
        message_id=message_id,
        request_id=None,
        model=model.strip(),
        timestamp=timestamp,
        input_tokens=inputs,
        output_tokens=output_tokens,
        cache_creation_5m_tokens=write,
        cache_read_tokens=read,
        reasoning_tokens=min(reasoning, output_tokens),
        session_id=session_id,
    )


def _fingerprint(info: dict[str, Any], record: UsageRecord) -> tuple[Any, ...]:
    """What a forked copy shares with its original (everything but the ids)."""
    time = _mapping(info.get("time"))
    return (
        time.get("created"),
        time.get("completed"),
        info.get("providerID"),
        record.model,
        record.input_tokens,
        record.output_tokens,
        record.cache_creation_5m_tokens,
        record.cache_read_tokens,
        record.reasoning_tokens,
    )


def parse_rows(rows: Iterable[tuple[Any, Any, Any]]) -> ParsedChunk:
    """The records of `message` rows (id, session id, data), each forked copy folded into the
    oldest message it copies."""
    chunk = ParsedChunk()
    by_fingerprint: dict[tuple[Any, ...], UsageRecord] = {}
    for message_id, session_id, data in rows:
        try:
            info = json.loads(data)
        except (TypeError, ValueError):
            chunk.malformed += 1
            continue
        found = record_of(message_id if isinstance(message_id, str) else "", _text(session_id), info)
        if found is _MALFORMED:
            chunk.malformed += 1
        if not isinstance(found, UsageRecord):
            continue
        fingerprint = _fingerprint(info, found)
        known = by_fingerprint.get(fingerprint)
        # Ids ascend with creation time: the smallest is the original, not a later fork's copy.
        if known is None or found.message_id < known.message_id:
            by_fingerprint[fingerprint] = found
    chunk.records = list(by_fingerprint.values())
    return chunk


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def read_database(path: Path) -> ParsedChunk:
    """Every assistant message of a database, opened read-only.

    OpenCode keeps its database in WAL mode: while it runs, a `-wal` file beside it holds the
    latest writes, read through SQLite's shared locks. Without one nobody has the database open,
    and it is read as immutable: a read-only connection would otherwise leave an empty `-wal` and
    `-shm` behind."""
    import sqlite3  # here, not at the top: every `codepulse sync` imports this module

    quiet = not path.with_name(path.name + "-wal").exists()
    try:
        size = path.stat().st_size
        uri = f"{path.absolute().as_uri()}?mode=ro{'&immutable=1' if quiet else ''}"
        connection = sqlite3.connect(uri, uri=True)
        try:
            rows = connection.execute("SELECT id, session_id, data FROM message").fetchall()
        finally:
            connection.close()
    except sqlite3.Error as error:
        raise OSError(f"not a readable OpenCode database: {error}") from error
    chunk = parse_rows(rows)
    chunk.consumed = size  # read whole: the size marks it as read (collect's change check)
    return chunk


def parse_message_file(data: bytes, path: Path) -> ParsedChunk:
    """One message file of the versions before 1.2 (a JSON document rewritten as it streams)."""
    chunk = ParsedChunk(consumed=len(data))
    try:
        info = json.loads(data)
    except ValueError:
        chunk.malformed = 1
        return chunk
    message_id = info.get("id") if isinstance(info, dict) else None
    session_id = info.get("sessionID") if isinstance(info, dict) else None
    found = record_of(_text(message_id) or path.stem, _text(session_id) or path.parent.name, info)
    if found is _MALFORMED:
        chunk.malformed = 1
    elif isinstance(found, UsageRecord):
        chunk.records.append(found)
    return chunk


def stamp(path: Path) -> list[int]:
    """Size and modification time of a database and of its `-wal` file: in WAL mode new rows land
    in the `-wal` file first, and a checkpoint may rewrite pages without growing the database, so
    its size alone does not tell that it changed."""
    values: list[int] = []
    for candidate in (path, path.with_name(path.name + "-wal")):
        try:
            status = candidate.stat()
        except FileNotFoundError:
            values += [0, 0]
        else:
            values += [status.st_size, status.st_mtime_ns]
    return values


def unchanged(path: Path, extra: dict[str, Any]) -> bool:
    """Whether a database is as it was when last read (its reading state: `{"stamp": ...}`)."""
    try:
        return path.suffix == ".db" and extra.get("stamp") == stamp(path)
    except OSError:
        return False


def read(data: bytes, path: Path, _extra: dict[str, Any], _fresh: bool) -> tuple[ParsedChunk, dict[str, Any]]:
    """The source's reader (`opens_file=True`: handed no bytes, it opens `path` itself). A
    database's reading state is its `stamp`, taken before reading: a write during the read makes
    the next check see a change."""
    if path.suffix == ".db":
        taken = stamp(path)
        return read_database(path), {"stamp": taken}
    return parse_message_file(data or path.read_bytes(), path), {}
