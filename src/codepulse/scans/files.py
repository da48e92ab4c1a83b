"""Which files a scan reads: the index entries, the skip rules, `.codepulse.yml`, and the
file-system source used by the local `codepulse scan` on a directory.

A source lists `IndexEntry`s (path, git blob SHA, size) and reads their content. Blob SHAs are
git's (`sha1("blob <size>\\0" + content)`) whatever the source, so results cached from a clone
serve a local directory with the same content, and the other way round.

Skip rules, by reason (the counts a scan reports):

- `symlink`, `submodule`: not regular files (never followed);
- `vendored`: a path under a dependency or tool directory (node_modules/, vendor/, .venv/, ...);
- `lock_file`: package manager lock files (package-lock.json, poetry.lock, Cargo.lock, ...);
- `minified`: *.min.js-style names, or JavaScript/CSS whose lines are very long;
- `binary`: a binary extension, or a NUL byte in the first 8 KB;
- `too_large`: over SCAN_MAX_FILE_BYTES;
- `excluded`: matched by a glob in `.codepulse.yml` `exclude:`.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat
from collections import Counter
from collections.abc import AsyncGenerator, Awaitable, Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Protocol, TypeVar

import structlog

from codepulse.scans.repoconfig import CONFIG_FILES, CONFIG_MAX_BYTES

log = structlog.get_logger("codepulse.scans")

BINARY_SNIFF_BYTES: Final = 8192
MINIFIED_SNIFF_BYTES: Final = 65_536
MINIFIED_AVERAGE_LINE: Final = 500
"""A .js/.css file whose first 64 KB average more than this many bytes per line is minified."""
RETAIN_BYTES: Final = 64 * 1024 * 1024
"""A directory source keeps what it read to hash files, up to this much, for `read`: most local
scans then open each file once (and scan the very content whose SHA they computed)."""
READ_BATCH_FILES: Final = 256
READ_BATCH_BYTES: Final = 4 * 1024 * 1024
"""Files read per worker-thread call: one thread round trip per file costs more than reading a
small file."""

VENDORED_DIRECTORIES: Final = frozenset(
    {
        "node_modules",
        "bower_components",
        "jspm_packages",
        "vendor",
        "third_party",
        "third-party",
        "thirdparty",
        ".venv",
        "venv",
        "site-packages",
        "__pycache__",
        ".tox",
        ".nox",
        ".mypy_cache",
        ".pytest_cache",
        ".ruff_cache",
        ".gradle",
        ".yarn",
        ".pnpm-store",
        "Pods",
        "Carthage",
        ".git",
        ".hg",
        ".svn",
    }
)

LOCK_FILES: Final = frozenset(
    {
        "package-lock.json",
        "npm-shrinkwrap.json",
        "yarn.lock",
        "pnpm-lock.yaml",
        "bun.lockb",
        "bun.lock",
        "poetry.lock",
        "uv.lock",
        "pdm.lock",
        "pipfile.lock",
        "cargo.lock",
        "gemfile.lock",
        "composer.lock",
        "go.sum",
        "mix.lock",
        "pubspec.lock",
        "podfile.lock",
        "packages.lock.json",
        "flake.lock",
        "gradle.lockfile",
        "package.resolved",
        "conda-lock.yml",
        "deno.lock",
    }
)

BINARY_EXTENSIONS: Final = frozenset(
    {
        # images and documents
        "png", "jpg", "jpeg", "gif", "bmp", "ico", "icns", "webp", "tif", "tiff", "psd", "heic",
        "avif", "pdf", "doc", "docx", "xls", "xlsx", "ppt", "pptx", "odt", "ods", "odp", "eps",
        # archives and packages
        "zip", "gz", "tgz", "bz2", "xz", "zst", "lz", "lzma", "7z", "rar", "tar", "jar", "war",
        "ear", "whl", "egg", "apk", "aab", "ipa", "deb", "rpm", "dmg", "iso", "msi", "nupkg", "gem",
        # compiled code and objects
        "exe", "dll", "so", "dylib", "o", "obj", "a", "lib", "class", "pyc", "pyo", "pyd", "wasm",
        "elc", "beam", "dex",
        # fonts and media
        "woff", "woff2", "ttf", "otf", "eot", "mp3", "mp4", "m4a", "m4v", "wav", "ogg", "oga",
        "flac", "aac", "avi", "mov", "mkv", "webm", "wmv", "flv", "mid", "midi",
        # data and models
        "sqlite", "sqlite3", "db", "mdb", "parquet", "avro", "orc", "feather", "npy", "npz",
        "pkl", "pickle", "h5", "hdf5", "onnx", "pt", "pth", "ckpt", "safetensors", "tflite", "pb",
        "bin",
    }
)  # fmt: skip

MINIFIED_SUFFIXES: Final = (".min.js", ".min.mjs", ".min.cjs", ".min.css", "-min.js", ".js.map", ".css.map")
MINIFIABLE_EXTENSIONS: Final = frozenset({"js", "mjs", "cjs", "css"})


@dataclass(frozen=True, slots=True)
class IndexEntry:
    """A regular file to scan: its path as shown (relative, forward slashes), git blob SHA and
    size, and `raw_path`, the name's bytes as the repository or file system holds them."""

    path: str
    blob_sha: str
    size: int
    raw_path: bytes = b""

    @classmethod
    def of(cls, raw_path: bytes, blob_sha: str, size: int) -> IndexEntry:
        return cls(path=display_path(raw_path), blob_sha=blob_sha, size=size, raw_path=raw_path)


