"""Running git, and reading a repository's files from it.

`run_git` runs git in a process group of its own (killed with its children on cancel or when a
watched directory grows too large) in the environment `git_environment` builds: isolated (no
system or global config, no prompt) for the server, the developer's own for the local CLI.
Cloning, with its hardening, is `clone`.

`GitTreeSource` lists a commit's files with `git ls-tree -r -l -z` and reads them in one
`git cat-file --batch` process; `work_tree_files` lists what git sees in a local work tree.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shlex
import signal
from collections import Counter
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import structlog

from codepulse.scans.errors import ScanFailure
from codepulse.scans.files import ExcludeFilter, IndexEntry, SkipRules, SourceIndex, apply_exclude
from codepulse.scans.repoconfig import CONFIG_FILES, CONFIG_MAX_BYTES

log = structlog.get_logger("codepulse.scans")

GIT: Final = "git"
SIZE_POLL_SECONDS: Final = 0.25
STDERR_LIMIT: Final = 65_536
READ_BLOCK_BYTES: Final = 1 << 20
"""Bytes asked of `git cat-file --batch` per read."""
FEED_BATCH: Final = 1024
"""Blob SHAs written to `git cat-file --batch` per write."""

_FULL_SHA = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")
_USERINFO = re.compile(r"(?<=://)[^/@\s]*@")


@dataclass(frozen=True)
class GitResult:
    returncode: int
    stdout: bytes
    stderr: str


def is_commit_sha(ref: str) -> bool:
    return bool(_FULL_SHA.match(ref.lower()))


def redact(text: str, secrets: Sequence[str] = ()) -> str:
    """Text fit for a log or an error: URL credentials and the given secrets masked."""
    text = _USERINFO.sub("***@", text)
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def git_environment(
    home: Path | None = None,
    *,
    config: Mapping[str, str] | None = None,
    ssh_options: Sequence[str] = (),
    inherit: bool = False,
) -> dict[str, str]:
    """The environment git runs in.

    Isolated (the default): PATH and the locale only, no system or global config; with `home`,
    HOME and XDG_CONFIG_HOME point there and SSH runs without user config, in batch mode.
    `inherit`: the caller's environment (the local CLI: a developer's SSH agent and credential
    helpers), minus every GIT_* variable. Never a prompt. `config` entries are passed as
    GIT_CONFIG_KEY_n/VALUE_n, so they never appear in argv. `ssh_options` are appended to the ssh
    command git runs (shell-quoted: git runs GIT_SSH_COMMAND through a shell).
    """
    env: dict[str, str]
    if inherit:
        env = {key: value for key, value in os.environ.items() if not key.startswith("GIT_")}
        env.setdefault("GIT_SSH_COMMAND", "ssh -o BatchMode=yes")
    else:
        env = {
            "PATH": os.environ.get("PATH", os.defpath),
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": "/dev/null",
        }
        if home is not None:
            env.update(
                {
                    "HOME": str(home),
                    "XDG_CONFIG_HOME": str(home / ".config"),
                    "GIT_SSH_COMMAND": (
                        "ssh -F /dev/null -o BatchMode=yes -o StrictHostKeyChecking=accept-new "
                        f"-o UserKnownHostsFile={home / 'known_hosts'}"
                    ),
                }
            )
    if ssh_options:
        base = env.get("GIT_SSH_COMMAND", "ssh -o BatchMode=yes")
        env["GIT_SSH_COMMAND"] = " ".join([base, *(shlex.quote(option) for option in ssh_options)])
    env.update({"LC_ALL": "C", "LANG": "C", "GIT_TERMINAL_PROMPT": "0", "GCM_INTERACTIVE": "never"})
    env.pop("SSH_ASKPASS", None)
    if config:
        env["GIT_CONFIG_COUNT"] = str(len(config))
        for index, (key, value) in enumerate(config.items()):
            env[f"GIT_CONFIG_KEY_{index}"] = key
            env[f"GIT_CONFIG_VALUE_{index}"] = value
    return env


def directory_size(path: Path) -> int:
    total = 0
    for directory, _, filenames in os.walk(path):
        for name in filenames:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(directory, name)).st_size
    return total


def _kill_group(process: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


async def run_git(
    args: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path | None = None,
    watch: tuple[Path, int] | None = None,
) -> GitResult:
    """Run git in a process group of its own; killed with its children when this is cancelled
    (a timeout around it) or when `watch` = (directory, limit) grows past the limit
    (ScanFailure repository_too_large)."""
    process = await asyncio.create_subprocess_exec(
        GIT,
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=dict(env),
        cwd=cwd,
        start_new_session=True,
    )
    communicate = asyncio.ensure_future(process.communicate())
    try:
        if watch is None:
            stdout, stderr = await communicate
        else:
            directory, limit = watch
            while True:
                done, _ = await asyncio.wait({communicate}, timeout=SIZE_POLL_SECONDS)
                if done:
                    stdout, stderr = communicate.result()
                    break
                if await asyncio.to_thread(directory_size, directory) > limit:
                    raise too_large(limit)
    except BaseException:
        _kill_group(process)
        communicate.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.shield(process.wait())
        raise
    return GitResult(
        returncode=process.returncode if process.returncode is not None else -1,
        stdout=stdout,
        stderr=stderr[-STDERR_LIMIT:].decode("utf-8", "replace"),
    )


def too_large(limit: int) -> ScanFailure:
    return ScanFailure(
        "repository_too_large",
        f"The repository is larger than the {limit:,}-byte limit (SCAN_MAX_REPOSITORY_BYTES).",
    )


async def rev_parse(repository: Path, name: str, *, env: Mapping[str, str]) -> str | None:
    result = await run_git(["rev-parse", "--verify", "--quiet", "--end-of-options", name], env=env, cwd=repository)
    text = result.stdout.decode("ascii", "replace").strip()
    return text if result.returncode == 0 and is_commit_sha(text) else None


# --- reading a commit's files ----------------------------------------------------------------------


async def current_branch(repository: Path, *, env: Mapping[str, str]) -> str | None:
    """The branch HEAD is on (a fresh clone's: the remote's default branch), or None."""
    result = await run_git(["symbolic-ref", "--quiet", "--short", "HEAD"], env=env, cwd=repository)
    branch = result.stdout.decode("utf-8", "replace").strip()
    return branch or None if result.returncode == 0 else None


class GitTreeSource:
    """The files of a commit (HEAD by default) of a repository, read from git's object store."""

    def __init__(self, repository: Path, *, commit: str = "HEAD", env: Mapping[str, str] | None = None) -> None:
        self.repository = repository
        self.commit = commit
        self.env = dict(env) if env is not None else git_environment()

    async def _git(self, *args: str) -> GitResult:
        return await run_git(["-c", "core.hooksPath=/dev/null", *args], env=self.env, cwd=self.repository)

    async def config(self) -> bytes | None:
        for name in CONFIG_FILES:
            result = await self._git("cat-file", "-s", f"{self.commit}:{name}")
            if result.returncode != 0:
                continue
            if int(result.stdout.strip() or b"0") > CONFIG_MAX_BYTES:
                return b"\0" * (CONFIG_MAX_BYTES + 1)  # reported as too large when it is parsed
            result = await self._git("cat-file", "blob", f"{self.commit}:{name}")
            if result.returncode == 0:
                return result.stdout
        return None

    async def index(self, rules: SkipRules, exclude: ExcludeFilter | None = None) -> SourceIndex:
        commit_sha = await rev_parse(self.repository, f"{self.commit}^{{commit}}", env=self.env)
        if commit_sha is None:
            raise ScanFailure("clone_failed", "The repository has no commit to scan.")
        result = await self._git("ls-tree", "-r", "-l", "-z", "--full-tree", commit_sha)
        if result.returncode != 0:
            raise ScanFailure("clone_failed", "git could not list the repository's files.")
        # A large tree is a lot of parsing: off the event loop.
        index = await asyncio.to_thread(_parse_tree, result.stdout, rules, commit_sha)
        candidates = await apply_exclude(index.entries, [entry.path for entry in index.entries], exclude, index.skipped)
        index.entries = []
        for entry in candidates:
            reason = rules.size_reason(entry.size)
            if reason is not None:
                index.skipped[reason] += 1
            else:
                index.entries.append(entry)
        return index

    async def read(self, entries: Sequence[IndexEntry]) -> AsyncGenerator[tuple[IndexEntry, bytes], None]:
        if not entries:
            return
        process = await asyncio.create_subprocess_exec(
            GIT,
            "cat-file",
            "--batch",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            env=self.env,
            cwd=self.repository,
            start_new_session=True,
            limit=READ_BLOCK_BYTES,
        )
        stdin, stdout = process.stdin, process.stdout
        if stdin is None or stdout is None:  # pragma: no cover - PIPE always gives both
            raise RuntimeError("git cat-file without pipes")

        async def feed() -> None:
            # The SHAs in large writes: one write and drain per blob costs more than a small blob.
            try:
                for start in range(0, len(entries), FEED_BATCH):
                    batch = entries[start : start + FEED_BATCH]
                    stdin.write(b"".join(entry.blob_sha.encode("ascii") + b"\n" for entry in batch))
                    await stdin.drain()
            finally:
                stdin.close()

        feeder = asyncio.ensure_future(feed())
        # git's answers are parsed from a buffer filled in large reads, not with a readline and a
        # readexactly per blob (two awaits per blob dominated reading many small files).
        buffer = bytearray()
        try:
            for entry in entries:
                newline = buffer.find(b"\n")
                while newline < 0:
                    block = await stdout.read(READ_BLOCK_BYTES)
                    if not block:
                        break
                    buffer.extend(block)
                    newline = buffer.find(b"\n")
                if newline < 0:
                    break  # git stopped
                header = buffer[:newline].split()
                if len(header) != 3:  # "<sha> missing": left out
                    del buffer[: newline + 1]
                    if not header:
                        break
                    continue
                end = newline + 1 + int(header[2])
                while len(buffer) <= end:  # the content and its newline
                    block = await stdout.read(max(READ_BLOCK_BYTES, end + 1 - len(buffer)))
                    if not block:  # git stopped in the middle of a blob
                        raise asyncio.IncompleteReadError(bytes(buffer), end + 1)
                    buffer.extend(block)
                content = bytes(buffer[newline + 1 : end])
                del buffer[: end + 1]  # cheap: a bytearray drops its head without copying the rest
                if header[1] == b"blob":  # not a blob cannot happen with ls-tree's SHAs: skipped
                    yield entry, content
            await feeder
        finally:
            feeder.cancel()
            _kill_group(process)
            with contextlib.suppress(BaseException):
                await asyncio.shield(process.wait())


