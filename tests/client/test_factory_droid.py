"""Factory Droid: one record per session from the running totals of its `.settings.json`, keyed by
the session id so that a re-read (the file rewritten with larger totals) raises the same record."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from codepulse.client.collect import SOURCES, Source, collect
from codepulse.client.records import RecordSet
from codepulse.client.sources import factory_droid
from codepulse.client.state import SyncState

SESSION = "7f3c2a10-5b6d-4e8f-9a01-2b3c4d5e6f70"


def settings(**usage: int) -> dict[str, Any]:
    """A session's settings file as Droid writes it (the usage fields of droid-sdk's TokenUsage)."""
    return {
        "model": "claude-sonnet-4-5-20250929",
        "reasoningEffort": "medium",
        "autonomyMode": "auto-low",
        "providerLock": "anthropic",
        "providerLockTimestamp": "2026-11-23T09:41:07.512Z",
        "tokenUsage": {
            "inputTokens": 0,
            "outputTokens": 0,
            "cacheCreationTokens": 0,
            "cacheReadTokens": 0,
            "thinkingTokens": 0,
            **usage,
        },
    }


def encode(document: Any) -> bytes:
    return json.dumps(document, indent=2).encode()


def test_settings_files_are_found_per_project_and_at_the_top(tmp_path: Path) -> None:
    sessions = tmp_path / ".factory" / "sessions"
    project = sessions / "-Users-ada-work-app"
    project.mkdir(parents=True)
    old = sessions / f"{SESSION}.settings.json"
    new = project / "0c1d2e3f-4a5b-4c6d-8e7f-901a2b3c4d5e.settings.json"
    for path in (old, new, project / f"{SESSION}.jsonl", sessions / ".favorites"):
        path.write_text("{}")
    assert factory_droid.log_files({}, tmp_path) == [new, old]
    assert factory_droid.log_files({}, tmp_path / "nobody") == []


def test_a_session_is_one_record_with_thinking_beside_output(tmp_path: Path) -> None:
    path = tmp_path / f"{SESSION}.settings.json"
    data = encode(
        settings(
            inputTokens=73400, outputTokens=47485, cacheCreationTokens=1200, cacheReadTokens=3518842, thinkingTokens=900
        )
    )
    chunk = factory_droid.parse_settings(data, path)
    assert (chunk.malformed, chunk.consumed) == (0, len(data))
    (record,) = chunk.records
    assert (record.source, record.message_id, record.request_id, record.session_id) == (
        "factory-droid",
        SESSION,
        None,
        SESSION,
    )
    assert (record.model, record.timestamp) == ("claude-sonnet-4-5-20250929", "2026-11-23T09:41:07.512+00:00")
    assert (record.input_tokens, record.cache_read_tokens, record.cache_creation_5m_tokens) == (73400, 3518842, 1200)
    assert (record.output_tokens, record.reasoning_tokens) == (48385, 900)


def test_a_growing_session_keeps_its_key_and_the_largest_counts(tmp_path: Path) -> None:
    path = tmp_path / f"{SESSION}.settings.json"
    early = factory_droid.parse_settings(encode(settings(inputTokens=100, outputTokens=20)), path).records
    later = factory_droid.parse_settings(encode(settings(inputTokens=900, outputTokens=250)), path).records
    again = factory_droid.parse_settings(encode(settings(inputTokens=900, outputTokens=250)), path).records
    assert early[0].key == later[0].key == again[0].key
    assert later[0].payload() == again[0].payload()
    merged = RecordSet()
    merged.extend([*early, *later])
    assert [(record.input_tokens, record.output_tokens) for record in merged] == [(900, 250)]


def test_custom_models_and_missing_fields(tmp_path: Path) -> None:
    path = tmp_path / f"{SESSION}.settings.json"
    assert factory_droid.model_name("custom:Claude-Opus-4.5-Thinking-[Anthropic]-0") == "Claude-Opus-4.5-Thinking"
    assert factory_droid.model_name("custom:GLM-5.1-[Proxy]-12") == "GLM-5.1"
    assert factory_droid.model_name("glm-4.6") == "glm-4.6"
    custom = {**settings(inputTokens=5), "model": "custom:Kimi-K2-[Fireworks]-1"}
    assert [record.model for record in factory_droid.parse_settings(encode(custom), path).records] == ["Kimi-K2"]

    unused = {key: value for key, value in settings().items() if key != "tokenUsage"}
    for quiet in (settings(), unused):  # no model call yet: nothing to send, nothing wrong
        chunk = factory_droid.parse_settings(encode(quiet), path)
        assert (chunk.records, chunk.malformed) == ([], 0)
    no_model = {key: value for key, value in settings(inputTokens=5).items() if key != "model"}
    for broken in (b'{"tokenUsage": {"inputTok', encode(no_model), encode({"tokenUsage": [1, 2]}), b"[]"):
        chunk = factory_droid.parse_settings(broken, path)
        assert (chunk.records, chunk.malformed) == ([], 1)


def test_without_a_provider_lock_the_file_time_is_used(tmp_path: Path) -> None:
    path = tmp_path / f"{SESSION}.settings.json"
    document = {key: value for key, value in settings(inputTokens=5).items() if key != "providerLockTimestamp"}
    path.write_bytes(encode(document))
    (record,) = factory_droid.parse_settings(path.read_bytes(), path).records
    assert record.timestamp.endswith("+00:00")


def test_collect_reads_a_rewritten_file_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = Source(factory_droid.NAME, factory_droid.log_files, factory_droid.read, whole_file=True)
    monkeypatch.setitem(SOURCES, factory_droid.NAME, source)
    path = tmp_path / ".factory" / "sessions" / "-work-app" / f"{SESSION}.settings.json"
    path.parent.mkdir(parents=True)
    path.write_bytes(encode(settings(inputTokens=100, outputTokens=20)))
    first = collect([factory_droid.NAME], SyncState(), {}, tmp_path)
    assert [record.input_tokens for record in first.records] == [100]
    assert len(collect([factory_droid.NAME], first.state, {}, tmp_path).records) == 0
    path.write_bytes(encode(settings(inputTokens=1500, outputTokens=320)))
    later = collect([factory_droid.NAME], first.state, {}, tmp_path)
    assert [(record.message_id, record.input_tokens) for record in later.records] == [(SESSION, 1500)]


def test_the_digest_sees_a_rewrite_of_the_same_size(tmp_path: Path) -> None:
    path = tmp_path / f"{SESSION}.settings.json"
    path.write_bytes(encode(settings(inputTokens=73400, outputTokens=47485)))
    _, extra = factory_droid.read(path.read_bytes(), path, {}, True)
    assert factory_droid.unchanged(path, extra)
    size = path.stat().st_size
    path.write_bytes(encode(settings(inputTokens=75100, outputTokens=48002)))
    assert path.stat().st_size == size  # the size check alone would skip it
    assert not factory_droid.unchanged(path, extra)
    assert not factory_droid.unchanged(tmp_path / "gone.settings.json", extra)
