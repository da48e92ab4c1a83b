"""The scan pipeline: clone → index → skip rules → result cache → engine pool → located findings.

`scan_repository(url, ref, ...)` clones into a private temporary directory (always removed) and
scans it; `scan_source(source, ...)` any `FileSource` (the local CLI's directories).

- **Cache first.** For every file the engines that want it give cache keys (blob SHA, engine name,
  engine version); the cache answers them before any blob is read. Only the misses are read and
  sent to the pool, and their results (empty ones too) are put back. A re-scan of an unchanged
  repository reads no blob and makes no engine call (`PipelineResult.engine_calls`).
- A blob is scanned once per scan however many paths hold it.
- **Rules after the cache.** Engines report everything; each file's findings are fingerprinted, then
  the default profile with the repository's `.codepulse.yml` `rules:` applied decides what is kept,
  and one secret gets one finding (see `ruleset`).
- **Progress** and **cancel** are watched by a `Supervisor` (see `supervisor`). On cancel the
  pipeline stops reading and submitting, cancels its queued chunks, gives running chunks a moment,
  then kills the pool's workers; `ScanCancelled` is raised well within 2 s. The partial results
  are discarded (what already went to the cache stays: it is keyed by content and correct).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from collections import Counter, defaultdict
from collections.abc import Mapping
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Final

import structlog

from codepulse.config import Settings
from codepulse.scans import repoconfig, ruleset
from codepulse.scans.cache import CacheKey, ResultCache
from codepulse.scans.clone import clone
from codepulse.scans.engine import RawFinding, fingerprints
from codepulse.scans.errors import ScanFailure
from codepulse.scans.files import FileSource, IndexEntry, SkipRules
from codepulse.scans.git import GitTreeSource, current_branch, git_environment
from codepulse.scans.history import GitHistorySource
from codepulse.scans.pool import ChunkItem, ChunkResult, EnginePool
from codepulse.scans.results import LocatedFinding, PipelineResult
from codepulse.scans.scratch import scratch
from codepulse.scans.supervisor import CancelSignal, ProgressCallback, Supervisor

log = structlog.get_logger("codepulse.scans")

KILL_GRACE_SECONDS: Final = 0.3
"""On cancel, how long running chunks may finish before the pool's workers are killed."""
CHUNK_MAX_BYTES: Final = 512 * 1024
CHUNK_MAX_FILES: Final = 512
"""Small files go many to a chunk: a chunk's round trip to the pool costs as much as scanning
dozens of them (512 KB still bounds a chunk of larger files)."""
CACHE_BATCH: Final = 500
"""Keys per cache call (a database cache turns them into IN lists)."""
CHUNK_RETRIES: Final = 1
HISTORY_ENGINES: Final = frozenset({"secrets"})
"""The engines that read file versions the scanned commit no longer has: a secret stays leaked in
the history, while insecure code that is gone is gone (and would only be noise)."""
"""Times a chunk is submitted again when the pool broke under it (another scan's cancel)."""

Job = tuple[str, tuple[str, ...]]
"""(blob SHA, engine names): one blob through the engines that want it and had no cached result."""


# --- the pipeline ---------------------------------------------------------------------------------


@dataclass
class _Chunk:
    items: list[ChunkItem] = field(default_factory=list)
    groups: list[Job] = field(default_factory=list)
    """Per item: (blob SHA, engine names) of the job it runs."""
    size: int = 0
    attempts: int = 0


