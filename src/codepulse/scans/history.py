"""A repository's whole history as blobs to scan: every file version reachable from the scanned
refs, each with the commit that introduced it.

gitleaks' main use is the history: a secret deleted from HEAD is still leaked. One `git log`
walks the history oldest first and lists, per commit, the file versions it adds or changes
(`--raw`: the new blob of each path; `-m`: a merge's changes against each parent, so a version
made while resolving a conflict is seen too). The first commit that shows a (path, blob) pair
introduced it. Blobs are the result cache's key, so a version kept across many commits, or
under several paths, is scanned once, and a later history scan reads only new blobs.

`head_blobs` gives the scanned commit's own tree, to tell a finding still present at HEAD
("remove it, then rotate it") from one only in the history ("rotate it").

This module only reads git; the pipeline decides what to scan, and the lifecycle what to keep.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Final

from codepulse.scans.errors import ScanFailure
from codepulse.scans.git import is_commit_sha, run_git

_COMMIT_MARK: Final = b"\x01"
_NO_BLOB: Final = frozenset({"0" * 40, "0" * 64})
# Regular files and executables: not symlinks (120000), submodules (160000) or trees.
_FILE_MODES: Final = frozenset({"100644", "100755", "100664"})


@dataclass(frozen=True, slots=True)
class Introduction:
    """The commit that first added a file version: its SHA, author and author date."""

    commit_sha: str
    author: str
    authored_at: datetime


@dataclass(frozen=True, slots=True)
class HistoryBlob:
    path: str
    blob_sha: str
    introduced: Introduction


def parse_log(output: bytes) -> list[HistoryBlob]:
    """The (path, blob) pairs of `git log --reverse -m --no-renames --raw --no-abbrev -z
    --format=tformat:%x01%H%x00%an%x00%aI`, each once with the first commit that showed it.

    Read token by token (NUL-separated): a commit's three header fields, then pairs of a raw
    line (`:<old mode> <new mode> <old blob> <new blob> <status>`) and its path, so a path may
    hold any byte but NUL."""
    found: dict[tuple[str, str], HistoryBlob] = {}
    tokens = output.split(b"\0")
    introduction: Introduction | None = None
    index = 0
    while index < len(tokens):
        token = tokens[index].lstrip(b"\n")
        if token.startswith(_COMMIT_MARK) and index + 2 < len(tokens):
            introduction = _introduction(token[1:], tokens[index + 1], tokens[index + 2])
            index += 3
        elif token.startswith(b":") and index + 1 < len(tokens):
            blob = _changed_blob(token)
            if blob is not None and introduction is not None:
                path = tokens[index + 1].decode("utf-8", "surrogateescape")
                found.setdefault((path, blob), HistoryBlob(path, blob, introduction))
            index += 2
        else:
            index += 1
    return list(found.values())


def _introduction(sha: bytes, author: bytes, date: bytes) -> Introduction | None:
    commit_sha = sha.decode("ascii", "replace")
    try:
        when = datetime.fromisoformat(date.decode("ascii", "replace").strip())
    except ValueError:
        return None
    return Introduction(commit_sha, author.decode("utf-8", "replace"), when) if is_commit_sha(commit_sha) else None


def _changed_blob(raw: bytes) -> str | None:
    """The new blob of a raw line, when it adds or changes a regular file."""
    parts = raw[1:].split()
    if len(parts) != 5:
        return None
    new_mode, new_blob, status = parts[1].decode("ascii", "replace"), parts[3].decode("ascii", "replace"), parts[4][:1]
    if status == b"D" or new_blob in _NO_BLOB or new_mode not in _FILE_MODES:
        return None
    return new_blob


async def history_blobs(repository: Path, refs: Sequence[str], *, env: Mapping[str, str]) -> list[HistoryBlob]:
    """Every file version reachable from `refs` (commit SHAs or ref names), oldest first."""
    result = await run_git(
        [
            "-c",
            "core.hooksPath=/dev/null",
            "log",
            "--reverse",
            "-m",
            "--no-renames",
            "--raw",
            "--no-abbrev",
            "-z",
            "--format=tformat:%x01%H%x00%an%x00%aI",
            *refs,
            "--",
        ],
        env=env,
        cwd=repository,
    )
    if result.returncode != 0:
        raise ScanFailure("clone_failed", "git could not read the repository's history.")
    return parse_log(result.stdout)


async def head_blobs(repository: Path, commit: str, *, env: Mapping[str, str]) -> dict[str, str]:
    """The commit's own files: path -> blob SHA."""
    result = await run_git(
        ["-c", "core.hooksPath=/dev/null", "ls-tree", "-r", "-z", "--full-tree", commit],
        env=env,
        cwd=repository,
    )
    if result.returncode != 0:
        raise ScanFailure("clone_failed", "git could not list the repository's files.")
    files: dict[str, str] = {}
    for line in result.stdout.split(b"\0"):
        meta, _, path = line.partition(b"\t")
        parts = meta.split()
        if len(parts) == 3 and parts[1] == b"blob" and parts[0].decode("ascii") in _FILE_MODES:
            files[path.decode("utf-8", "surrogateescape")] = parts[2].decode("ascii")
    return files
