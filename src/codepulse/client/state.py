"""What `codepulse sync` remembers between runs: per log file, how far it was read.

The state is one JSON file in the user's state directory, replaced atomically (written beside it,
flushed, renamed over it), so a run killed mid-write leaves the previous state whole. A run holds
`sync.lock` (filelock: an OS lock, released when the process dies) for its whole length, so two
concurrent runs never interleave their reads and writes of the state.

Per file: the byte offset read up to, the file's identity (device and inode) and size then, and
what a source needs to go on reading (Codex's session, model and totals). A file that shrank or
was replaced (another inode) is read again from the start: the server's dedup makes that safe.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

STATE_FILE = "sync-state.json"
LOCK_FILE = "sync.lock"
VERSION = 1


class SyncAlreadyRunning(Exception):
    """Another `codepulse sync` holds the state directory's lock."""


@dataclass
class FileState:
    offset: int = 0
    size: int = 0
    device: int = 0
    inode: int = 0
    # A source's own reading state (Codex: session, model, totals); JSON values only.
    extra: dict[str, Any] = field(default_factory=dict)

    def start_for(self, stat: os.stat_result) -> int:
        """Where to read on from: the offset, or 0 when the file is another one or shrank."""
        same_file = (self.device, self.inode) == (stat.st_dev, stat.st_ino)
        return self.offset if same_file and stat.st_size >= self.offset else 0


@dataclass
class SyncState:
    files: dict[str, dict[str, FileState]] = field(default_factory=dict)  # source -> path -> state
    last_sync: dict[str, str] = field(default_factory=dict)  # source -> ISO time of its last sync

    def file(self, source: str, path: Path) -> FileState:
        return self.files.get(source, {}).get(str(path), FileState())

    def remember(self, source: str, path: Path, state: FileState) -> None:
        self.files.setdefault(source, {})[str(path)] = state

    @classmethod
    def load(cls, directory: Path) -> SyncState:
        """The saved state; an empty one when there is none or it cannot be read (a run then reads
        everything again, which the server's dedup absorbs)."""
        try:
            raw = json.loads((directory / STATE_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return cls()
        if not isinstance(raw, dict) or raw.get("version") != VERSION:
            return cls()
        files = {
            source: {path: FileState(**entry) for path, entry in paths.items()}
            for source, paths in raw.get("files", {}).items()
        }
        return cls(files=files, last_sync=dict(raw.get("last_sync", {})))

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        document = {
            "version": VERSION,
            "files": {
                source: {path: asdict(entry) for path, entry in paths.items()} for source, paths in self.files.items()
            },
            "last_sync": self.last_sync,
        }
        import tempfile  # here: only a sync that uploaded saves the state

        descriptor, temporary = tempfile.mkstemp(prefix=".sync-state-", dir=directory)
        try:
            with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
                json.dump(document, handle, separators=(",", ":"))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, directory / STATE_FILE)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise


@contextmanager
def sync_lock(directory: Path, *, wait_seconds: float = 0) -> Iterator[None]:
    """Hold the state directory's lock; SyncAlreadyRunning when another run holds it longer than
    `wait_seconds`."""
    from filelock import FileLock, Timeout  # here: a dry run takes no lock, and starts faster

    directory.mkdir(parents=True, exist_ok=True)
    lock = FileLock(directory / LOCK_FILE)
    try:
        lock.acquire(timeout=wait_seconds)
    except Timeout:
        raise SyncAlreadyRunning(f"another codepulse sync is running (lock {directory / LOCK_FILE})") from None
    try:
        yield
    finally:
        lock.release()
