"""A collection pass over a home directory with every supported tool's logs: figures per source,
each record once, and incremental reads from the saved state (appended, truncated, unchanged)."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from codepulse.client.collect import SOURCES, collect
from codepulse.client.sources import SOURCE_NAMES, ParsedChunk
from codepulse.client.state import SyncState
from tests.client.test_claude_code import assistant, compact
from tests.client.test_codex import ROLLOUT
from tests.client.test_gemini_cli import CHAT


def recent(data: bytes) -> bytes:
    """The fixtures' day moved to yesterday: a server refuses records more than 400 days old."""
    yesterday = (datetime.now(UTC) - timedelta(days=1)).date().isoformat().encode()
    return data.replace(FIXTURE_DAY, yesterday)


FIXTURE_DAY = b"2026-11-23"


def logs_home(tmp_path: Path) -> tuple[Path, Path]:
    """Claude Code, Codex and Gemini CLI logs (their modules' fixtures, dated yesterday)."""
    home = tmp_path / "home"
    transcript = home / ".claude" / "projects" / "-work-app" / "s.jsonl"
    transcript.parent.mkdir(parents=True)
    transcript.write_bytes(
        recent(
            b"".join(
                compact(entry) + b"\n"
                for entry in (
                    assistant("msg_1", "req_1", output=1),
                    assistant("msg_1", "req_1", output=42, cache_creation_input_tokens=30),
                    assistant("msg_2", "req_2", output=8),
                )
            )
        )
    )
    rollout = home / ".codex" / "sessions" / "2026" / "11" / "23" / "rollout-1.jsonl"
    rollout.parent.mkdir(parents=True)
    rollout.write_bytes(recent(ROLLOUT))
    chat = home / ".gemini" / "tmp" / "p" / "chats" / "session-1.json"
    chat.parent.mkdir(parents=True)
    chat.write_bytes(recent(json.dumps(CHAT).encode()))
    return home, transcript


def test_one_pass_counts_every_source_once(tmp_path: Path) -> None:
    home, _ = logs_home(tmp_path)
    collection = collect(SOURCES, SyncState(), {}, home)
    found = collection.summary()["sources"]
    assert {name for name, figures in found.items() if figures["files"]} == {"claude-code", "codex", "gemini-cli"}
    assert {"sources": {name: figures for name, figures in found.items() if figures["files"]}} == {
        "sources": {
            "claude-code": {
                "files": 1,
                "records": 2,
                "input_tokens": 24,
                "output_tokens": 50,
                "cache_creation_tokens": 30,
                "cache_read_tokens": 200,
                "reasoning_tokens": 0,
            },
            "codex": {
                "files": 1,
                "records": 2,
                "input_tokens": 900,
                "output_tokens": 80,
                "cache_creation_tokens": 0,
                "cache_read_tokens": 2100,
                "reasoning_tokens": 20,
            },
            "gemini-cli": {
                "files": 1,
                "records": 2,
                "input_tokens": 820,
                "output_tokens": 90,
                "cache_creation_tokens": 0,
                "cache_read_tokens": 900,
                "reasoning_tokens": 30,
            },
        }
    }
    assert collection.malformed == {}
    assert collection.unreadable == []


def test_the_next_pass_reads_only_what_is_new(tmp_path: Path) -> None:
    home, transcript = logs_home(tmp_path)
    first = collect(SOURCES, SyncState(), {}, home)
    again = collect(SOURCES, first.state, {}, home)
    assert len(again.records) == 0  # nothing new anywhere

    with transcript.open("ab") as handle:
        handle.write(compact(assistant("msg_3", "req_3", output=5)) + b"\n")
    appended = collect(["claude-code"], first.state, {}, home)
    assert [record.message_id for record in appended.records] == ["msg_3"]

    transcript.write_bytes(compact(assistant("msg_9", "req_9", output=1)) + b"\n")  # shrank
    reread = collect(["claude-code"], appended.state, {}, home)
    assert [record.message_id for record in reread.records] == ["msg_9"]
    assert reread.state.file("claude-code", transcript).offset == transcript.stat().st_size


def test_the_commands_list_every_source_collect_reads() -> None:
    assert tuple(SOURCES) == SOURCE_NAMES


