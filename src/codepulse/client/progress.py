"""`codepulse sync`'s progress bar on stderr: files and bytes read (of those found), records found,
then records uploaded.

Shown when stderr is a terminal and the output is not `--json`; `CODEPULSE_PROGRESS=1` (or `0`)
forces it on (or off). rich is imported only when the bar is shown. The bar is redrawn by the
callbacks themselves, at most ten times a second, never by a thread: the parse pool forks, and a
drawing thread could hold the terminal's lock at that moment.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from codepulse.client.collect import FileRead, FileTask

PROGRESS_VARIABLE = "CODEPULSE_PROGRESS"
REDRAW_SECONDS = 0.1


def wanted(as_json: bool, environ: Mapping[str, str] = os.environ, stream: TextIO | None = None) -> bool:
    forced = environ.get(PROGRESS_VARIABLE, "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    stream = stream if stream is not None else sys.stderr
    return not as_json and stream.isatty()


class SyncProgress:
    """Does nothing when disabled, so the command calls it unconditionally."""

    def __init__(self, enabled: bool, stream: TextIO | None = None) -> None:
        self._bar: Any = None
        self._drawn_at = 0.0
        self.files = self.records = self.bytes_read = 0
        if not enabled:
            return
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self._bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            console=Console(file=stream if stream is not None else sys.stderr),
            auto_refresh=False,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self._bar.start()
        self._reading = self._bar.add_task("Reading logs", total=None, detail="")
        self._uploading: Any = None
        self._total_files = self._total_bytes = 0

    def found(self, tasks: list[FileTask]) -> None:
        if self._bar is not None:
            self._total_files = len(tasks)
            self._total_bytes = sum(task.size - task.start for task in tasks)
            self._bar.update(self._reading, total=self._total_bytes or 1)
            self._detail()
            self._draw(force=True)

    def read(self, task: FileTask, read: FileRead) -> None:
        self.files += 1
        self.records += read.found
        self.bytes_read += task.size - task.start
        if self._bar is not None:
            self._bar.update(self._reading, completed=self.bytes_read)
            self._detail()
            self._draw()

    def _detail(self) -> None:
        detail = (
            f"{self.files:,}/{self._total_files:,} files, {self.bytes_read / 1e6:,.0f}/"
            f"{self._total_bytes / 1e6:,.0f} MB, {self.records:,} records found"
        )
        self._bar.update(self._reading, detail=detail)

    def uploading(self, total: int) -> None:
        if self._bar is not None:
            self._bar.update(self._reading, completed=self._total_bytes or 1)
            self._uploading = self._bar.add_task("Uploading", total=total or 1, detail=f"0/{total:,} records")
            self._draw(force=True)

    def uploaded(self, done: int, total: int) -> None:
        if self._bar is not None and self._uploading is not None:
            self._bar.update(self._uploading, completed=done, detail=f"{done:,}/{total:,} records")
            self._draw(force=done >= total)

    def _draw(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._drawn_at >= REDRAW_SECONDS:
            self._drawn_at = now
            self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._draw(force=True)
            self._bar.stop()
            self._bar = None