class _Pipeline:
    """One scan's run through the cache and the pool (built per scan: it holds the scan's state)."""

    def __init__(
        self,
        *,
        cache: ResultCache,
        pool: EnginePool,
        supervisor: Supervisor,
        max_file_bytes: int,
        max_repository_bytes: int | None,
        config_budget: float,
        limit_setting: str = "SCAN_MAX_REPOSITORY_BYTES",
    ) -> None:
        self.cache = cache
        self.config_budget = config_budget
        self.pool = pool
        self.supervisor = supervisor
        self.max_file_bytes = max_file_bytes
        self.max_repository_bytes = max_repository_bytes
        self.limit_setting = limit_setting
        self.running: dict[asyncio.Future[list[ChunkResult]], tuple[Future[list[ChunkResult]], _Chunk]] = {}
        self.versions: dict[str, str] = {}
        self.skipped: Counter[str] = Counter()
        self.warnings: list[str] = []
        self.results: dict[CacheKey, list[RawFinding]] = {}
        self.jobs: dict[Job, list[IndexEntry]] = defaultdict(list)
        self.content_skipped: dict[str, str] = {}
        """blob SHA -> the reason its content was not scanned"""
        self.failed: set[IndexEntry] = set()
        self.engine_calls = 0
        self.rules = ruleset.DEFAULT_RULES

    async def scan(self, source: FileSource) -> PipelineResult:
        self.supervisor.update(phase="indexing")
        rules = SkipRules(max_file_bytes=self.max_file_bytes)
        raw_config = await source.config()

        async def exclude(paths: list[str]) -> frozenset[int]:
            # The repository's own config: parsed and matched in the engine pool (hostile input).
            outcome = await repoconfig.exclusions(self.pool, raw_config, paths, self.config_budget)
            self.warnings.extend(outcome.warnings)
            self.rules = ruleset.DEFAULT_RULES.with_overrides(outcome.rules)
            return outcome.excluded

        index = await source.index(rules, exclude if raw_config is not None else None)
        if self.max_repository_bytes is not None and index.total_bytes > self.max_repository_bytes:
            raise ScanFailure(
                "repository_too_large",
                f"The repository's files add up to more than the {self.max_repository_bytes:,}-byte limit "
                f"({self.limit_setting}).",
            )
        self.skipped.update(index.skipped)
        self.versions = {name: engine.version for name, engine in self.pool.engines.items()}
        wanted = self._wanted(index.entries, index.past_versions)
        self.supervisor.update(
            phase="scanning",
            files_total=len(wanted),
            bytes_total=sum(entry.size for entry in wanted),
            files_done=0,
            bytes_done=0,
        )
        await self._read_cache(wanted)
        cache_hits = self._plan_jobs(wanted)
        try:
            await self._scan_misses(source, rules)
        except BaseException:
            await self._stop_running()
            raise
        findings, files_scanned, bytes_scanned = self._locate(wanted)
        return PipelineResult(
            commit_sha=index.commit_sha,
            findings=findings,
            files_total=index.files_total,
            files_scanned=files_scanned,
            bytes_scanned=bytes_scanned,
            skipped={reason: count for reason, count in sorted(self.skipped.items()) if count},
            cache_hits=cache_hits,
            engine_versions=self.versions,
            engine_calls=self.engine_calls,
            warnings=self.warnings,
        )

    def _key(self, blob_sha: str, name: str) -> CacheKey:
        return (blob_sha, name, self.versions[name])

    def _wanted(
        self, entries: list[IndexEntry], past_versions: frozenset[IndexEntry]
    ) -> dict[IndexEntry, tuple[str, ...]]:
        """Which engines want each file (files no engine wants are skipped)."""
        engines = self.pool.engines
        wanted: dict[IndexEntry, tuple[str, ...]] = {}
        for entry in entries:
            past = entry in past_versions
            names = tuple(
                sorted(
                    name
                    for name, engine in engines.items()
                    if (not past or name in HISTORY_ENGINES) and engine.wants(entry.path)
                )
            )
            if names:
                wanted[entry] = names
            else:
                self.skipped["no_engine"] += 1
        return wanted

    async def _read_cache(self, wanted: Mapping[IndexEntry, tuple[str, ...]]) -> None:
        """The cache's results, before any blob is read."""
        keys = sorted({self._key(entry.blob_sha, name) for entry, names in wanted.items() for name in names})
        for start in range(0, len(keys), CACHE_BATCH):
            self.results.update(await self.cache.get_many(keys[start : start + CACHE_BATCH]))

    def _plan_jobs(self, wanted: Mapping[IndexEntry, tuple[str, ...]]) -> int:
        """Group the files with cache misses into jobs (one per blob and missing engines); the
        number of files answered by the cache alone."""
        cache_hits = 0
        for entry, names in wanted.items():
            missing = tuple(name for name in names if self._key(entry.blob_sha, name) not in self.results)
            if missing:
                self.jobs[(entry.blob_sha, missing)].append(entry)
            else:
                cache_hits += 1
                self.supervisor.advance(1, entry.size)
        return cache_hits

    async def _scan_misses(self, source: FileSource, rules: SkipRules) -> None:
        """Read each job's blob once, check its content, and scan it in chunks."""
        job_of: dict[IndexEntry, Job] = {group[0]: key for key, group in self.jobs.items()}
        limit = max(2, 2 * self.pool.processes)
        chunk = _Chunk()
        async with contextlib.aclosing(source.read(list(job_of))) as contents:
            async for entry, content in contents:
                key = job_of[entry]
                group = self.jobs[key]
                reason = rules.content_reason(entry.path, content)
                if reason is not None:
                    self.content_skipped[entry.blob_sha] = reason
                    self.skipped[reason] += len(group)
                    self.supervisor.advance(len(group), sum(item.size for item in group))
                    continue
                self.engine_calls += len(key[1])
                chunk.items.append((key[1], entry.path, content))
                chunk.groups.append(key)
                chunk.size += len(content)
                if chunk.size >= CHUNK_MAX_BYTES or len(chunk.items) >= CHUNK_MAX_FILES:
                    self._submit(chunk)
                    chunk = _Chunk()
                    while len(self.running) >= limit:
                        await self._collect()
        if chunk.items:
            self._submit(chunk)
        while self.running:
            await self._collect()

    def _locate(self, wanted: Mapping[IndexEntry, tuple[str, ...]]) -> tuple[list[LocatedFinding], int, int]:
        """Every scanned file's findings, located and fingerprinted (before the rules are applied:
        a rule turned on or off moves no other finding's fingerprint); files and bytes scanned."""
        findings: list[LocatedFinding] = []
        files_scanned = 0
        bytes_scanned = 0
        for entry, names in wanted.items():
            raw = self._file_findings(entry, names)
            if raw is None:
                continue
            files_scanned += 1
            bytes_scanned += entry.size
            if not raw:  # most files: nothing to locate
                continue
            raw.sort(key=lambda f: (f.start_line, f.start_column, f.engine, f.rule_id))
            located = [
                LocatedFinding(path=entry.path, finding=finding, fingerprint=fingerprint, blob_sha=entry.blob_sha)
                for finding, fingerprint in zip(raw, fingerprints(entry.path, raw), strict=True)
            ]
            findings.extend(ruleset.one_finding_per_secret(self.rules.apply(located)))
        findings.sort(key=lambda f: (f.path, f.start_line, f.start_column, f.rule_id))
        return findings, files_scanned, bytes_scanned

    def _file_findings(self, entry: IndexEntry, names: tuple[str, ...]) -> list[RawFinding] | None:
        """A file's findings from every engine that wants it; None when it was not fully scanned."""
        if entry.blob_sha in self.content_skipped or entry in self.failed:
            return None
        raw: list[RawFinding] = []
        for name in names:
            found = self.results.get(self._key(entry.blob_sha, name))
            if found is None:
                return None
            raw.extend(found)
        return raw

    def _submit(self, chunk: _Chunk) -> None:
        chunk.attempts += 1
        future = self.pool.submit(chunk.items)
        self.running[asyncio.wrap_future(future)] = (future, chunk)

    async def _collect(self) -> None:
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
                group = self.jobs[key]
                self.supervisor.advance(len(group), sum(entry.size for entry in group))
                if isinstance(result, str):
                    self.failed.update(group)
                    self.warnings.append(f"engine error on {group[0].path}: {result}")
                    log.warning("scan.engine_error", path=group[0].path, error=result)
                    continue
                for name in names:
                    fresh[self._key(blob_sha, name)] = list(result.get(name, []))
            if fresh:
                self.results.update(fresh)
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
    supervisor = Supervisor(progress, cancelled)
    return await _scan(source, settings, cache, pool, supervisor, max_repository_bytes)


