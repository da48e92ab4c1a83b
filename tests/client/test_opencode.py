"""OpenCode: assistant messages of its SQLite database (read-only) or of the JSON files of versions
before 1.2; cache reads and writes beside input, reasoning added to output only when OpenCode left
it out, forked copies sent once, the same ids on every read."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from codepulse.client.collect import SOURCES, Source, collect
from codepulse.client.sources import opencode
from codepulse.client.state import SyncState

SESSION = "ses_52f1c0c5effeK2pQmzX7aYbW4r"
FORK = "ses_52e0aa11bffeQ9sLnV3cTdUe8h"


def assistant(created: int, tokens: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """An assistant message as OpenCode stores it in `message.data` (no id, no session id)."""
    return {
        "role": "assistant",
        "time": {"created": created, "completed": created + 4200},
        "parentID": "msg_ad0e1f6f2001ZbXq0nKc9mWv3T",
        "modelID": "claude-sonnet-4-5",
        "providerID": "anthropic",
        "mode": "build",
        "agent": "build",
        "path": {"cwd": "/work/app", "root": "/work/app"},
        "cost": 0.0213,
        "tokens": tokens,
        "finish": "tool-calls",
        **extra,
    }


# Current versions: `output` without reasoning, `total` counts it beside.
CURRENT = assistant(
    1763890867512,
    {
        "total": 12 + 48210 + 1536 + 842 + 64,
        "input": 12,
        "output": 842,
        "reasoning": 64,
        "cache": {"read": 48210, "write": 1536},
    },
)
# Older versions (no `total`): an OpenAI output count that already holds its reasoning.
OLDER = assistant(
    1763890900000,
    {"input": 900, "output": 500, "reasoning": 200, "cache": {"read": 100, "write": 0}},
    modelID="gpt-5",
    providerID="openai",
)
# `total` without the reasoning: it is inside `output`.
INSIDE = assistant(
    1763890950000,
    {"total": 40 + 10 + 300, "input": 40, "output": 300, "reasoning": 120, "cache": {"read": 10, "write": 0}},
    modelID="gpt-5",
    providerID="openai",
)
STREAMING = assistant(1763891000000, {"input": 0, "output": 0, "reasoning": 0, "cache": {"read": 0, "write": 0}})
USER = {
    "role": "user",
    "time": {"created": 1763890860000},
    "agent": "build",
    "model": {"providerID": "anthropic", "modelID": "claude-sonnet-4-5"},
}
NO_MODEL = {key: value for key, value in CURRENT.items() if key != "modelID"}

ROWS: list[tuple[str, str, str]] = [
    ("msg_ad0e1f6f2001ZbXq0nKc9mWv3T", SESSION, json.dumps(USER)),
    ("msg_ad0e1f7a1001Lq3nB8vXc2MpR5", SESSION, json.dumps(CURRENT)),
    ("msg_ad0e2a0b3001Tg7hJ1kPz4NwQ6", SESSION, json.dumps(OLDER)),
    ("msg_ad0e2b9c4001Hy5tR2mVb8LsK1", SESSION, json.dumps(INSIDE)),
    ("msg_ad0e2c1d5001Wq9eF3gXn6BvC2", SESSION, json.dumps(STREAMING)),
    ("msg_ad0e2d2e6001Pa4sD7fGh0JkL3", SESSION, "{not json"),
    ("msg_ad0e2e3f7001Zx8cV5bNm1QwE4", SESSION, json.dumps(NO_MODEL)),
    # A fork of the session: the first response copied under a newer id, counts and times kept.
    ("msg_ad0f90a18001Rt6yU2iOp9AsD5", FORK, json.dumps(CURRENT)),
]


def make_database(path: Path, rows: list[tuple[str, str, str]] = ROWS) -> Path:
    """A database with OpenCode's `message` table (packages/opencode/src/session/session.sql.ts)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(path)
    with connection:
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute(
            "CREATE TABLE message (id text PRIMARY KEY, session_id text NOT NULL,"
            " time_created integer NOT NULL, time_updated integer NOT NULL, data text NOT NULL)"
        )
        connection.executemany(
            "INSERT INTO message VALUES (?, ?, 0, 0, ?)", [(row_id, session, data) for row_id, session, data in rows]
        )
    connection.close()
    return path