def display_path(raw_path: bytes) -> str:
    """A file name as shown, stored and logged. Git and POSIX names are bytes and need not be
    UTF-8; undecodable bytes become U+FFFD (a str with surrogates could not be stored or sent)."""
    return raw_path.decode("utf-8", "replace")


@dataclass
class SourceIndex:
    """What a source lists: the files to scan and the count of the others by reason."""

    entries: list[IndexEntry]
    skipped: Counter[str]
    files_total: int
    """Every file in the tree (scanned or skipped; a plain directory walk does not descend into
    vendored directories, whose files are not counted)."""
    total_bytes: int
    """The size of every blob in the tree (the checkout's size)."""
    commit_sha: str | None = None
    past_versions: frozenset[IndexEntry] = frozenset()
    """Of `entries`, the file versions the scanned commit no longer has (a history scan's): only
    the engines that look for leaks read them (see `pipeline.HISTORY_ENGINES`)."""


T = TypeVar("T")

ExcludeFilter = Callable[[list[str]], Awaitable[Collection[int]]]
"""Given paths, the indices of those a repository's `exclude:` globs exclude."""


class FileSource(Protocol):
    """Where a scan's files come from: a git tree, or a directory on disk."""

    async def config(self) -> bytes | None:
        """The raw `.codepulse.yml` at the root, or None."""
        ...

    async def index(self, rules: SkipRules, exclude: ExcludeFilter | None = None) -> SourceIndex:
        """The files, less those the built-in rules skip and those `exclude` (given the paths
        that passed the built-in rules, once) answers by index."""
        ...

    def read(self, entries: Sequence[IndexEntry]) -> AsyncGenerator[tuple[IndexEntry, bytes], None]:
        """The content of each entry, in the order given (an entry that vanished is left out)."""
        ...


def git_blob_sha(content: bytes) -> str:
    """The SHA git gives a blob with this content (`git hash-object`)."""
    digest = hashlib.sha1(b"blob %d\0" % len(content), usedforsecurity=False)
    digest.update(content)
    return digest.hexdigest()


# --- skip rules ----------------------------------------------------------------------------------


def _extension(name: str) -> str:
    _, dot, extension = name.rpartition(".")
    return extension.lower() if dot else ""


