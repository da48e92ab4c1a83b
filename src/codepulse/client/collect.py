"""One pass over the local logs: find each source's files, read what is new in each since the
saved state, parse it, and keep every record once (`RecordSet`).

`collect(...)` returns the records, per-source figures (the `--dry-run --json` shape), malformed
lines, files that could not be read, and the state to save once the records are uploaded (a run
that fails to upload saves nothing, so the next one reads the same bytes again).
"""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from codepulse.client.records import RecordSet, UsageRecord, decode_records, encode_records
from codepulse.client.sources import (
    ParsedChunk,
    aider,
    claude_code,
    cline,
    codex,
    continue_dev,
    factory_droid,
    gemini_cli,
    kilo_code,
    opencode,
    roo_code,
)
from codepulse.client.state import FileState, SyncState

# (the chunk's records, the source's reading state after it)
Read = tuple[ParsedChunk, dict[str, Any]]
# (the bytes read, the file, the source's saved reading state, whether it is read from the start)
Reader = Callable[[bytes, Path, dict[str, Any], bool], Read]

# Below this many bytes to read, a pool's start-up costs more than it saves.
POOL_THRESHOLD_BYTES = 64 * 2**20
PROCESSES_VARIABLE = "CODEPULSE_PARSE_PROCESSES"


def _read_codex(data: bytes, path: Path, extra: dict[str, Any], fresh: bool) -> Read:
    state = codex.initial_state(path) if fresh or not extra else codex.CodexState(**extra)
    return codex.parse_chunk(data, state), asdict(state)


def _read_gemini_cli(
    data: bytes, path: Path, _extra: dict[str, Any], _fresh: bool
) -> tuple[ParsedChunk, dict[str, Any]]:
    return gemini_cli.parse_document(data, lines=path.suffix == ".jsonl"), {}


@dataclass(frozen=True)
class Source:
    name: str
    log_files: Callable[[Mapping[str, str], Path | None], list[Path]]
    read: Reader | None = None
    # Rewritten rather than appended to: read whole every time it changed.
    whole_file: bool = False
    # A database (SQLite) or other file the reader opens itself: it is handed no bytes (`b""`).
    opens_file: bool = False
    # An append-only log the source reads itself from an offset (memory-mapped: no copy).
    read_from: Callable[[Path, int], ParsedChunk] | None = None
    # For a whole file: whether it is as last read, judged from its saved reading state (a file
    # rewritten in place at the same size, a database whose new rows are in its -wal file). By
    # default: the same size and inode.
    unchanged: Callable[[Path, dict[str, Any]], bool] | None = None

    def as_last_read(self, path: Path, known: FileState, stat: os.stat_result) -> bool:
        if not known.offset:
            return False
        if self.unchanged is not None:
            return self.unchanged(path, known.extra)
        return (known.size, known.inode) == (stat.st_size, stat.st_ino)


SOURCES: dict[str, Source] = {
    source.name: source
    for source in (  # in SOURCE_NAMES' order
        Source(claude_code.NAME, claude_code.log_files, read_from=claude_code.read_file),
        Source(codex.NAME, codex.log_files, _read_codex),
        Source(gemini_cli.NAME, gemini_cli.log_files, _read_gemini_cli, whole_file=True),
        Source(cline.NAME, cline.log_files, cline.read, whole_file=True),
        Source(roo_code.NAME, roo_code.log_files, roo_code.read, whole_file=True),
        Source(kilo_code.NAME, kilo_code.log_files, kilo_code.read, whole_file=True),
        Source(continue_dev.NAME, continue_dev.log_files, continue_dev.read),
        Source(
            opencode.NAME,
            opencode.log_files,
            opencode.read,
            whole_file=True,
            opens_file=True,
            unchanged=opencode.unchanged,
        ),
        Source(
            factory_droid.NAME,
            factory_droid.log_files,
            factory_droid.read,
            whole_file=True,
            unchanged=factory_droid.unchanged,
        ),
        Source(aider.NAME, aider.log_files, aider.read),
    )
}


