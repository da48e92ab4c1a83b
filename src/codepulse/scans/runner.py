"""The worker side of a scan: the `scans.run` task handler.

`ScanRunner.run(scan_id)`:
1. marks the scan running (nothing to do when it is gone, finished or canceled);
2. re-validates the repository's clone URL with the repositories domain's rules (DNS can change
   since the URL was accepted) and, for a private GitHub repository, takes the token of the
   credential bound to it, once the database (still a member, binding intact) and then GitHub
   (the account still reaches that repository) agree: else it fails with
   `repository_credentials_missing` and git never sees a token;
3. runs the pipeline (`scan_repository`: clone, index, cached results, engine pool), writing
   progress at most every 250 ms and watching the scan row for a cancel (every 0.5 s);
4. saves everything in ONE transaction (`lifecycle.complete_scan`: what the scan saw, the findings'
   lifecycle, counts, `succeeded`, the repository's summary).

A `ScanFailure` (clone failed, ref not found, repository too large, ...) fails the scan with its
code and message; the task itself succeeds (retrying would fail the same way). A cancel marks the
scan canceled and keeps none of its results. Any other error is retried by the queue; the last
attempt fails the scan with `internal_error` so it never stays `running`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence

import structlog

from codepulse import __version__
from codepulse.clock import ClockFunc, utcnow
from codepulse.config import Settings
from codepulse.db import Database
from codepulse.errors import ValidationFailed
from codepulse.integrations.github import GitHubClient
from codepulse.repositories import service as repositories_service
from codepulse.repositories.urls import Resolver, system_resolver
from codepulse.scans import lifecycle, ruleset
from codepulse.scans.cache import CacheKey
from codepulse.scans.clone import remote_commit
from codepulse.scans.engine import RawFinding
from codepulse.scans.errors import ScanCancelled, ScanFailure
from codepulse.scans.models import Scan, ScanMode
from codepulse.scans.pipeline import HISTORY_ENGINES, scan_repository
from codepulse.scans.pool import EnginePool
from codepulse.scans.repository import ScanRepository
from codepulse.scans.results import PipelineResult
from codepulse.scans.scratch import close_scratches, scratch
from codepulse.scans.supervisor import CANCEL_POLL_SECONDS, PROGRESS_INTERVAL_SECONDS, Progress
from codepulse.security import SecretBox
from codepulse.tasks import PermanentTaskError, TaskContext

log = structlog.get_logger("codepulse.scans")

ScanFunction = Callable[..., Awaitable["PipelineResult"]]
"""`codepulse.scans.pipeline.scan_repository`'s signature (tests wrap it)."""


class DatabaseResultCache:
    """The pipeline's `ResultCache` over the database: engine results per (organization, blob SHA,
    engine, engine version), in short transactions of their own (never the scan's)."""

    def __init__(self, database: Database, org_id: uuid.UUID, clock: ClockFunc = utcnow) -> None:
        self.database = database
        self.org_id = org_id
        self.clock = clock

    async def get_many(self, keys: Sequence[CacheKey]) -> dict[CacheKey, list[RawFinding]]:
        if not keys:
            return {}
        async with self.database.transaction(write=False) as session:
            stored = await ScanRepository(session).cached_results(self.org_id, keys)
        found: dict[CacheKey, list[RawFinding]] = {}
        for key, items in stored.items():
            try:
                found[key] = [RawFinding(**item) for item in items]
            except TypeError:  # stored by another shape of RawFinding: a miss, analysed again
                continue
        return found

    async def put_many(self, items: Mapping[CacheKey, Sequence[RawFinding]]) -> None:
        if not items:
            return
        values = {key: [dataclasses.asdict(finding) for finding in findings] for key, findings in items.items()}
        async with self.database.transaction() as session:
            await ScanRepository(session).store_results(self.org_id, values, self.clock())


_shared_pool: EnginePool | None = None


def shared_pool(settings: Settings) -> EnginePool:
    """This process's engine pool (started lazily at the first scan, shared by its scans)."""
    global _shared_pool
    if _shared_pool is None:
        _shared_pool = EnginePool.from_settings(settings)
    return _shared_pool


def close_shared_pool() -> None:
    """Stop this process's engine pool now: its workers are terminated and waited for (at
    shutdown, after the task workers stopped; the next scan would start a new pool)."""
    global _shared_pool
    pool, _shared_pool = _shared_pool, None
    if pool is not None:
        pool.terminate()


def prepare_process(settings: Settings) -> int:
    """At the start of a process that runs scans (`serve`, `worker`): sweep the clone directories
    of processes that are gone (killed before they could remove them). Blocking: run in a thread."""
    return scratch(settings.SCAN_WORK_DIR).sweep()


