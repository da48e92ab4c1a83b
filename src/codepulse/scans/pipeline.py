"""The scan pipeline: clone → index → skip rules → result cache → engine pool → located findings.

`scan_repository(url, ref, ...)` clones into a private temporary directory (always removed) and
scans it; `scan_checkout(root, ...)` scans a clone's HEAD; `scan_source(source, ...)` any
`FileSource` (the local CLI's directories).

- **Cache first.** For every file the engines that want it give cache keys (blob SHA, engine name,
  engine version); the cache answers them before any blob is read. Only the misses are read and
  sent to the pool, and their results (empty ones too) are put back. A re-scan of an unchanged
  repository reads no blob and makes no engine call (`PipelineResult.engine_calls`).
- A blob is scanned once per scan however many paths hold it.
- **Progress** goes to the `progress` callback at most every 250 ms (the latest state, from a
  supervisor task, so a slow callback never slows the scan down).
- **Cancel**: `cancelled` is an `asyncio.Event` (watched continuously) or an async callable (asked
  every 0.5 s). On cancel the pipeline stops reading and submitting, cancels its queued chunks,
  gives running chunks a moment, then kills the pool's workers; `ScanCancelled` is raised well
  within 2 s. The partial results are discarded (what already went to the cache stays: it is
  keyed by content and correct).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final, Protocol, TypeVar

import structlog

from codepulse.config import Settings
from codepulse.scans.engine import RawFinding, fingerprints
from codepulse.scans.errors import ScanCancelled, ScanFailure
from codepulse.scans.files import FileSource, IndexEntry, skip_rules
from codepulse.scans.git import GitTreeSource, clone
from codepulse.scans.pool import ChunkItem, ChunkResult, EnginePool

__all__ = [
    "CacheKey",
    "EnginePool",
    "LocatedFinding",
    "MemoryCache",
    "PipelineResult",
    "Progress",
    "ResultCache",
    "ScanCancelled",
    "ScanFailure",
    "scan_checkout",
    "scan_repository",
    "scan_source",
]

log = structlog.get_logger("codepulse.scans")

T = TypeVar("T")

PROGRESS_INTERVAL_SECONDS: Final = 0.25
CANCEL_POLL_SECONDS: Final = 0.5
SUPERVISOR_TICK_SECONDS: Final = 0.05
KILL_GRACE_SECONDS: Final = 0.3
"""On cancel, how long running chunks may finish before the pool's workers are killed."""
CHUNK_MAX_BYTES: Final = 512 * 1024
CHUNK_MAX_FILES: Final = 128
CACHE_BATCH: Final = 500
"""Keys per cache call (a database cache turns them into IN lists)."""
CHUNK_RETRIES: Final = 1
"""Times a chunk is submitted again when the pool broke under it (another scan's cancel)."""

CacheKey = tuple[str, str, str]
"""(blob SHA, engine name, engine version)"""
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


@dataclass(slots=True)
class LocatedFinding:
    """A finding at a path, with its fingerprint; the flat properties make it SARIF-ready."""

    path: str
    finding: RawFinding
    fingerprint: str

    @property
    def rule_id(self) -> str:
        return self.finding.rule_id

    @property
    def engine(self) -> str:
        return self.finding.engine

    @property
    def severity(self) -> str:
        return self.finding.severity

    @property
    def title(self) -> str:
        return self.finding.title

    @property
    def message(self) -> str:
        return self.finding.message

    @property
    def start_line(self) -> int:
        return self.finding.start_line

    @property
    def end_line(self) -> int:
        return self.finding.end_line

    @property
    def start_column(self) -> int:
        return self.finding.start_column

    @property
    def end_column(self) -> int:
        return self.finding.end_column

    @property
    def snippet(self) -> str:
        return self.finding.snippet

    @property
    def cwe(self) -> str | None:
        return self.finding.cwe


@dataclass
class PipelineResult:
    commit_sha: str | None
    findings: list[LocatedFinding]
    files_total: int
    """Every file of the tree, skipped ones included."""
    files_scanned: int
    """Files analysed, by an engine or from the cache."""
    bytes_scanned: int
    skipped: dict[str, int]
    cache_hits: int
    """Files whose every engine result came from the cache."""
    engine_versions: dict[str, str]
    engine_calls: int
    """(file, engine) pairs sent to the engine pool."""
    warnings: list[str] = field(default_factory=list)
    """Non-fatal problems (an invalid .codepulse.yml, an engine that failed on one file)."""