def _parse_tree(listing: bytes, rules: SkipRules, commit_sha: str) -> SourceIndex:
    """`git ls-tree -r -l -z` output as an index of the files the built-in path rules keep (sizes
    not checked yet). Names are bytes in git: kept as such, shown with replacement characters."""
    entries: list[IndexEntry] = []
    skipped: Counter[str] = Counter()
    files_total = 0
    total_bytes = 0
    for record in listing.split(b"\0"):
        if not record:
            continue
        meta, _, raw_path = record.partition(b"\t")
        mode, kind, sha, size = meta.split()
        files_total += 1
        if kind == b"commit" or mode == b"160000":
            skipped["submodule"] += 1
            continue
        if kind != b"blob":
            files_total -= 1
            continue
        blob_size = int(size)
        total_bytes += blob_size
        if mode == b"120000":
            skipped["symlink"] += 1
            continue
        entry = IndexEntry.of(raw_path, sha.decode("ascii"), blob_size)
        reason = rules.path_reason(entry.path)
        if reason is not None:
            skipped[reason] += 1
            continue
        entries.append(entry)
    return SourceIndex(
        entries=entries, skipped=skipped, files_total=files_total, total_bytes=total_bytes, commit_sha=commit_sha
    )


# --- a local work tree (the CLI) -------------------------------------------------------------------


async def work_tree_files(root: Path) -> tuple[list[str], str | None] | None:
    """For a directory inside a git work tree: the files git sees under it (tracked and untracked,
    not ignored; paths relative to `root`) and HEAD's SHA (None before the first commit).
    None when `root` is not in a work tree (or git is not usable there)."""
    env = git_environment(inherit=True)
    try:
        inside = await run_git(["rev-parse", "--is-inside-work-tree"], env=env, cwd=root)
    except OSError:
        return None
    if inside.returncode != 0 or inside.stdout.strip() != b"true":
        return None
    listing = await run_git(
        ["-c", "core.quotePath=off", "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", "."],
        env=env,
        cwd=root,
    )
    if listing.returncode != 0:
        return None
    paths = sorted({item.decode("utf-8", "surrogateescape") for item in listing.stdout.split(b"\0") if item})
    return paths, await rev_parse(root, "HEAD", env=env)
