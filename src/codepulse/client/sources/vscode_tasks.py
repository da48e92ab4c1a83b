"""Cline, Roo Code and Kilo Code: the VS Code extensions that keep one folder per task,
`<editor user dir>/globalStorage/<extension id>/tasks/<task id>/`. The thin modules `cline`,
`roo_code` and `kilo_code` plug this parser into collect; `vscode_paths` finds the editors' folders.

A task folder holds `ui_messages.json` (what the chat shows, one JSON array rewritten as the task
goes on: read whole), `api_conversation_history.json` (what was sent to the model) and, in Cline,
`task_metadata.json`. Each model request is a `say` message `api_req_started` whose `text` is JSON:
`tokensIn`, `tokensOut`, `cacheWrites`, `cacheReads`, `cost` (plus `apiProtocol` in Roo and Kilo).
Its `ts` (epoch ms) is set when the request starts and never changes, so a request is
`<task id>:<ts>`: reading the file again gives the same ids. A request without counts (still
waiting, or failed before any usage) is skipped. Cline's `subagent_usage` (its sub-agents' requests,
summed and kept nowhere else) is one record too; `deleted_api_reqs` (the sum of requests a checkpoint
restore removed, which an earlier sync may already have sent one by one) is not.

Model, best first: the message's own `modelInfo.modelId` (Cline); the `<model>` of the request text
(older Roo); the last `task_metadata.json` `model_usage` entry at or before the request (Cline);
in `api_conversation_history.json`, the first message of the request (Cline's assistant
`modelInfo`, Roo's and Kilo's `<model>` in the user message's `<environment_details>`) else the
last one before it; else the task's first known model. A request with none is skipped.

Input tokens (the record's input excludes cache reads and writes):
- Cline writes each provider's own figure (`apps/vscode/src/core/api/providers/*.ts`): Anthropic,
  Bedrock, Vertex, Gemini, OpenRouter, the Cline provider and most others already exclude the cache;
  the OpenAI-style handlers in `INCLUSIVE_CLINE_PROVIDERS` pass the prompt total, so their cache reads
  and writes are taken out. The generic `openai` handler logs DeepSeek's cache-miss tokens as cache
  writes: they are plain input there (input = tokensIn - cacheReads, no cache write). The provider
  is the message's `modelInfo.providerId`, else `task_metadata.json`'s; unknown means "excludes".
- Roo Code and Kilo Code have written the total (input + cache writes + cache reads) for both
  protocols since Roo's "Fix cost and token tracking between provider styles" (Oct 2025); before
  it, Anthropic-protocol requests logged input without the cache. The cache is taken out when
  tokensIn is at least reads + writes (always true of the total; an older Anthropic-style count
  below its cache is kept as it is).
No reasoning count is logged: thinking is in tokensOut where the provider counts it there.

Cline's SDK-based runtime (the `cline` CLI, JetBrains, and the VS Code "SDK bundle" being rolled
out from 4.1) keeps sessions in `~/.cline/data/sessions/<id>/<id>.messages.json` instead: see
`parse_session`.
"""

from __future__ import annotations

import json
import re
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

from codepulse.client.records import UsageRecord
from codepulse.client.sources import ParsedChunk
from codepulse.client.sources.vscode_paths import custom_storage, task_files, user_dirs

API_HISTORY = "api_conversation_history.json"
TASK_METADATA = "task_metadata.json"
SESSION_SUFFIX = ".messages.json"  # Cline SDK sessions

# Cline handlers whose tokensIn is the prompt total, cache reads and writes included (see above).
INCLUSIVE_CLINE_PROVIDERS = frozenset(
    {
        "openai",
        "openai-codex",
        "litellm",
        "requesty",
        "fireworks",
        "doubao",
        "hicap",
        "lmstudio",
        "oca",
        "qwen",
        "xai",
        "zai",
    }
)
USAGE_SAYS = frozenset({"api_req_started", "subagent_usage"})
# The user message Cline's SDK appends after a legacy task's history it took over (its last
# assistant message then carries the whole legacy task's totals, already counted from the task).
LEGACY_RESUME_WARNING = "Warning: this is a legacy conversation"

_MODEL_TAG = re.compile(r"<model>([^<>\n]{1,200})</model>")

# (tokensIn, cacheReads, cacheWrites, provider) -> (input, cache writes)
InputRule = Callable[[int, int, int, str | None], tuple[int, int]]