def test_a_parse_pool_gives_what_one_process_gives(tmp_path: Path) -> None:
    """Every file, its state and its malformed lines, and every record once, whichever process
    read it: a response repeated in files read by two processes is still one record."""
    home, transcript = logs_home(tmp_path)
    project = transcript.parent
    for number in range(7):  # shares for both processes, with copies of one response across them
        lines = [assistant(f"msg_{number}_{n}", f"req_{number}_{n}", output=n + 1) for n in range(30)]
        lines.append(assistant("msg_shared", "req_shared", output=number + 10))
        (project / f"more-{number}.jsonl").write_bytes(
            b"".join(compact(line) + b"\n" for line in lines) + b'{"usage":{"broken\n'
        )
    (project / "gone.jsonl").symlink_to(tmp_path / "deleted.jsonl")  # listed, then unreadable

    serial = collect(SOURCES, SyncState(), {"CODEPULSE_PARSE_PROCESSES": "1"}, home)
    pooled = collect(SOURCES, SyncState(), {"CODEPULSE_PARSE_PROCESSES": "2"}, home)

    assert pooled.summary() == serial.summary()
    assert serial.summary()["sources"]["claude-code"]["records"] == 2 + 7 * 30 + 1
    shared = [record for record in pooled.records if record.message_id == "msg_shared"]
    assert [record.output_tokens for record in shared] == [16]  # the largest of its copies
    assert sorted(pooled.records, key=lambda record: record.key) == sorted(serial.records, key=lambda r: r.key)
    assert pooled.malformed == serial.malformed == {"claude-code": 7}
    assert pooled.state == serial.state
    assert [path.name for path, _reason in pooled.unreadable] == ["gone.jsonl"]
    assert pooled.unreadable == serial.unreadable


def test_a_pool_worker_that_dies_loses_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker killed mid-run (out of memory, a crash in a native decoder) is noticed by its
    process sentinel: this process reads the files that worker took, and the run's result is the
    one process's, with no wait for an answer that cannot come."""
    home, transcript = logs_home(tmp_path)
    for number in range(6):
        lines = [assistant(f"msg_{number}_{n}", f"req_{number}_{n}", output=n + 1) for n in range(20)]
        (transcript.parent / f"more-{number}.jsonl").write_bytes(b"".join(compact(line) + b"\n" for line in lines))
    parent = os.getpid()
    claude = SOURCES["claude-code"]
    died = tmp_path / "worker-died"

    def read_or_die(path: Path, start: int) -> ParsedChunk:
        if os.getpid() != parent:  # the worker: dies on the first file it takes
            died.touch()
            os._exit(9)
        # This process holds its first file until the worker has died, so the worker takes one.
        deadline = time.monotonic() + 30
        while not died.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert claude.read_from is not None
        return claude.read_from(path, start)

    serial = collect(SOURCES, SyncState(), {"CODEPULSE_PARSE_PROCESSES": "1"}, home)
    monkeypatch.setitem(SOURCES, "claude-code", dataclasses.replace(claude, read_from=read_or_die))
    heard: list[str] = []
    pooled = collect(
        SOURCES,
        SyncState(),
        {"CODEPULSE_PARSE_PROCESSES": "2"},
        home,
        progress=lambda task, _read: heard.append(task.path.name),
    )

    assert pooled.summary() == serial.summary()
    assert sorted(pooled.records, key=lambda record: record.key) == sorted(serial.records, key=lambda r: r.key)
    assert pooled.state == serial.state
    assert died.exists()
    assert sorted(heard) == sorted({*heard})  # each file heard of once


def test_a_pool_of_three_gives_what_one_process_gives(tmp_path: Path) -> None:
    """Files of many sizes taken one at a time by this process and two workers: every file heard
    of once, the same records and figures as one process."""
    home, transcript = logs_home(tmp_path)
    for number in range(8):
        lines = [assistant(f"msg_{number}_{n}", f"req_{number}_{n}", output=n + 1) for n in range(10 * (number + 1))]
        (transcript.parent / f"more-{number}.jsonl").write_bytes(b"".join(compact(line) + b"\n" for line in lines))
    order: list[str] = []
    pooled = collect(
        ["claude-code"],
        SyncState(),
        {"CODEPULSE_PARSE_PROCESSES": "3"},
        home,
        progress=lambda task, _read: order.append(task.path.name),
    )
    serial = collect(["claude-code"], SyncState(), {"CODEPULSE_PARSE_PROCESSES": "1"}, home)

    assert sorted(order) == sorted(path.name for path in transcript.parent.iterdir())
    assert pooled.summary() == serial.summary()
    assert sorted(pooled.records, key=lambda record: record.key) == sorted(serial.records, key=lambda r: r.key)