def test_a_database_gives_one_record_per_assistant_response(tmp_path: Path) -> None:
    database = make_database(tmp_path / "opencode.db")
    chunk, extra = opencode.read(b"", database, {}, True)
    assert extra == {"stamp": opencode.stamp(database)}
    assert chunk.malformed == 2  # the broken row, the message without a model
    assert chunk.consumed == database.stat().st_size
    found = {record.message_id: record for record in chunk.records}
    assert sorted(found) == [
        "msg_ad0e1f7a1001Lq3nB8vXc2MpR5",  # the fork's copy folded into it
        "msg_ad0e2a0b3001Tg7hJ1kPz4NwQ6",
        "msg_ad0e2b9c4001Hy5tR2mVb8LsK1",
    ]
    current = found["msg_ad0e1f7a1001Lq3nB8vXc2MpR5"]
    assert (current.source, current.model, current.session_id, current.request_id) == (
        "opencode",
        "claude-sonnet-4-5",
        SESSION,
        None,
    )
    assert current.timestamp == "2025-11-23T09:41:07.512+00:00"
    assert (current.input_tokens, current.cache_read_tokens, current.cache_creation_5m_tokens) == (12, 48210, 1536)
    assert (current.output_tokens, current.reasoning_tokens, current.cache_creation_1h_tokens) == (906, 64, 0)
    older = found["msg_ad0e2a0b3001Tg7hJ1kPz4NwQ6"]
    assert (older.model, older.input_tokens, older.cache_read_tokens, older.output_tokens, older.reasoning_tokens) == (
        "gpt-5",
        900,
        100,
        500,
        200,
    )
    inside = found["msg_ad0e2b9c4001Hy5tR2mVb8LsK1"]
    assert (inside.output_tokens, inside.reasoning_tokens) == (300, 120)


def test_reading_again_gives_the_same_records_and_leaves_the_database_alone(tmp_path: Path) -> None:
    database = make_database(tmp_path / "opencode.db")
    before = sorted(path.name for path in tmp_path.iterdir()), database.read_bytes()
    first, _ = opencode.read(b"", database, {}, True)
    again, _ = opencode.read(b"", database, {}, False)
    assert [record.payload() for record in first.records] == [record.payload() for record in again.records]
    assert (sorted(path.name for path in tmp_path.iterdir()), database.read_bytes()) == before


def test_a_fork_read_alone_keeps_the_copys_id_and_the_original_wins_once_both_exist(tmp_path: Path) -> None:
    only_fork = make_database(tmp_path / "a" / "opencode.db", [ROWS[-1]])
    (record,) = opencode.read(b"", only_fork, {}, True)[0].records
    assert (record.message_id, record.session_id) == ("msg_ad0f90a18001Rt6yU2iOp9AsD5", FORK)
    both = make_database(tmp_path / "b" / "opencode.db", [ROWS[-1], ROWS[1]])  # the copy's row first
    (record,) = opencode.read(b"", both, {}, True)[0].records
    assert (record.message_id, record.session_id) == ("msg_ad0e1f7a1001Lq3nB8vXc2MpR5", SESSION)


def test_a_file_that_is_not_a_database_is_an_os_error(tmp_path: Path) -> None:
    broken = tmp_path / "opencode.db"
    broken.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(OSError, match="OpenCode database"):
        opencode.read(b"", broken, {}, True)
    empty = tmp_path / "empty" / "opencode.db"
    empty.parent.mkdir()
    sqlite3.connect(empty).close()  # a database without the `message` table
    with pytest.raises(OSError, match="no such table"):
        opencode.read(b"", empty, {}, True)


def test_message_files_of_versions_before_1_2(tmp_path: Path) -> None:
    path = tmp_path / "storage" / "message" / SESSION / "msg_ad0e1f7a1001Lq3nB8vXc2MpR5.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"id": "msg_ad0e1f7a1001Lq3nB8vXc2MpR5", "sessionID": SESSION, **CURRENT}))
    chunk, _ = opencode.read(b"", path, {}, True)  # opens the file itself, like a database
    (record,) = chunk.records
    assert (record.message_id, record.session_id, record.output_tokens) == (path.stem, SESSION, 906)
    assert chunk.consumed == path.stat().st_size
    assert opencode.parse_message_file(json.dumps({"id": "msg_x", **STREAMING}).encode(), path).records == []
    assert opencode.parse_message_file(json.dumps(USER).encode(), path).malformed == 0
    assert opencode.parse_message_file(b'{"role": "assistant", "tok', path).malformed == 1


