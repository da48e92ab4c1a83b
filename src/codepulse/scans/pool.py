"""The engine process pool: CPU-bound engine work off the event loop, killed promptly on cancel.

A `ProcessPoolExecutor` on a forkserver context where there is one (spawn elsewhere): the parent
runs asyncio and its threads, which `fork` must not copy. Workers ignore SIGINT (Ctrl-C is the
parent's to handle) and are started lazily, at the first submission.

Work goes in chunks of files (a few hundred KB each) to keep the pickling and IPC per file small.
A chunk runs `scan_function(engine_names, path, content)` per file, by default
`codepulse.scans.engine.scan_file`; an engine that raises on a file fails that file only.

`kill()` terminates the worker processes at once (a chunk can take seconds on a large file); the
pool restarts at the next submission. Other scans sharing the pool see `BrokenProcessPool` on
their running chunks and submit them again (see the pipeline).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING, Any, Final, TypeAlias, TypeVar

import structlog

from codepulse.scans.engine import Engine, RawFinding, available_engines, scan_file

if TYPE_CHECKING:
    from codepulse.config import Settings

log = structlog.get_logger("codepulse.scans")

ScanFunction: TypeAlias = "Callable[[tuple[str, ...], str, bytes], dict[str, list[RawFinding]]]"
ChunkItem: TypeAlias = "tuple[tuple[str, ...], str, bytes]"
"""(engine names, path, content)"""
ChunkResult: TypeAlias = "dict[str, list[RawFinding]] | str"
"""The findings per engine, or the error an engine raised on that file."""

KILL_JOIN_SECONDS: Final = 1.0
T = TypeVar("T")


def _init_worker() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def scan_chunk(function: ScanFunction, items: Sequence[ChunkItem]) -> list[ChunkResult]:
    """Runs in a worker process: each file of the chunk through its engines."""
    results: list[ChunkResult] = []
    for engine_names, path, content in items:
        try:
            results.append(function(engine_names, path, content))
        except Exception as error:  # an engine bug must not fail the other files
            results.append(f"{type(error).__name__}: {str(error)[:200]}")
    return results


def _context() -> multiprocessing.context.BaseContext:
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        # Workers fork from a server that loaded the engines once. "__main__" too: otherwise
        # each worker imports the main script again (for the CLI, all of codepulse.cli).
        context.set_forkserver_preload(["__main__", "codepulse.scans.pool", "codepulse.scans._warm"])
        return context
    return multiprocessing.get_context("spawn")


class EnginePool:
    """Engines (in this process, for their names, versions and `wants`) and the processes that
    run them.

    `engines`: the engines to run, by name (a subset of `available_engines()`) or as a mapping
    (tests); all available engines when None. `scan_function` must be a picklable module-level
    function; the workers call it, so it must know the same engines (by default
    `codepulse.scans.engine.scan_file`). `processes`: 0 for one per CPU core.
    """

    def __init__(
        self,
        engines: Mapping[str, Engine] | Sequence[str] | None = None,
        *,
        processes: int = 0,
        scan_function: ScanFunction | None = None,
    ) -> None:
        self._requested = engines
        self._engines: dict[str, Engine] | None = None
        self.processes = processes if processes > 0 else (os.cpu_count() or 1)
        self.scan_function = scan_function if scan_function is not None else scan_file
        self._executor: ProcessPoolExecutor | None = None
        self._closed = False

    @classmethod
    def from_settings(cls, settings: Settings, engines: Sequence[str] | None = None) -> EnginePool:
        return cls(engines, processes=settings.SCAN_PROCESSES)

    @property
    def engines(self) -> Mapping[str, Engine]:
        if self._engines is None:
            requested = self._requested
            if isinstance(requested, Mapping):
                self._engines = dict(requested)
            else:
                available = available_engines()
                if requested is None:
                    self._engines = dict(available)
                else:
                    unknown = [name for name in requested if name not in available]
                    if unknown:
                        raise ValueError(
                            f"unknown or unavailable engine(s): {', '.join(unknown)} "
                            f"(available: {', '.join(sorted(available)) or 'none'})"
                        )
                    self._engines = {name: available[name] for name in requested}
        return self._engines

    def _ensure(self) -> ProcessPoolExecutor:
        if self._closed:
            raise RuntimeError("the engine pool is closed")
        if self._executor is None:
            self._executor = ProcessPoolExecutor(
                max_workers=self.processes, mp_context=_context(), initializer=_init_worker
            )
        return self._executor

    def start(self) -> None:
        """Start the fork server now rather than at the first chunk: it loads the engines (a few
        hundred ms) in a process of its own while the caller lists and hashes its files, and the
        workers fork from it, warm, at the first chunk. Nothing waits here, and nothing runs that
        `kill` would have to stop (the fork server is not a worker)."""
        if _context().get_start_method() == "forkserver":
            from multiprocessing import forkserver  # POSIX only

            forkserver.ensure_running()

    def submit(self, items: Sequence[ChunkItem]) -> Future[list[ChunkResult]]:
        """Start a chunk; the future raises BrokenProcessPool when the pool was killed under it."""
        try:
            return self._ensure().submit(scan_chunk, self.scan_function, list(items))
        except BrokenProcessPool:
            # A worker died (killed, out of memory): start over with fresh processes, once.
            self.kill()
            return self._ensure().submit(scan_chunk, self.scan_function, list(items))

    def call(self, function: Callable[..., T], *args: Any) -> Future[T]:
        """Run a picklable module-level function in a worker (work on untrusted input that must
        not run on the event loop, such as a repository's `.codepulse.yml`)."""
        try:
            return self._ensure().submit(function, *args)
        except BrokenProcessPool:
            self.kill()
            return self._ensure().submit(function, *args)

    def kill(self) -> None:
        """Terminate the workers now (running chunks are lost); the next submit starts new ones."""
        executor, self._executor = self._executor, None
        if executor is None:
            return
        # ProcessPoolExecutor has no public way to stop running work before Python 3.14
        # (terminate_workers); its process table is the documented-in-source way to get there.
        processes = list(getattr(executor, "_processes", {}).values())
        for process in processes:
            with contextlib.suppress(Exception):
                process.kill()
        executor.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            with contextlib.suppress(Exception):
                process.join(KILL_JOIN_SECONDS)
        log.info("scan.engine_pool_killed", processes=len(processes))

    def terminate(self) -> None:
        """Kill the workers and wait for them (running chunks are lost); the pool cannot be reused."""
        self.kill()
        self._closed = True

    def close(self, *, wait: bool = True) -> None:
        """Stop the workers (after their current chunk when `wait`); the pool cannot be reused."""
        self._closed = True
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=wait, cancel_futures=True)

    def __enter__(self) -> EnginePool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