async def _scan(
    source: FileSource,
    settings: Settings,
    cache: ResultCache,
    pool: EnginePool,
    supervisor: Supervisor,
    max_repository_bytes: int | None,
    limit_setting: str = "SCAN_MAX_REPOSITORY_BYTES",
) -> PipelineResult:
    pipeline = _Pipeline(
        cache=cache,
        pool=pool,
        supervisor=supervisor,
        max_file_bytes=settings.SCAN_MAX_FILE_BYTES,
        max_repository_bytes=max_repository_bytes,
        config_budget=settings.SCAN_CONFIG_TIME_BUDGET_SECONDS,
        limit_setting=limit_setting,
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
    history: bool = False,
) -> PipelineResult:
    """Clone `url` at `ref` into a private temporary directory and scan it; the directory is
    removed whatever happens (or swept at the next start after a crash, see `scratch`). The URL
    must have been validated by the caller (the repositories domain's `validate_clone_url`, whose
    addresses go in `resolve`). Raises ScanFailure or ScanCancelled.

    `history`: clone the ref's whole history and scan every file version reachable from it
    (`GitHistorySource`), up to SCAN_MAX_HISTORY_BYTES of versions; the findings are one per
    fingerprint, each with the commit that introduced it and whether the ref's commit has it."""
    supervisor = Supervisor(progress, cancelled)
    supervisor.update(phase="cloning")
    # Mode 0700, under this process's scratch directory: swept at the next start if we are killed.
    workdir = await asyncio.to_thread(scratch(settings.SCAN_WORK_DIR).mkdtemp, "scan-")
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
                history=history,
            )
        )
        if not history:
            result = await _scan(
                GitTreeSource(checkout), settings, cache, pool, supervisor, settings.SCAN_MAX_REPOSITORY_BYTES
            )
        else:
            source = GitHistorySource(checkout, env=git_environment(None))
            result = await _scan(
                source, settings, cache, pool, supervisor, settings.SCAN_MAX_HISTORY_BYTES, "SCAN_MAX_HISTORY_BYTES"
            )
            result.findings = source.located(result.findings)
        if ref is None:
            result.default_branch = await current_branch(checkout, env=git_environment(None))
        return result
    finally:
        await asyncio.to_thread(shutil.rmtree, workdir, True)