def cline_input(tokens_in: int, reads: int, writes: int, provider: str | None) -> tuple[int, int]:
    if provider == "openai":
        return max(0, tokens_in - reads), 0
    if provider in INCLUSIVE_CLINE_PROVIDERS:
        return max(0, tokens_in - reads - writes), writes
    return tokens_in, writes


def roo_input(tokens_in: int, reads: int, writes: int, _provider: str | None) -> tuple[int, int]:
    if tokens_in >= reads + writes:
        return tokens_in - reads - writes, writes
    return tokens_in, writes


@dataclass(frozen=True)
class Tool:
    name: str
    extension_ids: tuple[str, ...]  # globalStorage folders (VS Code lower-cases extension ids)
    settings_prefixes: tuple[str, ...]  # `<prefix>.customStoragePath` moves the tasks elsewhere
    input_rule: InputRule


# --- where the files are ---


def storage_dirs(tool: Tool, environ: Mapping[str, str], home: Path) -> list[Path]:
    found: list[Path] = []
    for user_dir in user_dirs(environ, home):
        if not user_dir.is_dir():
            continue
        found.extend(user_dir / "globalStorage" / extension for extension in tool.extension_ids)
        found.extend(custom_storage(user_dir, tool.settings_prefixes))
    return list(dict.fromkeys(found))


def log_files(tool: Tool, environ: Mapping[str, str], home: Path | None) -> list[Path]:
    return task_files(storage_dirs(tool, environ, home or Path.home()))


# --- reading a task ---


def _count(value: Any) -> int | None:
    """A token count (JavaScript numbers may come as 12.0), 0 when absent, None when not a number."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not value.is_integer():
        return None
    return max(0, int(value))


def utc_timestamp(epoch_ms: int) -> str:
    """ISO 8601 in UTC of an epoch in milliseconds (integer arithmetic: no float rounding)."""
    moment = datetime.fromtimestamp(epoch_ms // 1000, UTC).replace(microsecond=(epoch_ms % 1000) * 1000)
    return moment.isoformat(timespec="milliseconds")


def _read_json(path: Path) -> Any:
    """A task's side file, or None when it is missing or unreadable (the model lookup falls back)."""
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None


def _text_of(content: Any) -> Iterable[str]:
    if isinstance(content, str):
        yield content
    elif isinstance(content, list):
        for block in content:
            if isinstance(block, dict) and isinstance(block.get("text"), str):
                yield block["text"]


def _model_in(text: str) -> str | None:
    """The `<model>` of Roo's and Kilo's environment details (the last one: tool output quoted
    earlier in the text could hold the tag too)."""
    if "<model>" not in text:
        return None
    found = _MODEL_TAG.findall(text)
    return (found[-1].strip() or None) if found else None


def _environment_model(content: Any) -> str | None:
    """The model a user message's `<environment_details>` block names (the last block with one:
    the text before it may quote tool output)."""
    found = None
    for text in _text_of(content):
        if "<environment_details>" in text:
            found = _model_in(text) or found
    return found


def _model_info(value: Any) -> tuple[str, str | None] | None:
    if not isinstance(value, dict):
        return None
    model, provider = value.get("modelId"), value.get("providerId")
    if not isinstance(model, str) or not model.strip():
        return None
    return model.strip(), provider if isinstance(provider, str) and provider else None


Seen = tuple[int, str, str | None]  # (epoch ms, model, provider)


def _moment(seen: Seen) -> int:
    return seen[0]