def release_process() -> None:
    """At shutdown: the engine pool's processes stopped, this process's clone directory removed.
    Blocking: run in a thread."""
    close_shared_pool()
    close_scratches()


class ScanRunner:
    """Runs scans for a worker. `scan` (default: the pipeline's `scan_repository`) and `pool`
    (default: the process's shared pool) are injectable for tests."""

    def __init__(
        self,
        database: Database,
        settings: Settings,
        *,
        clock: ClockFunc = utcnow,
        pool: EnginePool | None = None,
        scan: ScanFunction | None = None,
        resolver: Resolver = system_resolver,
        github: GitHubClient | None = None,
    ) -> None:
        self.database = database
        self.settings = settings
        self.clock = clock
        self._pool = pool
        self._scan = scan
        self.resolver = resolver
        self.box = SecretBox(settings.secret_key)
        self.github = github if github is not None else GitHubClient(settings)

    @property
    def pool(self) -> EnginePool:
        if self._pool is None:
            self._pool = shared_pool(self.settings)
        return self._pool

    async def run(self, scan_id: uuid.UUID, *, last_attempt: bool = True) -> str:
        """Run one scan; its outcome: succeeded, failed, canceled, or skipped (nothing to run)."""
        try:
            return await self._run(scan_id)
        except (asyncio.CancelledError, KeyboardInterrupt):
            raise  # worker shutdown: the queue re-runs the task
        except Exception as error:
            if last_attempt:
                log.exception("scan.crashed", scan_id=str(scan_id))
                async with self.database.transaction() as session:
                    await lifecycle.fail_scan(
                        session, scan_id, "internal_error", "The scan failed unexpectedly.", self.clock()
                    )
                return "failed"
            log.warning("scan.retrying", scan_id=str(scan_id), error=type(error).__name__)
            raise

    async def _run(self, scan_id: uuid.UUID) -> str:
        async with self.database.transaction() as session:
            scan = await lifecycle.begin_run(session, scan_id, self.clock())
            if scan is None:
                log.info("scan.skipped", scan_id=str(scan_id))
                return "skipped"
            repository = await repositories_service.get_repository(session, scan.repository_id)
            if repository is None:  # pragma: no cover - deleting a repository deletes its scans
                return "skipped"
            credential: repositories_service.CloneCredential | repositories_service.CredentialRefused | None
            try:
                credential = await repositories_service.clone_credential(session, repository, self.settings, self.box)
            except repositories_service.CredentialRefused as refused:
                credential = refused  # failed below, after this transaction marked it running
        if isinstance(credential, repositories_service.CredentialRefused):
            return await self._fail(scan_id, credential.code, credential.message)
        log.info("scan.started", scan_id=str(scan_id), repository_id=str(repository.id), ref=scan.ref)
        try:
            checked = await repositories_service.validate_clone_url(
                repository.clone_url, self.settings, resolver=self.resolver
            )
            if credential is not None:
                await repositories_service.verify_clone_credential(credential, repository, self.settings, self.github)
        except ValidationFailed as refused:
            code = refused.errors[0].code if refused.errors else "invalid_clone_url"
            return await self._fail(scan_id, code, refused.detail or "The clone URL was refused.")
        except repositories_service.CredentialRefused as refused:
            return await self._fail(scan_id, refused.code, refused.message)
        token = credential.token if credential is not None else None

        cancelled = asyncio.Event()
        watcher = asyncio.create_task(self._watch_cancel(scan_id, cancelled), name=f"scan-cancel:{scan_id}")
        progress = _ProgressWriter(self.database, scan_id)
        history = scan.mode == ScanMode.HISTORY.value
        signature = self.pipeline_signature(history=history)
        try:
            result = await self._unchanged_result(scan, checked.url.url, token, checked.addresses, signature)
            if result is None:
                result = await self._scan_function()(
                    checked.url.url,
                    scan.ref,
                    settings=self.settings,
                    cache=DatabaseResultCache(self.database, scan.org_id, self.clock),
                    progress=progress,
                    cancelled=cancelled,
                    pool=self.pool,
                    token=token,
                    resolve=checked.addresses,
                    history=history,
                )
        except ScanCancelled:
            return await self._canceled(scan_id)
        except ScanFailure as failure:
            return await self._fail(scan_id, failure.code, failure.message)
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        await progress.flush_phase("saving")
        async with self.database.transaction() as session:
            saved = await lifecycle.complete_scan(session, scan_id, result, self.clock(), pipeline_signature=signature)
        if saved is None:  # a cancel arrived while it finished: nothing is kept
            return await self._canceled(scan_id)
        return "succeeded"

    def pipeline_signature(self, *, history: bool = False) -> str:
        """What a scan's results depend on besides the commit: the engines' versions (each with
        its ruleset's hash), the default profile of rules, the settings that decide which files
        are read, codepulse's version (skip rules, fingerprints), and whether the history is read.
        A repository's own rule overrides are in `.codepulse.yml`, read from the commit: a changed
        file is a new commit."""
        parts: dict[str, object] = {
            "codepulse": __version__,
            "engines": {name: engine.version for name, engine in sorted(self.pool.engines.items())},
            "max_file_bytes": self.settings.SCAN_MAX_FILE_BYTES,
            "profile": ruleset.DEFAULT_RULES.describe(),
        }
        if history:
            # Only here: the signatures of scans of one commit stay what they were.
            parts["history"] = {"engines": sorted(HISTORY_ENGINES), "max_bytes": self.settings.SCAN_MAX_HISTORY_BYTES}
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()

    async def _unchanged_result(
        self, scan: Scan, url: str, token: str | None, addresses: tuple[str, ...], signature: str
    ) -> PipelineResult | None:
        """An earlier scan's results when the remote still points at the commit it scanned with
        the same pipeline: one `git ls-remote` instead of a clone. Injected scan functions (tests)
        always run."""
        if self._scan is not None:
            return None
        commit = await remote_commit(url, scan.ref, settings=self.settings, token=token, resolve=addresses)
        if commit is None:
            return None
        async with self.database.transaction(write=False) as session:
            return await lifecycle.reusable_result(session, scan, commit, signature)

    def _scan_function(self) -> ScanFunction:
        if self._scan is not None:
            return self._scan
        return scan_repository

    async def _watch_cancel(self, scan_id: uuid.UUID, cancelled: asyncio.Event) -> None:
        while not cancelled.is_set():
            await asyncio.sleep(CANCEL_POLL_SECONDS)
            try:
                async with self.database.transaction(write=False) as session:
                    requested = await lifecycle.cancel_requested(session, scan_id)
            except Exception:  # a database hiccup must not end the watch: ask again next round
                log.warning("scan.cancel_check_failed", scan_id=str(scan_id), exc_info=True)
                continue
            if requested:
                log.info("scan.cancel_noticed", scan_id=str(scan_id))
                cancelled.set()

    async def _fail(self, scan_id: uuid.UUID, code: str, message: str) -> str:
        async with self.database.transaction() as session:
            done = await lifecycle.fail_scan(session, scan_id, code, message, self.clock())
        return "failed" if done else "skipped"

    async def _canceled(self, scan_id: uuid.UUID) -> str:
        async with self.database.transaction() as session:
            done = await lifecycle.finish_canceled(session, scan_id, self.clock())
        # Not done: another run of the same scan (a re-claimed task) settled it first.
        return "canceled" if done else "skipped"


