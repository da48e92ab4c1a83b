"""A scan's supervision: throttled progress reports and the cancel signal, around the pipeline's work.

- **Progress** goes to the `progress` callback at most every 250 ms (the latest state, from a
  supervisor task, so a slow callback never slows the scan down).
- **Cancel**: `cancelled` is an `asyncio.Event` (watched continuously) or an async callable (asked
  every 0.5 s). When it fires the supervised work is cancelled and `ScanCancelled` is raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, replace
from typing import Any, Final, TypeVar

import structlog

from codepulse.scans.errors import ScanCancelled

log = structlog.get_logger("codepulse.scans")

T = TypeVar("T")

PROGRESS_INTERVAL_SECONDS: Final = 0.25
CANCEL_POLL_SECONDS: Final = 0.5
SUPERVISOR_TICK_SECONDS: Final = 0.05

ProgressCallback = Callable[["Progress"], Awaitable[None]]
CancelSignal = Callable[[], Awaitable[bool]] | asyncio.Event


@dataclass
class Progress:
    phase: str
    """cloning | indexing | scanning (the runner adds saving)"""
    files_total: int = 0
    files_done: int = 0
    bytes_total: int = 0
    bytes_done: int = 0


async def _no_progress(progress: Progress) -> None:
    return None


class Supervisor:
    """Runs the pipeline's work as a task next to a loop that reports progress (throttled) and
    watches the cancel signal."""

    def __init__(self, progress: ProgressCallback | None, cancelled: CancelSignal | None) -> None:
        self.progress_callback = progress or _no_progress
        self.cancelled = cancelled
        self.state = Progress(phase="indexing")
        self.version = 0
        self.reported_version = 0
        self.last_report = float("-inf")
        self.last_cancel_poll = float("-inf")
        self.cancel_requested = False

    def update(self, **changes: Any) -> None:
        self.state = replace(self.state, **changes)
        self.version += 1

    def advance(self, files: int, size: int) -> None:
        self.state.files_done += files
        self.state.bytes_done += size
        self.version += 1

    async def _report(self, now: float) -> None:
        if self.version == self.reported_version or now - self.last_report < PROGRESS_INTERVAL_SECONDS:
            return
        self.reported_version = self.version
        self.last_report = now
        try:
            await self.progress_callback(replace(self.state))
        except Exception:
            log.warning("scan.progress_callback_failed", exc_info=True)

    async def _is_cancelled(self, now: float) -> bool:
        signal = self.cancelled
        if signal is None:
            return False
        if isinstance(signal, asyncio.Event):
            return signal.is_set()
        if now - self.last_cancel_poll < CANCEL_POLL_SECONDS:
            return False
        self.last_cancel_poll = now
        try:
            return await signal()
        except Exception:
            log.warning("scan.cancel_check_failed", exc_info=True)
            return False

    async def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Await `coroutine` under supervision; raises ScanCancelled when the signal fires."""
        work = asyncio.ensure_future(coroutine)
        event_wait: asyncio.Future[Any] | None = None
        if isinstance(self.cancelled, asyncio.Event):
            event_wait = asyncio.ensure_future(self.cancelled.wait())
        try:
            await self._report(time.monotonic())  # the phase at once, the rest throttled
            while not work.done():
                waiters: set[asyncio.Future[Any]] = {work} if event_wait is None else {work, event_wait}
                await asyncio.wait(waiters, timeout=SUPERVISOR_TICK_SECONDS, return_when=asyncio.FIRST_COMPLETED)
                if work.done():
                    break
                now = time.monotonic()
                if not self.cancel_requested and await self._is_cancelled(now):
                    self.cancel_requested = True
                    log.info("scan.cancel_requested", phase=self.state.phase)
                    work.cancel()
                    continue
                await self._report(now)
        except BaseException:
            # Cancelled from outside (shutdown): stop the work and let it clean up.
            work.cancel()
            with contextlib.suppress(BaseException):
                await work
            raise
        finally:
            if event_wait is not None:
                event_wait.cancel()
        if self.cancel_requested:
            # Whatever the work ended with (a git process killed under a clone, a result just
            # too late), a cancelled scan reports the cancel.
            if not work.cancelled():
                work.exception()
            raise ScanCancelled("The scan was cancelled.")
        return work.result()
