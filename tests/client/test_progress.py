"""`codepulse sync`'s progress bar: when it shows, and what it says."""

from __future__ import annotations

import io
from pathlib import Path

from codepulse.client.collect import FileRead, FileTask
from codepulse.client.progress import SyncProgress, wanted


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_bar_shows_on_a_terminal_unless_json_or_told_otherwise() -> None:
    assert wanted(False, {}, Terminal()) is True
    assert wanted(True, {}, Terminal()) is False  # --json: stdout is for the JSON, stderr stays quiet
    assert wanted(False, {}, io.StringIO()) is False  # a pipe or a log file
    assert wanted(True, {"CODEPULSE_PROGRESS": "1"}, io.StringIO()) is True
    assert wanted(False, {"CODEPULSE_PROGRESS": "0"}, Terminal()) is False


def test_the_bar_counts_files_bytes_and_records_then_the_upload() -> None:
    stream = io.StringIO()
    progress = SyncProgress(True, stream=stream)
    tasks = [FileTask("claude-code", Path(f"/logs/{n}.jsonl"), 0, {}, 2_000_000, 1, n) for n in range(3)]
    progress.found(tasks)
    for task in tasks[:2]:
        progress.read(task, FileRead(found=7))
    assert (progress.files, progress.bytes_read, progress.records) == (2, 4_000_000, 14)
    progress.read(tasks[2], FileRead(found=1))
    progress.uploading(15)
    progress.uploaded(15, 15)
    progress.close()
    shown = stream.getvalue()
    assert "3/3 files, 6/6 MB, 15 records found" in shown
    assert "Uploading" in shown
    assert "15/15 records" in shown


def test_a_disabled_bar_imports_and_prints_nothing() -> None:
    stream = io.StringIO()
    progress = SyncProgress(False, stream=stream)
    progress.found([])
    progress.read(FileTask("codex", Path("/x"), 0, {}, 10, 1, 1), FileRead(found=2))
    progress.uploading(2)
    progress.uploaded(2, 2)
    progress.close()
    assert stream.getvalue() == ""
    assert progress.records == 2
