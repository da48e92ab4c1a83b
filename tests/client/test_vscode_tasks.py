"""Cline, Roo Code and Kilo Code task folders (and Cline's SDK sessions): one record per request
with counts, ids from the task and the request's start, the model from the message or the task's
side files, the cache taken out of input by each tool's rule, and the folders of every editor."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from codepulse.client.collect import Reader
from codepulse.client.records import UsageRecord
from codepulse.client.sources import ParsedChunk, cline, kilo_code, roo_code, vscode_tasks

# The shape collect's `Source.read` takes.
READERS: tuple[Reader, ...] = (cline.read, roo_code.read, kilo_code.read)
T0 = 1_764_000_000_000  # 2025-11-24T16:00:00Z


def say(ts: int, kind: str, text: Any = None, **extra: Any) -> dict[str, Any]:
    message: dict[str, Any] = {"ts": ts, "type": "say", "say": kind, **extra}
    if text is not None:
        message["text"] = text if isinstance(text, str) else json.dumps(text)
    return message


def request(ts: int, tokens_in: int, tokens_out: int, writes: int, reads: int, **extra: Any) -> dict[str, Any]:
    info = {"tokensIn": tokens_in, "tokensOut": tokens_out, "cacheWrites": writes, "cacheReads": reads, "cost": 0.01}
    model_info = extra.pop("modelInfo", None)
    info.update(extra)
    return say(ts, "api_req_started", info, **({"modelInfo": model_info} if model_info else {}))


def cline_model(model: str, provider: str) -> dict[str, str]:
    return {"providerId": provider, "modelId": model, "mode": "act"}


def write_task(folder: Path, messages: list[Any], **side: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "ui_messages.json"
    path.write_text(json.dumps(messages))
    for name, document in side.items():
        (folder / f"{name}.json").write_text(json.dumps(document))
    return path


def read(module: Any, path: Path) -> ParsedChunk:
    chunk: ParsedChunk
    chunk, extra = module.read(path.read_bytes(), path, {}, True)
    assert extra == {}
    assert chunk.consumed == path.stat().st_size
    return chunk


def by_id(chunk: ParsedChunk) -> dict[str, UsageRecord]:
    return {record.message_id: record for record in chunk.records}


# --- Cline ---

CLINE_MESSAGES: list[Any] = [
    say(T0, "text", "Fix the failing test", images=[], files=[]),
    # Anthropic: tokensIn already excludes the cache
    request(T0 + 1_000, 3, 120, 9_000, 0, modelInfo=cline_model("claude-sonnet-4-5-20250929", "anthropic")),
    say(T0 + 2_000, "text", "Looking at the test."),
    request(T0 + 5_000, 5, 200, 300, 9_000, modelInfo=cline_model("claude-sonnet-4-5-20250929", "anthropic")),
    # the generic OpenAI-compatible handler: prompt total, DeepSeek's cache misses as "cache writes"
    request(T0 + 9_000, 12_000, 80, 2_000, 10_000, modelInfo=cline_model("deepseek-chat", "openai")),
    # xAI: prompt total including the cache reads
    request(T0 + 12_000, 8_000, 40, 0, 6_000, modelInfo=cline_model("grok-4", "xai")),
    # an older build: no modelInfo on the message (task_metadata.json says)
    request(T0 + 20_000, 900, 60, 0, 0),
    # a placeholder (request not sent yet), then a request that failed before any usage
    say(T0 + 30_000, "api_req_started", {"request": "<task>\nFix the failing test\n</task>\n\nLoading..."}),
    say(T0 + 31_000, "api_req_started", {"streamingFailedMessage": "429", "cancelReason": "streaming_failed"}),
    say(T0 + 32_000, "api_req_started", "{not json"),
    "not a message",
    say(
        T0 + 33_000,
        "subagent_usage",
        {"source": "subagents", "tokensIn": 40, "tokensOut": 7, "cacheWrites": 0, "cacheReads": 100, "cost": 0.001},
    ),
    say(T0 + 34_000, "deleted_api_reqs", {"tokensIn": 999, "tokensOut": 999, "cacheWrites": 0, "cacheReads": 0}),
    {"ts": T0 + 35_000, "type": "ask", "ask": "completion_result", "text": "Done"},
]
CLINE_METADATA = {
    "files_in_context": [],
    "model_usage": [
        {"ts": T0 - 1, "model_id": "claude-sonnet-4-5-20250929", "model_provider_id": "anthropic", "mode": "act"},
        {"ts": T0 + 15_000, "model_id": "anthropic/claude-haiku-4.5", "model_provider_id": "openrouter", "mode": "act"},
    ],
    "environment_history": [],
}


def cline_task(root: Path, task_id: str = "1764000000000") -> Path:
    return write_task(root / "tasks" / task_id, CLINE_MESSAGES, task_metadata=CLINE_METADATA)


def test_a_cline_task_gives_one_record_per_request(tmp_path: Path) -> None:
    path = cline_task(tmp_path)
    chunk = read(cline, path)
    assert chunk.malformed == 2  # the broken request text and the non-message
    found = by_id(chunk)
    task = "1764000000000"
    assert sorted(found) == [f"{task}:{T0 + offset}" for offset in (1_000, 5_000, 9_000, 12_000, 20_000, 33_000)]
    first = found[f"{task}:{T0 + 1_000}"]
    assert first == UsageRecord(
        source="cline",
        message_id=f"{task}:{T0 + 1_000}",
        request_id=None,
        model="claude-sonnet-4-5-20250929",
        timestamp="2025-11-24T16:00:01.000+00:00",
        input_tokens=3,
        output_tokens=120,
        cache_creation_5m_tokens=9_000,
        cache_read_tokens=0,
        session_id=task,
    )
    second = found[f"{task}:{T0 + 5_000}"]
    assert (second.input_tokens, second.cache_creation_5m_tokens, second.cache_read_tokens) == (5, 300, 9_000)
    deepseek = found[f"{task}:{T0 + 9_000}"]
    assert (deepseek.model, deepseek.input_tokens, deepseek.cache_creation_5m_tokens) == ("deepseek-chat", 2_000, 0)
    assert deepseek.cache_read_tokens == 10_000
    grok = found[f"{task}:{T0 + 12_000}"]
    assert (grok.input_tokens, grok.cache_read_tokens, grok.output_tokens) == (2_000, 6_000, 40)
    # the model in task_metadata.json at the time of the request
    older = found[f"{task}:{T0 + 20_000}"]
    assert (older.model, older.input_tokens) == ("anthropic/claude-haiku-4.5", 900)
    subagents = found[f"{task}:{T0 + 33_000}"]
    assert (subagents.model, subagents.input_tokens, subagents.cache_read_tokens) == (
        "anthropic/claude-haiku-4.5",
        40,
        100,
    )


def test_reading_a_task_again_gives_the_same_records(tmp_path: Path) -> None:
    path = cline_task(tmp_path)
    assert read(cline, path).records == read(cline, path).records


def test_requests_in_one_millisecond_are_told_apart(tmp_path: Path) -> None:
    model = cline_model("claude-opus-4-1", "anthropic")
    path = write_task(
        tmp_path / "tasks" / "t1",
        [request(T0, 1, 1, 0, 0, modelInfo=model), request(T0, 2, 2, 0, 0, modelInfo=model)],
    )
    assert [record.message_id for record in read(cline, path).records] == [f"t1:{T0}", f"t1:{T0}:2"]


def test_a_task_with_no_known_model_or_a_broken_file(tmp_path: Path) -> None:
    nameless = write_task(tmp_path / "tasks" / "t1", [request(T0, 10, 10, 0, 0)])
    assert read(cline, nameless).records == []
    broken = tmp_path / "tasks" / "t2" / "ui_messages.json"
    broken.parent.mkdir(parents=True)
    broken.write_text('[{"ts": 1, "type": "say"')  # caught half-written
    chunk = read(cline, broken)
    assert (chunk.records, chunk.malformed) == ([], 1)
    not_a_list = tmp_path / "tasks" / "t3" / "ui_messages.json"
    not_a_list.parent.mkdir(parents=True)
    not_a_list.write_text("{}")
    assert read(cline, not_a_list).malformed == 1


def test_bad_counts_are_malformed(tmp_path: Path) -> None:
    model = cline_model("claude-sonnet-4-5", "anthropic")
    path = write_task(
        tmp_path / "tasks" / "t1",
        [
            request(T0, "12", 1, 0, 0, modelInfo=model),  # type: ignore[arg-type]
            request(T0 + 1, 12.5, 1, 0, 0, modelInfo=model),  # type: ignore[arg-type]
            say(T0 + 2, "api_req_started", [1, 2], modelInfo=model),
            say("soon", "api_req_started", {"tokensIn": 1}, modelInfo=model),  # type: ignore[arg-type]
            request(T0 + 3, 12.0, 1, 0, 0, modelInfo=model),  # type: ignore[arg-type]
        ],
    )
    chunk = read(cline, path)
    assert chunk.malformed == 4
    assert [(record.input_tokens, record.output_tokens) for record in chunk.records] == [(12, 1)]


# --- Roo Code and Kilo Code ---


def environment(model: str) -> str:
    return (
        "<environment_details>\n# VSCode Visible Files\nsrc/app.py\n\n# Current Time\n2025-11-24 16:00\n\n"
        f"# Current Mode\n<slug>code</slug>\n<name>💻 Code</name>\n<model>{model}</model>\n</environment_details>"
    )


def user(ts: int, model: str, text: str = "[read_file for 'src/app.py'] Result: ...") -> dict[str, Any]:
    return {
        "role": "user",
        "content": [{"type": "text", "text": text}, {"type": "text", "text": environment(model)}],
        "ts": ts,
    }


ROO_MESSAGES: list[Any] = [
    say(T0, "text", "Add a health check endpoint"),
    # current builds: tokensIn is the whole prompt (input + cache writes + cache reads)
    request(T0 + 1_000, 15_000, 300, 2_000, 12_000, apiProtocol="anthropic"),
    request(T0 + 6_000, 20_000, 150, 0, 19_000, apiProtocol="openai"),
    # before Oct 2025, Anthropic-style requests logged input without the cache
    request(T0 + 9_000, 4, 90, 500, 30_000, apiProtocol="anthropic"),
    say(
        T0 + 9_500,
        "condense_context",
        contextCondense={"cost": 0.02, "prevContextTokens": 90_000, "newContextTokens": 8_000, "summary": "..."},
    ),
    request(T0 + 12_000, 0, 0, 0, 0, apiProtocol="anthropic", cancelReason="user_cancelled"),
]
ROO_HISTORY: list[Any] = [
    user(T0 + 400, "claude-sonnet-4-5", "<task>\nAdd a health check endpoint\n</task>"),
    {"role": "assistant", "content": [{"type": "text", "text": "Reading app.py"}], "ts": T0 + 5_000},
    # the model is switched before the second request (its environment names it)
    user(T0 + 6_300, "gpt-5"),
    {"role": "assistant", "content": [{"type": "text", "text": "Adding the route"}], "ts": T0 + 8_000},
    # a tool result that quotes a <model> tag, then the environment's own
    user(T0 + 9_200, "gpt-5", "Result: <model>not-a-model</model>"),
]


def test_roo_code_takes_the_cache_out_of_the_total(tmp_path: Path) -> None:
    path = write_task(tmp_path / "tasks" / "0a9c1e2f-task", ROO_MESSAGES, api_conversation_history=ROO_HISTORY)
    chunk = read(roo_code, path)
    assert chunk.malformed == 0
    records = chunk.records
    assert [
        (record.model, record.input_tokens, record.cache_creation_5m_tokens, record.cache_read_tokens)
        for record in records
    ] == [
        ("claude-sonnet-4-5", 1_000, 2_000, 12_000),
        ("gpt-5", 1_000, 0, 19_000),
        ("gpt-5", 4, 500, 30_000),
    ]
    assert {record.source for record in records} == {"roo-code"}
    assert [record.message_id for record in records] == [
        f"0a9c1e2f-task:{T0 + offset}" for offset in (1_000, 6_000, 9_000)
    ]
    assert records[0].session_id == "0a9c1e2f-task"


def test_older_roo_requests_name_their_model_in_the_request_text(tmp_path: Path) -> None:
    sent = "<task>\nhello\n</task>\n\n" + environment("deepseek/deepseek-chat")
    path = write_task(tmp_path / "tasks" / "t1", [request(T0, 500, 20, 0, 100, request=sent)])
    (record,) = read(roo_code, path).records
    assert (record.model, record.input_tokens, record.cache_read_tokens) == ("deepseek/deepseek-chat", 400, 100)


def test_a_request_before_any_history_takes_the_tasks_first_model(tmp_path: Path) -> None:
    path = write_task(
        tmp_path / "tasks" / "t1",
        [request(T0 + 10_000, 100, 5, 0, 0), request(T0 + 20_000, 100, 5, 0, 0)],
        api_conversation_history=[user(T0 + 15_000, "kilo/auto"), "junk", {"role": "user", "content": "no ts"}],
    )
    assert [record.model for record in read(kilo_code, path).records] == ["kilo/auto", "kilo/auto"]


def test_kilo_code_records_are_its_own(tmp_path: Path) -> None:
    path = write_task(
        tmp_path / "tasks" / "t1",
        [
            request(
                T0 + 1_000, 7_000, 10, 0, 6_000, apiProtocol="openai", usageMissing=False, inferenceProvider="Anthropic"
            )
        ],
        api_conversation_history=[user(T0 + 1_200, "anthropic/claude-sonnet-4.5")],
    )
    (record,) = read(kilo_code, path).records
    assert (record.source, record.model, record.input_tokens, record.cache_read_tokens) == (
        "kilo-code",
        "anthropic/claude-sonnet-4.5",
        1_000,
        6_000,
    )


# --- Cline SDK sessions ---


def sdk_assistant(message_id: str, ts: int, **metrics: int) -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": [{"type": "text", "text": "Done."}],
        "id": message_id,
        "ts": ts,
        "modelInfo": {"id": "claude-sonnet-4-5", "provider": "anthropic"},
        "metrics": {**metrics, "cost": 0.01},
    }


def test_cline_sdk_sessions(tmp_path: Path) -> None:
    folder = tmp_path / "sessions" / "sess_1"
    folder.mkdir(parents=True)
    legacy_total = sdk_assistant("m0", T0, inputTokens=99_999, outputTokens=999)
    legacy_total["modelInfo"] = {"id": "claude-sonnet-4-5", "provider": "unknown"}
    nameless = sdk_assistant("m3", T0 + 3_000, inputTokens=50, outputTokens=5)
    del nameless["modelInfo"]
    document = {
        "version": 1,
        "updated_at": "2026-08-20T10:00:00.000Z",
        "agent": "lead",
        "sessionId": "sess_1",
        "origin": "vscode",
        "messages": [
            {"role": "user", "content": "<task>old task</task>"},
            legacy_total,
            {"role": "user", "content": vscode_tasks.LEGACY_RESUME_WARNING + ". Please use the most up-to-date tools."},
            {"role": "user", "content": [{"type": "text", "text": "carry on"}], "id": "u1", "ts": T0 + 500},
            sdk_assistant(
                "m1", T0 + 1_000, inputTokens=12_000, outputTokens=80, cacheReadTokens=9_000, cacheWriteTokens=2_000
            ),
            sdk_assistant("m2", T0 + 2_000, inputTokens=0, outputTokens=0),
            nameless,
            {"role": "assistant", "ts": "later", "metrics": {"inputTokens": 1}},
        ],
    }
    path = folder / "sess_1.messages.json"
    path.write_text(json.dumps(document))
    (folder / "sess_1.json").write_text(json.dumps({"version": 1, "session_id": "sess_1", "model": "gpt-5"}))
    chunk = read(cline, path)
    assert chunk.malformed == 1
    assert [
        (r.message_id, r.model, r.input_tokens, r.output_tokens, r.cache_creation_5m_tokens, r.cache_read_tokens)
        for r in chunk.records
    ] == [("m1", "claude-sonnet-4-5", 1_000, 80, 2_000, 9_000), ("m3", "gpt-5", 50, 5, 0, 0)]
    assert {(r.source, r.session_id, r.timestamp) for r in chunk.records} == {
        ("cline", "sess_1", "2025-11-24T16:00:01.000+00:00"),
        ("cline", "sess_1", "2025-11-24T16:00:03.000+00:00"),
    }


# --- where the files are ---


def test_task_folders_are_found_in_every_editor(tmp_path: Path) -> None:
    home = tmp_path / "home"
    appdata = tmp_path / "AppData" / "Roaming"
    linux = home / ".config" / "Code" / "User" / "globalStorage" / "saoudrizwan.claude-dev"
    mac = home / "Library" / "Application Support" / "Cursor" / "User" / "globalStorage" / "saoudrizwan.claude-dev"
    windows = appdata / "Windsurf" / "User" / "globalStorage" / "saoudrizwan.claude-dev"
    server = home / ".vscode-server" / "data" / "User" / "globalStorage" / "saoudrizwan.claude-dev"
    found = [cline_task(root, task_id) for root, task_id in ((linux, "1"), (mac, "2"), (windows, "3"), (server, "4"))]
    (linux / "tasks" / "5").mkdir()  # a task folder without its messages yet
    roo = write_task(
        home / ".config" / "VSCodium" / "User" / "globalStorage" / "rooveterinaryinc.roo-cline" / "tasks" / "r1", []
    )
    sdk = home / ".cline" / "data" / "sessions" / "s1" / "s1.messages.json"
    sdk.parent.mkdir(parents=True)
    sdk.write_text("[]")
    standalone = cline_task(home / ".cline" / "data", "6")
    environ = {"APPDATA": str(appdata)}
    assert sorted(cline.log_files(environ, home)) == sorted([*found, standalone, sdk])
    assert roo_code.log_files(environ, home) == [roo]
    assert kilo_code.log_files(environ, home) == []
    assert cline.log_files({}, tmp_path / "nobody") == []


def test_environment_variables_move_the_folders(tmp_path: Path) -> None:
    home = tmp_path / "home"
    xdg, portable, appdata = tmp_path / "xdg", tmp_path / "portable", tmp_path / "vscode-appdata"
    ignored = cline_task(home / ".config" / "Code" / "User" / "globalStorage" / "saoudrizwan.claude-dev", "0")
    from_xdg = cline_task(xdg / "Code - Insiders" / "User" / "globalStorage" / "saoudrizwan.claude-dev", "1")
    from_portable = cline_task(portable / "user-data" / "User" / "globalStorage" / "saoudrizwan.claude-dev", "2")
    from_appdata = cline_task(appdata / "Code" / "User" / "globalStorage" / "saoudrizwan.claude-dev", "3")
    cline_dir = tmp_path / "cline-home"
    from_cline_dir = cline_task(cline_dir / "data", "4")
    sessions = tmp_path / "sessions"
    session = sessions / "s1" / "agent_2.messages.json"
    session.parent.mkdir(parents=True)
    session.write_text("[]")
    environ = {
        "XDG_CONFIG_HOME": str(xdg),
        "VSCODE_PORTABLE": str(portable),
        "VSCODE_APPDATA": str(appdata),
        "CLINE_DIR": str(cline_dir),
        "CLINE_SESSION_DATA_DIR": str(sessions),
    }
    found = cline.log_files(environ, home)
    assert ignored not in found
    assert sorted(found) == sorted([from_xdg, from_portable, from_appdata, from_cline_dir, session])
    data_dir = tmp_path / "cline-data"
    assert cline.log_files({"CLINE_DATA_DIR": str(data_dir)}, home) == [ignored]
    assert cline.data_dir({"CLINE_DATA_DIR": str(data_dir)}, home) == data_dir


def test_a_custom_storage_path_in_the_editor_settings(tmp_path: Path) -> None:
    home = tmp_path / "home"
    user_dir = home / ".config" / "Cursor" / "User"
    user_dir.mkdir(parents=True)
    custom = tmp_path / "Roo Tasks"
    (user_dir / "settings.json").write_text(
        "{\n  // where Roo keeps its tasks\n"
        f'  "roo-cline.customStoragePath": {json.dumps(str(custom))},\n'
        '  "kilo-code.customStoragePath": "",\n  "editor.fontSize": 13,\n}\n'
    )
    task = write_task(custom / "tasks" / "r1", [])
    default = write_task(user_dir / "globalStorage" / "rooveterinaryinc.roo-cline" / "tasks" / "r0", [])
    assert roo_code.log_files({}, home) == [default, task]
    assert kilo_code.log_files({}, home) == []