@dataclass
class ModelLookup:
    """A task's models over time, its side files read only when a request names none itself."""

    folder: Path

    @cached_property
    def metadata(self) -> list[Seen]:
        document = _read_json(self.folder / TASK_METADATA)
        usage = document.get("model_usage") if isinstance(document, dict) else None
        seen: list[Seen] = []
        for entry in usage if isinstance(usage, list) else []:
            if not isinstance(entry, dict) or type(entry.get("ts")) is not int:
                continue
            model, provider = entry.get("model_id"), entry.get("model_provider_id")
            if isinstance(model, str) and model.strip():
                seen.append((entry["ts"], model.strip(), provider if isinstance(provider, str) and provider else None))
        return sorted(seen, key=_moment)

    @cached_property
    def history(self) -> list[Seen]:
        document = _read_json(self.folder / API_HISTORY)
        seen: list[Seen] = []
        for message in document if isinstance(document, list) else []:
            if not isinstance(message, dict) or type(message.get("ts")) is not int:
                continue
            found = _model_info(message.get("modelInfo")) if message.get("role") == "assistant" else None
            if found is None and message.get("role") == "user":
                model = _environment_model(message.get("content"))
                found = (model, None) if model else None
            if found is not None:
                seen.append((message["ts"], *found))
        return sorted(seen, key=_moment)

    def at(self, start: int, end: int | None) -> tuple[str, str | None] | None:
        """The model of a request that started at `start` (the next one at `end`)."""
        index = bisect_right(self.metadata, start, key=_moment)
        if index:
            return self.metadata[index - 1][1:]
        history = self.history
        index = bisect_left(history, start, key=_moment)
        if index < len(history) and (end is None or history[index][0] < end):
            return history[index][1:]
        if index:
            return history[index - 1][1:]
        first = self.metadata or history
        return first[0][1:] if first else None

    def provider_at(self, start: int) -> str | None:
        """The provider task_metadata.json names at `start` (for a model found elsewhere)."""
        index = bisect_right(self.metadata, start, key=_moment)
        return self.metadata[index - 1][2] if index else None


@dataclass
class _Request:
    ts: int
    info: dict[str, Any]
    message: dict[str, Any]
    message_id: str


def _requests(messages: list[Any], task_id: str, chunk: ParsedChunk) -> list[_Request]:
    requests: list[_Request] = []
    seen: dict[str, int] = {}
    for message in messages:
        if not isinstance(message, dict):
            chunk.malformed += 1
            continue
        if message.get("type") != "say" or message.get("say") not in USAGE_SAYS:
            continue
        ts, text = message.get("ts"), message.get("text")
        if not isinstance(text, str) or not text.strip():
            continue  # a request's placeholder, before anything is known of it
        try:
            info = json.loads(text)
        except ValueError:
            chunk.malformed += 1
            continue
        if type(ts) is not int or ts <= 0 or not isinstance(info, dict):
            chunk.malformed += 1
            continue
        message_id = f"{task_id}:{ts}"
        # Two requests in one millisecond are told apart by their order (stable on a re-read).
        seen[message_id] = seen.get(message_id, 0) + 1
        if seen[message_id] > 1:
            message_id = f"{message_id}:{seen[message_id]}"
        requests.append(_Request(ts, info, message, message_id))
    return requests


def _own_model(request: _Request) -> tuple[str, str | None] | None:
    found = _model_info(request.message.get("modelInfo"))
    if found is not None:
        return found
    sent = request.info.get("request")
    model = _model_in(sent) if isinstance(sent, str) else None
    return (model, None) if model else None


def parse_task(data: bytes, path: Path, tool: Tool) -> ParsedChunk:
    """The records of one task's `ui_messages.json` (`path`: its side files are read beside it)."""
    chunk = ParsedChunk(consumed=len(data))
    try:
        messages = json.loads(data)
    except ValueError:  # also a file caught half-written: read again once it changes
        chunk.malformed += 1
        return chunk
    if not isinstance(messages, list):
        chunk.malformed += 1
        return chunk
    task_id = path.parent.name
    requests = _requests(messages, task_id, chunk)
    lookup = ModelLookup(path.parent)
    for index, request in enumerate(requests):
        counts = [_count(request.info.get(key)) for key in ("tokensIn", "tokensOut", "cacheReads", "cacheWrites")]
        if None in counts:
            chunk.malformed += 1
            continue
        tokens_in, tokens_out, reads, writes = (count or 0 for count in counts)
        if not (tokens_in or tokens_out or reads or writes):
            continue
        end = requests[index + 1].ts if index + 1 < len(requests) else None
        found = _own_model(request) or lookup.at(request.ts, end)
        if found is None:
            continue
        model, provider = found
        if provider is None:
            provider = lookup.provider_at(request.ts)
        input_tokens, cache_writes = tool.input_rule(tokens_in, reads, writes, provider)
        try:
            timestamp = utc_timestamp(request.ts)
        except (OverflowError, ValueError, OSError):
            chunk.malformed += 1
            continue
        chunk.records.append(
            UsageRecord(
                source=tool.name,
                message_id=request.message_id,
                request_id=None,
                model=model,
                timestamp=timestamp,
                input_tokens=input_tokens,
                output_tokens=tokens_out,
                cache_creation_5m_tokens=cache_writes,
                cache_read_tokens=reads,
                session_id=task_id,
            )
        )
    return chunk


