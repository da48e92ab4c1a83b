"""Where clones go: one directory per process under one root, swept when its process is gone.

A clone may be private code, and a process killed with SIGKILL (or out of memory) cannot remove
what it was cloning. So every process puts its clones (and git's scratch HOME) under a directory
of its own, `<root>/<pid>-<random>/`, next to a lock file `<root>/<pid>-<random>.lock` it holds an
exclusive `flock` on while it lives. The kernel drops that lock when the process dies, however it
dies. `sweep()` — at every start of `serve` and `worker`, and whenever a process makes its own
directory — removes the directories whose lock nobody holds.

The root is `SCAN_WORK_DIR`, by default `<system temp>/codepulse-scans-<uid>`; it must be a real
directory owned by this user and closed to others (0700), else this process uses a fresh private
temporary directory as its root instead (and sweeps nothing).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import stat
import tempfile
import threading
from pathlib import Path
from typing import Final

import structlog

log = structlog.get_logger("codepulse.scans")

LOCK_SUFFIX: Final = ".lock"


def default_root() -> Path:
    return Path(tempfile.gettempdir()) / f"codepulse-scans-{os.getuid()}"


def _usable_root(root: Path) -> bool:
    """Create the root (0700) if needed; whether it is a directory of ours that others cannot use."""
    with contextlib.suppress(FileExistsError):
        root.mkdir(mode=0o700, parents=True)
    try:
        info = os.lstat(root)
    except OSError:
        return False
    return stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid() and not info.st_mode & 0o077


class Scratch:
    """This process's directory under `root` (made at first use) and the sweep of dead ones."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._own: Path | None = None
        self._lock_fd: int | None = None
        self._private_root = False
        self._guard = threading.Lock()

    def mkdtemp(self, prefix: str) -> Path:
        """A new private directory (0700) under this process's directory."""
        return Path(tempfile.mkdtemp(prefix=prefix, dir=self.directory()))

    def directory(self) -> Path:
        with self._guard:
            if self._own is None:
                self._own = self._make_own()
            return self._own

    def _make_own(self) -> Path:
        if not _usable_root(self.root):
            log.warning("scan.scratch_root_refused", root=str(self.root))
            self.root = Path(tempfile.mkdtemp(prefix="codepulse-scans-"))
            self._private_root = True
        self.sweep()
        while True:
            name = f"{os.getpid()}-{os.urandom(6).hex()}"
            lock = self.root / (name + LOCK_SUFFIX)
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_RDWR | getattr(os, "O_CLOEXEC", 0), 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
            # A sweep may have taken the fresh lock file between open and flock, and removed it.
            if os.path.exists(lock) and os.path.samestat(os.fstat(fd), os.stat(lock)):
                break
            os.close(fd)
        own = self.root / name
        own.mkdir(mode=0o700)
        self._lock_fd = fd
        return own

    def sweep(self) -> int:
        """Remove the directories of processes that are gone; how many were removed."""
        removed = 0
        if not _usable_root(self.root):
            return 0
        try:
            names = sorted(os.listdir(self.root))
        except OSError:
            return 0
        for name in names:
            if not name.endswith(LOCK_SUFFIX) or (self._own is not None and name == self._own.name + LOCK_SUFFIX):
                continue
            if self._remove_if_abandoned(self.root / name):
                removed += 1
        if removed:
            log.info("scan.scratch_swept", root=str(self.root), directories=removed)
        return removed

    def _remove_if_abandoned(self, lock: Path) -> bool:
        try:
            fd = os.open(lock, os.O_RDWR | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
        except OSError:
            return False
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False  # its process is alive
            shutil.rmtree(lock.with_name(lock.name.removesuffix(LOCK_SUFFIX)), ignore_errors=True)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(lock)
            return True
        finally:
            os.close(fd)

    def close(self) -> None:
        """Remove this process's directory (at shutdown); a later use makes a new one."""
        with self._guard:
            own, fd = self._own, self._lock_fd
            self._own = self._lock_fd = None
        if own is None or fd is None:
            return
        shutil.rmtree(own, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(own.with_name(own.name + LOCK_SUFFIX))
        os.close(fd)
        if self._private_root:
            with contextlib.suppress(OSError):
                self.root.rmdir()


_scratches: dict[tuple[int, Path], Scratch] = {}
_scratches_guard = threading.Lock()


def scratch(work_dir: Path | None) -> Scratch:
    """This process's scratch space under `work_dir` (SCAN_WORK_DIR; None: `default_root()`).
    Keyed by process id too: a forked child makes a directory of its own."""
    root = work_dir if work_dir is not None else default_root()
    with _scratches_guard:
        key = (os.getpid(), root)
        if key not in _scratches:
            _scratches[key] = Scratch(root)
        return _scratches[key]


def close_scratches() -> None:
    """Remove this process's scratch directories (at shutdown)."""
    with _scratches_guard:
        mine = [item for (pid, _), item in _scratches.items() if pid == os.getpid()]
    for item in mine:
        item.close()