@dataclass
class SourceFigures:
    files: int = 0
    records: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_tokens: int = 0  # 5-minute + 1-hour writes
    cache_read_tokens: int = 0
    reasoning_tokens: int = 0


@dataclass
class Collection:
    records: RecordSet = field(default_factory=RecordSet)
    figures: dict[str, SourceFigures] = field(default_factory=dict)
    malformed: dict[str, int] = field(default_factory=dict)
    unreadable: list[tuple[Path, str]] = field(default_factory=list)
    state: SyncState = field(default_factory=SyncState)  # to save after a successful upload

    def summary(self) -> dict[str, Any]:
        """`{"sources": {NAME: {"files", "records", "input_tokens", ...}}}`."""
        return {"sources": {name: asdict(figures) for name, figures in self.figures.items()}}


def _read_new_bytes(path: Path, start: int) -> bytes:
    with path.open("rb") as handle:
        handle.seek(start)
        return handle.read()


def _on_or_after(since: datetime) -> Callable[[UsageRecord], bool]:
    def keep(record: UsageRecord) -> bool:
        try:
            moment = datetime.fromisoformat(record.timestamp)
        except ValueError:
            return True  # the server judges (and rejects) a bad timestamp
        return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)) >= since

    return keep


@dataclass(frozen=True)
class FileTask:
    """One file to read: from where, and what the source remembered of it."""

    source: str
    path: Path
    start: int
    extra: dict[str, Any]
    size: int
    device: int
    inode: int


@dataclass
class FileRead:
    records: list[UsageRecord] = field(default_factory=list)
    found: int = 0  # records in the file (a pool's worker sends its records separately)
    malformed: int = 0
    consumed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    error: str | None = None  # why the file could not be read


def read_task(task: FileTask) -> FileRead:
    """Reads one file (in this process or a pool's)."""
    source = SOURCES[task.source]
    extra: dict[str, Any] = {}
    try:
        if source.read_from is not None:
            chunk = source.read_from(task.path, task.start)
        elif source.read is not None:
            data = b"" if source.opens_file else _read_new_bytes(task.path, task.start)
            # A reader that opens the file itself reports a file it cannot read as OSError.
            chunk, extra = source.read(data, task.path, task.extra, task.start == 0)
        else:
            raise TypeError(f"source {source.name} has no reader")
    except OSError as error:
        return FileRead(error=error.strerror or str(error) or type(error).__name__)
    return FileRead(
        records=chunk.records,
        found=len(chunk.records),
        malformed=chunk.malformed,
        consumed=chunk.consumed,
        extra=extra,
    )


def parse_processes(environ: Mapping[str, str], pending_bytes: int) -> int:
    """`CODEPULSE_PARSE_PROCESSES` when set, else one per usable core (at most 4) for a large read."""
    configured = environ.get(PROCESSES_VARIABLE, "").strip()
    if configured.isdigit() and int(configured) > 0:
        return int(configured)
    if pending_bytes < POOL_THRESHOLD_BYTES:
        return 1
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(usable, 4))


Progress = Callable[[FileTask, FileRead], None]


def _read_all(tasks: list[FileTask], processes: int, progress: Progress | None) -> list[FileRead]:
    """Every task's read, in the tasks' order (so a run's result does not depend on the pool)."""
    if processes <= 1 or len(tasks) <= 1:
        in_order = []
        for task in tasks:
            in_order.append(read_task(task))
            if progress is not None:
                progress(task, in_order[-1])
        return in_order
    return _Pool(tasks, min(processes, len(tasks)), progress).read_all()