class _ProgressWriter:
    """The pipeline's progress callback: writes to the scan row at most every 250 ms (a phase
    change is written at once)."""

    def __init__(self, database: Database, scan_id: uuid.UUID) -> None:
        self.database = database
        self.scan_id = scan_id
        self._written_at = 0.0
        self._phase: str | None = None
        self._counts = (0, 0, 0, 0)

    async def __call__(self, progress: Progress) -> None:
        self._counts = (progress.files_total, progress.files_done, progress.bytes_total, progress.bytes_done)
        now = time.monotonic()
        phase = str(progress.phase)
        if phase == self._phase and now - self._written_at < PROGRESS_INTERVAL_SECONDS:
            return
        self._phase, self._written_at = phase, now
        await self._write(phase)

    async def flush_phase(self, phase: str) -> None:
        await self._write(phase)

    async def _write(self, phase: str) -> None:
        files_total, files_done, bytes_total, bytes_done = self._counts
        async with self.database.transaction() as session:
            await lifecycle.save_progress(
                session,
                self.scan_id,
                phase=phase,
                files_total=files_total,
                files_done=files_done,
                bytes_total=bytes_total,
                bytes_done=bytes_done,
            )


async def run_scan_task(context: TaskContext) -> None:
    """The `scans.run` task handler: payload {"scan_id": "..."}."""
    try:
        scan_id = uuid.UUID(str(context.payload["scan_id"]))
    except (KeyError, ValueError):
        raise PermanentTaskError("scans.run needs a scan_id") from None
    runner = ScanRunner(context.database, context.settings, clock=context.clock)
    await runner.run(scan_id, last_attempt=context.attempt >= context.settings.TASK_MAX_ATTEMPTS)
