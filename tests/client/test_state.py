"""The sync state: saved atomically, read back, where to read each file from (grown, shrunk,
replaced), and the lock that keeps two runs apart, held by another real process."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from codepulse.client.state import STATE_FILE, FileState, SyncAlreadyRunning, SyncState, sync_lock


def test_the_state_is_saved_and_read_back(tmp_path: Path) -> None:
    state = SyncState()
    log = tmp_path / "a.jsonl"
    state.remember("codex", log, FileState(offset=10, size=12, device=1, inode=2, extra={"model": "gpt-5"}))
    state.last_sync["codex"] = "2026-12-04T07:00:00+00:00"
    state.save(tmp_path / "state")
    again = SyncState.load(tmp_path / "state")
    assert again.file("codex", log) == FileState(offset=10, size=12, device=1, inode=2, extra={"model": "gpt-5"})
    assert again.last_sync == {"codex": "2026-12-04T07:00:00+00:00"}
    assert again.file("claude-code", log) == FileState()
    assert [path.name for path in (tmp_path / "state").iterdir()] == [STATE_FILE]  # no temporary left


def test_an_unreadable_state_means_reading_everything_again(tmp_path: Path) -> None:
    (tmp_path / STATE_FILE).write_text("{not json")
    assert SyncState.load(tmp_path).files == {}
    (tmp_path / STATE_FILE).write_text('{"version": 99, "files": {}}')
    assert SyncState.load(tmp_path).files == {}
    assert SyncState.load(tmp_path / "missing").files == {}


def test_a_failed_save_keeps_the_previous_state_whole(tmp_path: Path) -> None:
    state = SyncState()
    state.remember("codex", tmp_path / "a", FileState(offset=5))
    state.save(tmp_path)
    state.remember("codex", tmp_path / "b", FileState(extra={"unserialisable": object()}))
    with pytest.raises(TypeError):
        state.save(tmp_path)
    assert SyncState.load(tmp_path).file("codex", tmp_path / "a").offset == 5
    assert [path.name for path in tmp_path.iterdir()] == [STATE_FILE]


def test_reading_goes_on_from_the_offset_unless_the_file_shrank_or_was_replaced(tmp_path: Path) -> None:
    log = tmp_path / "t.jsonl"
    log.write_bytes(b"x" * 100)
    seen = os.stat(log)
    entry = FileState(offset=100, size=100, device=seen.st_dev, inode=seen.st_ino)
    with log.open("ab") as handle:
        handle.write(b"y" * 50)
    assert entry.start_for(os.stat(log)) == 100  # appended: read only what is new
    log.write_bytes(b"z" * 10)  # truncated in place
    assert entry.start_for(os.stat(log)) == 0
    replacement = tmp_path / "new.jsonl"
    replacement.write_bytes(b"w" * 500)
    keep = tmp_path / "keep"  # hold the old inode so the new file cannot reuse its number
    os.link(log, keep)
    os.replace(replacement, log)
    assert entry.start_for(os.stat(log)) == 0


def test_a_second_run_is_refused_while_another_process_holds_the_lock(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from codepulse.client.state import sync_lock
        with sync_lock(Path({str(tmp_path)!r})):
            print("locked", flush=True)
            sys.stdin.readline()
        """
    )
    pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "text": True}
    with subprocess.Popen([sys.executable, "-c", script], **pipes) as holder:  # type: ignore[call-overload]
        try:
            assert holder.stdout.readline().strip() == "locked"
            with pytest.raises(SyncAlreadyRunning), sync_lock(tmp_path):
                pass
        finally:
            holder.kill()  # a killed run releases its lock with its process
    with sync_lock(tmp_path):
        pass