class _Pool:
    """This process and `processes - 1` workers take the files one at a time, largest first, from
    a shared position: whoever is free takes the next, so all finish together however the sizes
    fall (a fixed share per process left one idle for a quarter of the run). This process reads
    too: on two cores, two workers and a parent decoding their results would compete for them.

    Each worker sends every file's figures as it reads it, then its records once at its end (a
    response repeated across its files is one record), as MessagePack (a fraction of pickle's
    cost). A worker that dies is noticed by its process sentinel, and this process reads its files
    again itself."""

    def __init__(self, tasks: list[FileTask], processes: int, progress: Progress | None) -> None:
        import multiprocessing

        self.tasks, self.progress = tasks, progress
        self.order = sorted(range(len(tasks)), key=lambda index: tasks[index].size - tasks[index].start, reverse=True)
        # fork starts a worker in milliseconds; elsewhere (macOS, Windows) only spawn is safe.
        context = (
            multiprocessing.get_context("fork") if sys.platform == "linux" else multiprocessing.get_context("spawn")
        )
        self.next_position = context.Value("q", 0)
        self.reads: dict[int, FileRead] = {}
        self.workers: list[_Worker] = []
        for _ in range(processes - 1):
            receiver, sender = context.Pipe(duplex=False)
            process = context.Process(target=_work, args=(tasks, self.order, self.next_position, sender), daemon=True)
            process.start()
            sender.close()  # the worker holds the only sending end: its exit ends the pipe
            self.workers.append(_Worker(process, receiver))

    def read_all(self) -> list[FileRead]:
        from multiprocessing.connection import wait

        try:
            while (index := _take(self.order, self.next_position)) is not None:
                self._heard(index, read_task(self.tasks[index]))
                self._hear(wait([worker.receiver for worker in self._listening()], timeout=0))
            while listening := self._listening():
                self._hear(wait([worker.receiver for worker in listening]))
        finally:
            for worker in self.workers:
                worker.process.join(timeout=5)
                if worker.process.is_alive():
                    worker.process.kill()
                worker.receiver.close()
        for worker in self.workers:
            if worker.records is None:  # died: its records went with it
                for index in worker.indexes:
                    self.reads[index] = read_task(self.tasks[index])
        for index in range(len(self.tasks)):  # taken by a worker that died before reporting it
            if index not in self.reads:
                self._heard(index, read_task(self.tasks[index]))
        for worker in self.workers:
            if worker.records and worker.indexes:
                self.reads[worker.indexes[0]].records = worker.records
        return [self.reads[index] for index in range(len(self.tasks))]

    def _listening(self) -> list[_Worker]:
        return [worker for worker in self.workers if not worker.finished]

    def _hear(self, ready: list[Any]) -> None:
        for worker in self.workers:
            if worker.receiver not in ready:
                continue
            try:
                message = worker.receiver.recv()
            except EOFError:  # exited: after its records, or died before them
                worker.finished = True
                continue
            if isinstance(message, bytes):
                worker.records = decode_records(message)
            else:
                index, read = message
                worker.indexes.append(index)
                self._heard(index, read)

    def _heard(self, index: int, read: FileRead) -> None:
        self.reads[index] = read
        if self.progress is not None:
            self.progress(self.tasks[index], read)


@dataclass
class _Worker:
    process: Any
    receiver: Any
    indexes: list[int] = field(default_factory=list)  # the files it read, as it reported them
    records: list[UsageRecord] | None = None  # sent once at its end
    finished: bool = False


def _take(order: list[int], next_position: Any) -> int | None:
    """The next file to read (its index in the tasks), or None when every one is taken."""
    with next_position.get_lock():
        position: int = next_position.value
        if position >= len(order):
            return None
        next_position.value = position + 1
    return order[position]


def _work(tasks: list[FileTask], order: list[int], next_position: Any, sender: Any) -> None:
    """A pool worker: files until none is left, each one's figures sent as it is read, then its
    records, each once."""
    once = RecordSet()
    while (index := _take(order, next_position)) is not None:
        read = read_task(tasks[index])
        once.extend(read.records)
        read.records = []
        sender.send((index, read))
    sender.send(encode_records(once))
    sender.close()


