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

import dataclasses
from collections import Counter
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Final

from codepulse.scans.errors import ScanFailure
from codepulse.scans.files import ExcludeFilter, IndexEntry, SkipRules, SourceIndex, apply_exclude
from codepulse.scans.git import GitTreeSource, is_commit_sha, rev_parse, run_git
from codepulse.scans.results import Introduction, LocatedFinding

_COMMIT_MARK: Final = b"\x01"
_NO_BLOB: Final = frozenset({"0" * 40, "0" * 64})
# Regular files and executables: not symlinks (120000), submodules (160000) or trees.
_FILE_MODES: Final = frozenset({"100644", "100755", "100664"})


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


async def blob_sizes(repository: Path, *, env: Mapping[str, str]) -> dict[str, int]:
    """Every blob's size in the object store (one `cat-file` over all objects, not one per blob)."""
    result = await run_git(
        [
            "-c",
            "core.hooksPath=/dev/null",
            "cat-file",
            "--batch-all-objects",
            "--batch-check=%(objectname) %(objecttype) %(objectsize)",
        ],
        env=env,
        cwd=repository,
    )
    if result.returncode != 0:
        raise ScanFailure("clone_failed", "git could not list the repository's objects.")
    sizes: dict[str, int] = {}
    for line in result.stdout.split(b"\n"):
        parts = line.split()
        if len(parts) == 3 and parts[1] == b"blob":
            sizes[parts[0].decode("ascii")] = int(parts[2])
    return sizes


class GitHistorySource:
    """Every file version of the history as the pipeline's files (a `FileSource`): each (path,
    blob) pair once, read from git's object store; the configuration of the scanned commit.
    `introductions` tells, after `index`, which commit brought each version in."""

    def __init__(
        self, repository: Path, *, commit: str = "HEAD", refs: Sequence[str] = ("HEAD",), env: Mapping[str, str]
    ) -> None:
        self.repository = repository
        self.refs = tuple(refs)
        self.env = dict(env)
        self.tree = GitTreeSource(repository, commit=commit, env=self.env)
        self.introductions: dict[tuple[str, str], Introduction] = {}
        self.head: dict[str, str] = {}

    async def config(self) -> bytes | None:
        return await self.tree.config()

    async def index(self, rules: SkipRules, exclude: ExcludeFilter | None = None) -> SourceIndex:
        commit_sha = await rev_parse(self.repository, f"{self.tree.commit}^{{commit}}", env=self.env)
        if commit_sha is None:
            raise ScanFailure("clone_failed", "The repository has no commit to scan.")
        versions = await history_blobs(self.repository, self.refs, env=self.env)
        sizes = await blob_sizes(self.repository, env=self.env)
        self.head = await head_blobs(self.repository, commit_sha, env=self.env)
        skipped: Counter[str] = Counter()
        entries: list[IndexEntry] = []
        for version in versions:
            self.introductions[(version.path, version.blob_sha)] = version.introduced
            entry = IndexEntry.of(
                version.path.encode("utf-8", "surrogateescape"), version.blob_sha, sizes.get(version.blob_sha, 0)
            )
            reason = rules.path_reason(entry.path)
            if reason is not None:
                skipped[reason] += 1
                continue
            entries.append(entry)
        candidates = await apply_exclude(entries, [entry.path for entry in entries], exclude, skipped)
        kept: list[IndexEntry] = []
        for entry in candidates:
            reason = rules.size_reason(entry.size)
            if reason is not None:
                skipped[reason] += 1
            else:
                kept.append(entry)
        return SourceIndex(
            entries=kept,
            skipped=skipped,
            files_total=len(versions),
            total_bytes=sum(sizes.get(version.blob_sha, 0) for version in versions),
            commit_sha=commit_sha,
            past_versions=frozenset(entry for entry in kept if self.head.get(entry.path) != entry.blob_sha),
        )

    def read(self, entries: Sequence[IndexEntry]) -> AsyncGenerator[tuple[IndexEntry, bytes], None]:
        return self.tree.read(entries)

    def findings(self, located: Sequence[LocatedFinding]) -> list[HistoryFinding]:
        """One per secret or issue (fingerprint): the commit that first brought it in, and whether
        the scanned commit still has it. Where it is (path, lines) is the scanned commit's when
        it still has it, else the version it first appeared in."""
        order = {key: position for position, key in enumerate(self.introductions)}  # the walk's order
        first: dict[str, LocatedFinding] = {}
        at_head: dict[str, LocatedFinding] = {}
        for finding in located:
            if self.head.get(finding.path) == finding.blob_sha:
                at_head.setdefault(finding.fingerprint, finding)
            known = first.get(finding.fingerprint)
            position = order.get((finding.path, finding.blob_sha or ""), len(order))
            if known is None or position < order.get((known.path, known.blob_sha or ""), len(order)):
                first[finding.fingerprint] = finding
        return [
            HistoryFinding(
                finding=at_head.get(fingerprint, finding),
                introduced=self.introductions.get((finding.path, finding.blob_sha or "")),
                at_head=fingerprint in at_head,
            )
            for fingerprint, finding in first.items()
        ]

    def located(self, found: Sequence[LocatedFinding]) -> list[LocatedFinding]:
        """`findings` as the pipeline's findings: one per fingerprint, each carrying its
        introduction and whether the scanned commit still has it."""
        return [
            dataclasses.replace(item.finding, introduced=item.introduced, at_head=item.at_head)
            for item in self.findings(found)
        ]


@dataclass(frozen=True, slots=True)
class HistoryFinding:
    """A finding of a history scan: where it was first seen, and whether HEAD still has it
    (`at_head`: remove it, then rotate it) or only the history (rotate it)."""

    finding: LocatedFinding
    introduced: Introduction | None
    at_head: bool