# --- Cline SDK sessions ---


def _legacy_cutoff(messages: list[Any]) -> int:
    """Index after the last legacy-resume warning (0 without one): messages before it were taken
    over from a legacy task folder, whose requests that folder's `ui_messages.json` counts."""
    cutoff = 0
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") != "user":
            continue
        if any(LEGACY_RESUME_WARNING in text for text in _text_of(message.get("content"))):
            cutoff = index + 1
    return cutoff


def _manifest_model(path: Path, session_id: str) -> str | None:
    manifest = _read_json(path.parent / f"{session_id}.json")
    model = manifest.get("model") if isinstance(manifest, dict) else None
    return model.strip() if isinstance(model, str) and model.strip() else None


def parse_session(data: bytes, path: Path, source: str) -> ParsedChunk:
    """The records of a Cline SDK session's `<id>.messages.json` (a document rewritten whole:
    `{"version": 1, "sessionId", "messages": [...]}`, or a bare array in early builds).

    Each assistant message of an LLM call has an `id`, a `ts`, `modelInfo` {`id`, `provider`} and
    `metrics` {`inputTokens`, `outputTokens`, `cacheReadTokens`, `cacheWriteTokens`, `cost`}. The
    SDK normalises `inputTokens` to the whole prompt, cache included (sdk/packages/core/src/services/
    usage.ts): the cache is taken out. The session manifest's `model` is the fallback model."""
    chunk = ParsedChunk(consumed=len(data))
    try:
        document = json.loads(data)
    except ValueError:
        chunk.malformed += 1
        return chunk
    messages = document.get("messages") if isinstance(document, dict) else document
    if not isinstance(messages, list):
        chunk.malformed += 1
        return chunk
    named = document.get("sessionId") if isinstance(document, dict) else None
    session_id = named if isinstance(named, str) and named else path.parent.name
    fallback: list[str | None] = []  # the manifest, read once and only when needed
    for message in messages[_legacy_cutoff(messages) :]:
        if not isinstance(message, dict):
            chunk.malformed += 1
            continue
        metrics = message.get("metrics")
        if message.get("role") != "assistant" or metrics is None:
            continue
        ts = message.get("ts")
        counts = (
            [_count(metrics.get(key)) for key in ("inputTokens", "outputTokens", "cacheReadTokens", "cacheWriteTokens")]
            if isinstance(metrics, dict)
            else [None]
        )
        if type(ts) is not int or ts <= 0 or None in counts:
            chunk.malformed += 1
            continue
        total_in, tokens_out, reads, writes = (count or 0 for count in counts)
        if not (total_in or tokens_out or reads or writes):
            continue
        info = message.get("modelInfo")
        model = info.get("id") if isinstance(info, dict) else None
        if not isinstance(model, str) or not model.strip():
            if not fallback:
                fallback.append(_manifest_model(path, session_id))
            model = fallback[0]
        if not model:
            continue
        own_id = message.get("id")
        try:
            timestamp = utc_timestamp(ts)
        except (OverflowError, ValueError, OSError):
            chunk.malformed += 1
            continue
        chunk.records.append(
            UsageRecord(
                source=source,
                message_id=own_id if isinstance(own_id, str) and own_id else f"{session_id}:{ts}",
                request_id=None,
                model=model.strip(),
                timestamp=timestamp,
                input_tokens=max(0, total_in - reads - writes),
                output_tokens=tokens_out,
                cache_creation_5m_tokens=writes,
                cache_read_tokens=reads,
                session_id=session_id,
            )
        )
    return chunk


def reader(tool: Tool) -> Callable[[bytes, Path, dict[str, Any], bool], tuple[ParsedChunk, dict[str, Any]]]:
    """collect's `read` for a tool: a whole file each time, no state kept between reads."""

    def read(data: bytes, path: Path, _extra: dict[str, Any], _fresh: bool) -> tuple[ParsedChunk, dict[str, Any]]:
        if path.name.endswith(SESSION_SUFFIX):
            return parse_session(data, path, tool.name), {}
        return parse_task(data, path, tool), {}

    return read