def test_databases_are_found_in_the_data_directory(tmp_path: Path) -> None:
    home = tmp_path / "home"
    data = home / ".local" / "share" / "opencode"
    legacy = data / "storage" / "message" / SESSION / "msg_ad0e1f7a1001Lq3nB8vXc2MpR5.json"
    legacy.parent.mkdir(parents=True)
    legacy.write_text("{}")
    assert opencode.log_files({}, home) == [legacy]  # no database yet: the files of older versions

    main = make_database(data / "opencode.db")
    channel = make_database(data / "opencode-dev.db")
    (data / "opencode.db-wal").write_bytes(b"")
    assert opencode.log_files({}, home) == [main, channel]  # the files were copied into the database

    elsewhere = make_database(tmp_path / "custom" / "usage.db")
    relative = make_database(data / "mine.db")
    assert opencode.log_files({"OPENCODE_DB": str(elsewhere)}, home) == [elsewhere, main, channel]
    assert opencode.log_files({"OPENCODE_DB": "mine.db"}, home) == [relative, main, channel]
    assert opencode.log_files({"OPENCODE_DB": str(main)}, home) == [main, channel]

    xdg = make_database(tmp_path / "xdg" / "opencode" / "opencode.db")
    assert opencode.log_files({"XDG_DATA_HOME": str(tmp_path / "xdg")}, home) == [xdg]
    assert opencode.log_files({}, tmp_path / "nobody") == []


def test_a_database_in_use_is_read_with_its_latest_writes(tmp_path: Path) -> None:
    database = make_database(tmp_path / "opencode.db", ROWS[:2])
    writer = sqlite3.connect(database)  # OpenCode running: its latest rows are still in the WAL
    try:
        writer.execute("PRAGMA wal_autocheckpoint = 0")
        with writer:
            writer.execute("INSERT INTO message VALUES (?, ?, 0, 0, ?)", ROWS[2])
        assert (tmp_path / "opencode.db-wal").stat().st_size > 0
        chunk, _ = opencode.read(b"", database, {}, True)
    finally:
        writer.close()
    assert sorted(record.message_id for record in chunk.records) == [ROWS[1][0], ROWS[2][0]]


def test_collect_reads_the_database_again_once_it_grew(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = Source(opencode.NAME, opencode.log_files, opencode.read, whole_file=True, opens_file=True)
    monkeypatch.setitem(SOURCES, opencode.NAME, source)
    home = tmp_path / "home"
    database = make_database(home / ".local" / "share" / "opencode" / "opencode.db", ROWS[:3])
    first = collect([opencode.NAME], SyncState(), {}, home)
    assert (len(first.records), first.unreadable) == (2, [])
    assert len(collect([opencode.NAME], first.state, {}, home).records) == 0  # unchanged: not read
    with sqlite3.connect(database) as writer:
        writer.executemany("INSERT INTO message VALUES (?, ?, 0, 0, ?)", ROWS[3:])
        writer.execute("CREATE TABLE part (id text PRIMARY KEY, data text)")  # grows the file by pages
        writer.execute("INSERT INTO part VALUES ('prt_1', ?)", ("x" * 20_000,))
    writer.close()
    later = collect([opencode.NAME], first.state, {}, home)
    assert len(later.records) == 3  # read whole again: the earlier records come back, deduplicated upstream
    assert later.malformed == {opencode.NAME: 2}


def test_the_stamp_sees_writes_that_leave_the_size_alone(tmp_path: Path) -> None:
    database = make_database(tmp_path / "opencode.db", ROWS[:3])
    _, extra = opencode.read(b"", database, {}, True)
    assert opencode.unchanged(database, extra)
    size = database.stat().st_size
    with sqlite3.connect(database) as writer:
        writer.execute("INSERT INTO message VALUES (?, ?, 0, 0, ?)", ROWS[3])
    writer.close()
    assert database.stat().st_size == size  # the size check alone would skip it
    assert not opencode.unchanged(database, extra)
    assert not opencode.unchanged(database, {})
    assert not opencode.unchanged(tmp_path / "gone.db", extra)