@contextmanager
def _collector_paused() -> Iterator[None]:
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


def collect(
    sources: Iterable[str],
    state: SyncState,
    environ: Mapping[str, str] = os.environ,
    home: Path | None = None,
    *,
    since: datetime | None = None,
    progress: Progress | None = None,
    on_files: Callable[[list[FileTask]], None] | None = None,
) -> Collection:
    """`since`: only records from then on (the files are still read, and marked read, whole).
    `on_files` hears the files about to be read, `progress` each one once read."""
    keep = _on_or_after(since) if since is not None else None
    collection = Collection(
        state=SyncState(files={k: dict(v) for k, v in state.files.items()}, last_sync=dict(state.last_sync))
    )
    tasks: list[FileTask] = []
    for name in sources:
        source = SOURCES[name]
        figures = collection.figures.setdefault(name, SourceFigures())
        for path in source.log_files(environ, home):
            figures.files += 1
            try:
                stat = path.stat()
            except OSError as error:
                collection.unreadable.append((path, error.strerror or type(error).__name__))
                continue
            known = state.file(name, path)
            if source.whole_file and source.as_last_read(path, known, stat):
                continue
            start = 0 if source.whole_file else known.start_for(stat)
            if start and start == stat.st_size:
                continue  # nothing appended since: the saved state already says so
            tasks.append(FileTask(name, path, start, known.extra, stat.st_size, stat.st_dev, stat.st_ino))
    if on_files is not None:
        on_files(tasks)
    processes = parse_processes(environ, sum(task.size - task.start for task in tasks))
    # A large tree makes hundreds of thousands of records and keys, none in a reference cycle:
    # the collector's passes over them would only cost time (a pool's workers inherit this).
    with _collector_paused():
        reads = _read_all(tasks, processes, progress)
        for task, read in zip(tasks, reads, strict=True):
            if read.error is not None:
                collection.unreadable.append((task.path, read.error))
                continue
            collection.records.extend(read.records if keep is None else filter(keep, read.records))
            if read.malformed:
                collection.malformed[task.source] = collection.malformed.get(task.source, 0) + read.malformed
            collection.state.remember(
                task.source,
                task.path,
                FileState(
                    offset=task.start + read.consumed,
                    size=task.size,
                    device=task.device,
                    inode=task.inode,
                    extra=read.extra,
                ),
            )
    by_source: dict[str, list[UsageRecord]] = {}
    for record in collection.records:
        by_source.setdefault(record.source, []).append(record)
    for name, records in by_source.items():
        figures = collection.figures[name]
        figures.records = len(records)
        figures.input_tokens = sum(record.input_tokens for record in records)
        figures.output_tokens = sum(record.output_tokens for record in records)
        figures.cache_creation_tokens = sum(
            record.cache_creation_5m_tokens + record.cache_creation_1h_tokens for record in records
        )
        figures.cache_read_tokens = sum(record.cache_read_tokens for record in records)
        figures.reasoning_tokens = sum(record.reasoning_tokens for record in records)
    return collection


@dataclass
class Pending:
    files: int = 0
    bytes: int = 0


def pending(
    sources: Iterable[str], state: SyncState, environ: Mapping[str, str] = os.environ, home: Path | None = None
) -> dict[str, Pending]:
    """Per source: the files with bytes not read yet, and how many bytes (nothing is parsed)."""
    found: dict[str, Pending] = {}
    for name in sources:
        source = SOURCES[name]
        waiting = found.setdefault(name, Pending())
        for path in source.log_files(environ, home):
            try:
                stat = path.stat()
            except OSError:
                continue
            known = state.file(name, path)
            if source.whole_file:
                unread = 0 if source.as_last_read(path, known, stat) else stat.st_size
            else:
                unread = stat.st_size - known.start_for(stat)
            if unread > 0:
                waiting.files += 1
                waiting.bytes += unread
    return found