class ResultCache(Protocol):
    async def get_many(self, keys: Sequence[CacheKey]) -> dict[CacheKey, list[RawFinding]]: ...

    async def put_many(self, items: Mapping[CacheKey, list[RawFinding]]) -> None: ...


class MemoryCache:
    """A ResultCache in a dict (the local CLI, tests)."""

    def __init__(self) -> None:
        self.data: dict[CacheKey, list[RawFinding]] = {}

    async def get_many(self, keys: Sequence[CacheKey]) -> dict[CacheKey, list[RawFinding]]:
        return {key: list(self.data[key]) for key in keys if key in self.data}

    async def put_many(self, items: Mapping[CacheKey, list[RawFinding]]) -> None:
        for key, findings in items.items():
            self.data[key] = list(findings)


async def _no_progress(progress: Progress) -> None:
    return None


# --- supervision: progress reports and cancel ------------------------------------------------------


class _Supervisor:
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


# --- the pipeline ---------------------------------------------------------------------------------


@dataclass
class _Chunk:
    items: list[ChunkItem] = field(default_factory=list)
    groups: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)
    """Per item: (blob SHA, engine names) of the job it runs."""
    size: int = 0
    attempts: int = 0


class _Pipeline:
    def __init__(
        self,
        *,
        cache: ResultCache,
        pool: EnginePool,
        supervisor: _Supervisor,
        max_file_bytes: int,
        max_repository_bytes: int | None,
    ) -> None:
        self.cache = cache
        self.pool = pool
        self.supervisor = supervisor
        self.max_file_bytes = max_file_bytes
        self.max_repository_bytes = max_repository_bytes
        self.running: dict[asyncio.Future[list[ChunkResult]], tuple[Future[list[ChunkResult]], _Chunk]] = {}

    async def scan(self, source: FileSource) -> PipelineResult:
        supervisor = self.supervisor
        supervisor.update(phase="indexing")
        rules = skip_rules(self.max_file_bytes, await source.config())
        index = await source.index(rules)
        if self.max_repository_bytes is not None and index.total_bytes > self.max_repository_bytes:
            raise ScanFailure(
                "repository_too_large",
                f"The repository's files add up to more than the {self.max_repository_bytes:,}-byte limit "
                "(SCAN_MAX_REPOSITORY_BYTES).",
            )
        warnings = list(rules.warnings)
        skipped: Counter[str] = Counter(index.skipped)
        engines = self.pool.engines
        versions = {name: engine.version for name, engine in engines.items()}

        # Which engines want each file.
        wanted: dict[IndexEntry, tuple[str, ...]] = {}
        for entry in index.entries:
            names = tuple(sorted(name for name, engine in engines.items() if engine.wants(entry.path)))
            if names:
                wanted[entry] = names
            else:
                skipped["no_engine"] += 1
        supervisor.update(
            phase="scanning",
            files_total=len(wanted),
            bytes_total=sum(entry.size for entry in wanted),
            files_done=0,
            bytes_done=0,
        )

        # The cache, before any blob is read.
        keys = sorted({(entry.blob_sha, name, versions[name]) for entry, names in wanted.items() for name in names})
        results: dict[CacheKey, list[RawFinding]] = {}
        for start in range(0, len(keys), CACHE_BATCH):
            results.update(await self.cache.get_many(keys[start : start + CACHE_BATCH]))

        cache_hits = 0
        jobs: dict[tuple[str, tuple[str, ...]], list[IndexEntry]] = defaultdict(list)
        for entry, names in wanted.items():
            missing = tuple(name for name in names if (entry.blob_sha, name, versions[name]) not in results)
            if missing:
                jobs[(entry.blob_sha, missing)].append(entry)
            else:
                cache_hits += 1
                supervisor.advance(1, entry.size)

        # The misses: read, check content, scan in chunks.
        content_skipped: dict[str, str] = {}  # blob SHA -> reason
        failed: set[IndexEntry] = set()
        engine_calls = 0
        job_of: dict[IndexEntry, tuple[str, tuple[str, ...]]] = {jobs[key][0]: key for key in jobs}
        firsts = list(job_of)
        limit = max(2, 2 * self.pool.processes)
        chunk = _Chunk()
        try:
            async with contextlib.aclosing(source.read(firsts)) as contents:
                async for entry, content in contents:
                    key = job_of[entry]
                    group = jobs[key]
                    reason = rules.content_reason(entry.path, content)
                    if reason is not None:
                        content_skipped[entry.blob_sha] = reason
                        skipped[reason] += len(group)
                        supervisor.advance(len(group), sum(item.size for item in group))
                        continue
                    engine_calls += len(key[1])
                    chunk.items.append((key[1], entry.path, content))
                    chunk.groups.append(key)
                    chunk.size += len(content)
                    if chunk.size >= CHUNK_MAX_BYTES or len(chunk.items) >= CHUNK_MAX_FILES:
                        self._submit(chunk)
                        chunk = _Chunk()
                        while len(self.running) >= limit:
                            await self._collect(jobs, versions, results, failed, warnings)
            if chunk.items:
                self._submit(chunk)
            while self.running:
                await self._collect(jobs, versions, results, failed, warnings)
        except BaseException:
            await self._stop_running()
            raise

        # Every file's findings, located and fingerprinted.
        findings: list[LocatedFinding] = []
        files_scanned = 0
        bytes_scanned = 0
        for entry, names in wanted.items():
            if entry.blob_sha in content_skipped or entry in failed:
                continue
            raw: list[RawFinding] = []
            complete = True
            for name in names:
                found = results.get((entry.blob_sha, name, versions[name]))
                if found is None:
                    complete = False
                    continue
                raw.extend(found)
            if not complete:
                continue
            files_scanned += 1
            bytes_scanned += entry.size
            raw.sort(key=lambda f: (f.start_line, f.start_column, f.engine, f.rule_id))
            for finding, fingerprint in zip(raw, fingerprints(entry.path, raw), strict=True):
                findings.append(LocatedFinding(path=entry.path, finding=finding, fingerprint=fingerprint))
        findings.sort(key=lambda f: (f.path, f.start_line, f.start_column, f.rule_id))
        return PipelineResult(
            commit_sha=index.commit_sha,
            findings=findings,
            files_total=index.files_total,
            files_scanned=files_scanned,
            bytes_scanned=bytes_scanned,
            skipped={reason: count for reason, count in sorted(skipped.items()) if count},
            cache_hits=cache_hits,
            engine_versions=versions,
            engine_calls=engine_calls,
            warnings=warnings,
        )

    def _submit(self, chunk: _Chunk) -> None:
        chunk.attempts += 1
        future = self.pool.submit(chunk.items)
        self.running[asyncio.wrap_future(future)] = (future, chunk)

    async def _collect(
        self,
        jobs: Mapping[tuple[str, tuple[str, ...]], list[IndexEntry]],
        versions: Mapping[str, str],
        results: dict[CacheKey, list[RawFinding]],
        failed: set[IndexEntry],
        warnings: list[str],
    ) -> None:
        """Wait for the first running chunk to finish; store and cache the results of those done."""
        done, _ = await asyncio.wait(list(self.running), return_when=asyncio.FIRST_COMPLETED)
        for waiter in done:
            _, chunk = self.running.pop(waiter)
            try:
                outcome = waiter.result()
            except BrokenProcessPool:
                if chunk.attempts > CHUNK_RETRIES:
                    raise ScanFailure("engine_failed", "The scan engines' worker processes stopped.") from None
                log.info("scan.chunk_resubmitted", files=len(chunk.items))
                self._submit(chunk)
                continue
            fresh: dict[CacheKey, list[RawFinding]] = {}
            for key, result in zip(chunk.groups, outcome, strict=True):
                blob_sha, names = key
                group = jobs[key]
                self.supervisor.advance(len(group), sum(entry.size for entry in group))
                if isinstance(result, str):
                    failed.update(group)
                    warnings.append(f"engine error on {group[0].path}: {result}")
                    log.warning("scan.engine_error", path=group[0].path, error=result)
                    continue
                for name in names:
                    fresh[(blob_sha, name, versions[name])] = list(result.get(name, []))
            if fresh:
                results.update(fresh)
                await self.cache.put_many(fresh)

    async def _stop_running(self) -> None:
        """Cancel: drop queued chunks, let running ones finish briefly, then kill the workers."""
        if not self.running:
            return
        running = dict(self.running)
        self.running.clear()
        for future, _ in running.values():
            future.cancel()  # queued chunks; a running one cannot be cancelled
        busy = [waiter for waiter, (future, _) in running.items() if not future.done()]
        if busy:
            with contextlib.suppress(BaseException):
                await asyncio.wait(busy, timeout=KILL_GRACE_SECONDS)
            if any(not future.done() for future, _ in running.values()):
                self.pool.kill()
        for waiter in running:
            if waiter.done() and not waiter.cancelled():
                waiter.exception()  # retrieved: no "exception was never retrieved" at collection
            waiter.cancel()