@dataclass(frozen=True)
class SkipRules:
    """The built-in skip rules. A repository's `exclude:` globs are not among them: they are
    matched in the engine pool (see `repoconfig`), through the `ExcludeFilter` a source is given."""

    max_file_bytes: int

    def path_reason(self, path: str) -> str | None:
        """Why a path is skipped before its size or content is known (built-in rules), or None."""
        parts = path.split("/")
        if any(part in VENDORED_DIRECTORIES for part in parts[:-1]):
            return "vendored"
        name = parts[-1]
        lower = name.lower()
        if lower in LOCK_FILES:
            return "lock_file"
        if lower.endswith(MINIFIED_SUFFIXES):
            return "minified"
        if _extension(lower) in BINARY_EXTENSIONS:
            return "binary"
        return None

    def size_reason(self, size: int) -> str | None:
        return "too_large" if size > self.max_file_bytes else None

    def content_reason(self, path: str, content: bytes) -> str | None:
        """Why a file is skipped once read: binary content, or minified JavaScript/CSS."""
        if content.find(b"\0", 0, BINARY_SNIFF_BYTES) >= 0:  # no slice: no copy of the head
            return "binary"
        if _extension(path) in MINIFIABLE_EXTENSIONS and len(content) > MINIFIED_AVERAGE_LINE:
            head = content[:MINIFIED_SNIFF_BYTES]
            if len(head) / (head.count(b"\n") + 1) > MINIFIED_AVERAGE_LINE:
                return "minified"
        return None


async def apply_exclude(
    candidates: list[T], paths: list[str], exclude: ExcludeFilter | None, skipped: Counter[str]
) -> list[T]:
    """The candidates (paths that passed the built-in rules) the exclude filter keeps; the others
    are counted as `excluded`."""
    if exclude is None:
        return candidates
    excluded = await exclude(paths)
    skipped["excluded"] += len(excluded)
    return [candidate for index, candidate in enumerate(candidates) if index not in excluded]


# --- a directory on disk ---------------------------------------------------------------------------