async def scan_source(
    source: FileSource,
    *,
    settings: Settings,
    cache: ResultCache,
    pool: EnginePool,
    progress: ProgressCallback | None = None,
    cancelled: CancelSignal | None = None,
    max_repository_bytes: int | None = None,
) -> PipelineResult:
    """Scan the files of any source (see the module docstring)."""
    supervisor = _Supervisor(progress, cancelled)
    return await _scan(source, settings, cache, pool, supervisor, max_repository_bytes)


async def _scan(
    source: FileSource,
    settings: Settings,
    cache: ResultCache,
    pool: EnginePool,
    supervisor: _Supervisor,
    max_repository_bytes: int | None,
) -> PipelineResult:
    pipeline = _Pipeline(
        cache=cache,
        pool=pool,
        supervisor=supervisor,
        max_file_bytes=settings.SCAN_MAX_FILE_BYTES,
        max_repository_bytes=max_repository_bytes,
    )
    started = time.monotonic()
    result = await supervisor.run(pipeline.scan(source))
    log.info(
        "scan.pipeline_finished",
        files=result.files_total,
        scanned=result.files_scanned,
        cache_hits=result.cache_hits,
        engine_calls=result.engine_calls,
        findings=len(result.findings),
        seconds=round(time.monotonic() - started, 3),
    )
    return result