class DirectorySource:
    """Files of a directory on disk (the local CLI).

    In a git work tree the files are git's view of it: tracked and untracked files, less what
    .gitignore ignores, with their current content (uncommitted changes included); elsewhere a
    walk that does not descend into vendored or VCS directories. Symlinks are never followed.
    Blob SHAs are computed the way git computes them.
    """

    def __init__(self, root: Path, *, listed: Sequence[str] | None = None, commit_sha: str | None = None) -> None:
        self.root = root
        self.listed = listed
        """Paths to consider (git's view); None: walk the directory."""
        self.commit_sha = commit_sha
        self._retained: dict[bytes, bytes] = {}
        """raw path -> the content `index` hashed (up to RETAIN_BYTES), until `read` takes it."""

    async def config(self) -> bytes | None:
        def load() -> bytes | None:
            for name in CONFIG_FILES:
                path = self.root / name
                try:
                    if path.is_file() and not path.is_symlink():
                        with path.open("rb") as handle:
                            return handle.read(CONFIG_MAX_BYTES + 1)
                except OSError:
                    continue
            return None

        return await asyncio.to_thread(load)

    async def index(self, rules: SkipRules, exclude: ExcludeFilter | None = None) -> SourceIndex:
        listing = await asyncio.to_thread(self._list, rules)
        candidates = await apply_exclude(
            listing.candidates, [display_path(raw) for raw, _ in listing.candidates], exclude, listing.skipped
        )
        return await asyncio.to_thread(self._hash, rules, listing, candidates)

    def _paths(self) -> Iterable[bytes]:
        """Relative paths as bytes (names need not be UTF-8)."""
        if self.listed is not None:
            yield from (os.fsencode(path) for path in self.listed)
            return
        root = os.fsencode(self.root)
        for directory, dirnames, filenames in os.walk(root, followlinks=False):
            dirnames[:] = sorted(name for name in dirnames if os.fsdecode(name) not in VENDORED_DIRECTORIES)
            relative = os.path.relpath(directory, root)
            prefix = b"" if relative == b"." else relative.replace(os.fsencode(os.sep), b"/") + b"/"
            for name in sorted(filenames):
                yield prefix + name
            for name in dirnames:
                # A symlink to a directory shows up in dirnames; os.walk does not follow it.
                if os.path.islink(os.path.join(directory, name)):
                    yield prefix + name

    def _list(self, rules: SkipRules) -> _Listing:
        """Every file, less what the built-in path rules skip: (raw path, size) candidates."""
        listing = _Listing()
        root = os.path.join(os.fsencode(self.root), b"")
        for raw in self._paths():
            try:
                info = os.lstat(root + raw)
            except OSError:
                continue
            listing.files_total += 1
            if stat.S_ISLNK(info.st_mode):
                listing.skipped["symlink"] += 1
                continue
            if stat.S_ISDIR(info.st_mode):  # a submodule's work tree, listed by git as a gitlink
                listing.skipped["submodule"] += 1
                continue
            if not stat.S_ISREG(info.st_mode):
                listing.files_total -= 1
                continue
            listing.total_bytes += info.st_size
            reason = rules.path_reason(display_path(raw))
            if reason is not None:
                listing.skipped[reason] += 1
                continue
            listing.candidates.append((raw, info.st_size))
        return listing

    def _hash(self, rules: SkipRules, listing: _Listing, candidates: list[tuple[bytes, int]]) -> SourceIndex:
        root = os.path.join(os.fsencode(self.root), b"")
        entries: list[IndexEntry] = []
        retained: dict[bytes, bytes] = {}
        budget = RETAIN_BYTES
        for raw, size in candidates:
            reason = rules.size_reason(size)
            if reason is not None:
                listing.skipped[reason] += 1
                continue
            content = _read_regular(root + raw)
            if content is None:
                listing.files_total -= 1
                continue
            entries.append(IndexEntry.of(raw, git_blob_sha(content), len(content)))
            if len(content) <= budget:
                retained[raw] = content
                budget -= len(content)
        self._retained = retained
        return SourceIndex(
            entries=entries,
            skipped=listing.skipped,
            files_total=listing.files_total,
            total_bytes=listing.total_bytes,
            commit_sha=self.commit_sha,
        )

    async def read(self, entries: Sequence[IndexEntry]) -> AsyncGenerator[tuple[IndexEntry, bytes], None]:
        retained, self._retained = self._retained, {}
        for batch in _batches(entries, READ_BATCH_FILES, READ_BATCH_BYTES):
            contents = [retained.pop(entry.raw_path, None) for entry in batch]
            if any(content is None for content in contents):
                contents = await asyncio.to_thread(self._read_missing, batch, contents)
            for entry, content in zip(batch, contents, strict=True):
                if content is not None:
                    yield entry, content

    def _read_missing(self, batch: Sequence[IndexEntry], contents: list[bytes | None]) -> list[bytes | None]:
        root = os.path.join(os.fsencode(self.root), b"")
        return [
            _read_regular(root + entry.raw_path) if content is None else content
            for entry, content in zip(batch, contents, strict=True)
        ]


def _batches(entries: Sequence[IndexEntry], max_files: int, max_bytes: int) -> Iterable[Sequence[IndexEntry]]:
    """Consecutive runs of entries, each at most `max_files` long and `max_bytes` in size (or one file)."""
    start = 0
    size = 0
    for position, entry in enumerate(entries):
        if position > start and (position - start >= max_files or size + entry.size > max_bytes):
            yield entries[start:position]
            start, size = position, 0
        size += entry.size
    if start < len(entries):
        yield entries[start:]


@dataclass
class _Listing:
    candidates: list[tuple[bytes, int]] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)
    files_total: int = 0
    total_bytes: int = 0


_OPEN_FLAGS: Final = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)


def _read_regular(path: bytes) -> bytes | None:
    """A regular file's content, refusing to follow a symlink at the last component."""
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return None
        # Plain reads on the descriptor (no file object: this runs once per file). A regular
        # file's read comes back short only at its end; a full one means it grew since fstat.
        wanted = info.st_size + 1
        content = os.read(fd, wanted)
        if len(content) < wanted:
            return content
        parts = [content]
        while parts[-1]:
            parts.append(os.read(fd, 1 << 20))
        return b"".join(parts)
    except OSError:
        return None
    finally:
        os.close(fd)