async def scan_checkout(
    root: Path,
    *,
    settings: Settings,
    cache: ResultCache,
    progress: ProgressCallback | None,
    cancelled: CancelSignal | None,
    pool: EnginePool,
) -> PipelineResult:
    """Scan HEAD of the repository at `root` (a clone; read from git's objects, not the work
    tree). The tree's total size is held to SCAN_MAX_REPOSITORY_BYTES."""
    return await scan_source(
        GitTreeSource(root),
        settings=settings,
        cache=cache,
        pool=pool,
        progress=progress,
        cancelled=cancelled,
        max_repository_bytes=settings.SCAN_MAX_REPOSITORY_BYTES,
    )


async def scan_repository(
    url: str,
    ref: str | None,
    *,
    settings: Settings,
    cache: ResultCache,
    progress: ProgressCallback | None,
    cancelled: CancelSignal | None,
    pool: EnginePool,
    token: str | None = None,
    resolve: tuple[str, ...] = (),
    allow_local: bool | None = None,
    isolated: bool = True,
) -> PipelineResult:
    """Clone `url` at `ref` into a private temporary directory and scan it; the directory is
    removed whatever happens. The URL must have been validated by the caller (the repositories
    domain's `validate_clone_url`, whose addresses go in `resolve`). Raises ScanFailure or
    ScanCancelled."""
    supervisor = _Supervisor(progress, cancelled)
    supervisor.update(phase="cloning")
    workdir = Path(tempfile.mkdtemp(prefix="codepulse-scan-"))  # mode 0700
    try:
        checkout = workdir / "repository"
        await supervisor.run(
            clone(
                url,
                ref,
                checkout,
                settings=settings,
                token=token,
                resolve=resolve,
                allow_local=allow_local,
                isolated=isolated,
            )
        )
        return await _scan(
            GitTreeSource(checkout), settings, cache, pool, supervisor, settings.SCAN_MAX_REPOSITORY_BYTES
        )
    finally:
        await asyncio.to_thread(shutil.rmtree, workdir, True)
