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
import re
import stat
from collections import Counter
from collections.abc import AsyncGenerator, Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Final, Protocol

import structlog
import yaml

log = structlog.get_logger("codepulse.scans")

CONFIG_FILES: Final = (".codepulse.yml", ".codepulse.yaml")
CONFIG_MAX_BYTES: Final = 65_536
MAX_EXCLUDE_PATTERNS: Final = 500

BINARY_SNIFF_BYTES: Final = 8192
MINIFIED_SNIFF_BYTES: Final = 65_536
MINIFIED_AVERAGE_LINE: Final = 500
"""A .js/.css file whose first 64 KB average more than this many bytes per line is minified."""

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
    """A regular file to scan: its path (relative, forward slashes), git blob SHA and size."""

    path: str
    blob_sha: str
    size: int


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


class FileSource(Protocol):
    """Where a scan's files come from: a git tree, or a directory on disk."""

    async def config(self) -> bytes | None:
        """The raw `.codepulse.yml` at the root, or None."""
        ...

    async def index(self, rules: SkipRules) -> SourceIndex: ...

    def read(self, entries: Sequence[IndexEntry]) -> AsyncGenerator[tuple[IndexEntry, bytes], None]:
        """The content of each entry, in the order given (an entry that vanished is left out)."""
        ...


def git_blob_sha(content: bytes) -> str:
    """The SHA git gives a blob with this content (`git hash-object`)."""
    digest = hashlib.sha1(b"blob %d\0" % len(content), usedforsecurity=False)
    digest.update(content)
    return digest.hexdigest()


# --- .codepulse.yml --------------------------------------------------------------------------------


@dataclass(frozen=True)
class RepositoryConfig:
    exclude: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()


def parse_config(raw: bytes | None) -> RepositoryConfig:
    """`.codepulse.yml`: `exclude:` a list of globs. Problems become warnings, never failures:
    a broken config file must not stop a scan (it would also stop secrets from being found)."""
    if raw is None:
        return RepositoryConfig()
    if len(raw) > CONFIG_MAX_BYTES:
        return RepositoryConfig(warnings=(f".codepulse.yml is larger than {CONFIG_MAX_BYTES} bytes; ignored",))
    try:
        data = yaml.safe_load(raw.decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as error:
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        return RepositoryConfig(warnings=(f".codepulse.yml is not valid YAML ({first_line}); ignored",))
    if data is None:
        return RepositoryConfig()
    if not isinstance(data, dict):
        return RepositoryConfig(warnings=(".codepulse.yml must be a mapping; ignored",))
    warnings: list[str] = []
    raw_exclude = data.get("exclude", [])
    if isinstance(raw_exclude, str):
        raw_exclude = [raw_exclude]
    if not isinstance(raw_exclude, list):
        return RepositoryConfig(warnings=(".codepulse.yml `exclude` must be a list of globs; ignored",))
    patterns: list[str] = []
    for item in raw_exclude[:MAX_EXCLUDE_PATTERNS]:
        if not isinstance(item, str) or not item.strip():
            warnings.append(f".codepulse.yml `exclude`: {item!r} is not a glob; ignored")
            continue
        try:
            compile_glob(item.strip())
        except re.error:
            warnings.append(f".codepulse.yml `exclude`: {item!r} is not a valid glob; ignored")
            continue
        patterns.append(item.strip())
    if len(raw_exclude) > MAX_EXCLUDE_PATTERNS:
        warnings.append(f".codepulse.yml `exclude`: only the first {MAX_EXCLUDE_PATTERNS} globs are used")
    return RepositoryConfig(exclude=tuple(patterns), warnings=tuple(warnings))


@lru_cache(maxsize=1024)
def compile_glob(pattern: str) -> re.Pattern[str]:
    """A gitignore-style glob as a regex over a relative path (forward slashes).

    `*` matches within one path segment, `**` any number of segments, `?` one character,
    `[...]` a character class. A pattern without a slash (other than a trailing one) matches at
    any depth (`*.snap`, `fixtures/`); one with a slash is anchored at the root (`docs/*.md`,
    `/build`). A pattern that matches a directory excludes everything under it.
    """
    anchored = "/" in pattern.rstrip("/")
    body = pattern.strip("/")
    if not body:
        raise re.error("empty glob")
    out: list[str] = []
    i = 0
    while i < len(body):
        char = body[i]
        if body.startswith("**", i):
            at_start = i == 0 or body[i - 1] == "/"
            at_end = i + 2 == len(body) or body[i + 2] == "/"
            if at_start and at_end:
                if i + 2 == len(body):
                    out.append(".*")
                    i += 2
                else:
                    out.append("(?:.*/)?")
                    i += 3
                continue
            out.append("[^/]*")
            i += 2
            continue
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[":
            end = body.find("]", i + 2 if body[i + 1 : i + 2] in ("!", "]") else i + 1)
            if end == -1:
                out.append(re.escape(char))
            else:
                inner = body[i + 1 : end]
                if inner.startswith("!"):
                    inner = "^" + inner[1:]
                out.append("[" + inner.replace("\\", "\\\\").replace("/", "") + "]")
                i = end + 1
                continue
        else:
            out.append(re.escape(char))
        i += 1
    prefix = "" if anchored else "(?:.*/)?"
    return re.compile(f"^{prefix}{''.join(out)}(?:/.*)?$", re.DOTALL)


def matches_any(path: str, patterns: Iterable[str]) -> bool:
    return any(compile_glob(pattern).match(path) for pattern in patterns)


# --- skip rules ----------------------------------------------------------------------------------


def _extension(name: str) -> str:
    _, dot, extension = name.rpartition(".")
    return extension.lower() if dot else ""


@dataclass(frozen=True)
class SkipRules:
    max_file_bytes: int
    exclude: tuple[str, ...] = ()
    warnings: tuple[str, ...] = field(default=(), compare=False)

    def path_reason(self, path: str) -> str | None:
        """Why a path is skipped before its size or content is known, or None."""
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
        if self.exclude and matches_any(path, self.exclude):
            return "excluded"
        return None

    def reason(self, path: str, size: int) -> str | None:
        """Why an index entry is skipped (path rules, then size), or None."""
        reason = self.path_reason(path)
        if reason is None and size > self.max_file_bytes:
            return "too_large"
        return reason

    def content_reason(self, path: str, content: bytes) -> str | None:
        """Why a file is skipped once read: binary content, or minified JavaScript/CSS."""
        if b"\0" in content[:BINARY_SNIFF_BYTES]:
            return "binary"
        if _extension(path) in MINIFIABLE_EXTENSIONS and len(content) > MINIFIED_AVERAGE_LINE:
            head = content[:MINIFIED_SNIFF_BYTES]
            if len(head) / (head.count(b"\n") + 1) > MINIFIED_AVERAGE_LINE:
                return "minified"
        return None


def skip_rules(max_file_bytes: int, config: bytes | None) -> SkipRules:
    parsed = parse_config(config)
    return SkipRules(max_file_bytes=max_file_bytes, exclude=parsed.exclude, warnings=parsed.warnings)


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

    async def index(self, rules: SkipRules) -> SourceIndex:
        return await asyncio.to_thread(self._index, rules)

    def _paths(self) -> Iterable[str]:
        if self.listed is not None:
            yield from self.listed
            return
        for directory, dirnames, filenames in os.walk(self.root, followlinks=False):
            dirnames[:] = sorted(name for name in dirnames if name not in VENDORED_DIRECTORIES)
            relative = os.path.relpath(directory, self.root)
            prefix = "" if relative == "." else relative.replace(os.sep, "/") + "/"
            for name in sorted(filenames):
                yield prefix + name
            for name in dirnames:
                # A symlink to a directory shows up in dirnames; os.walk does not follow it.
                if os.path.islink(os.path.join(directory, name)):
                    yield prefix + name

    def _index(self, rules: SkipRules) -> SourceIndex:
        entries: list[IndexEntry] = []
        skipped: Counter[str] = Counter()
        files_total = 0
        total_bytes = 0
        for path in self._paths():
            full = self.root / path
            try:
                info = full.lstat()
            except OSError:
                continue
            files_total += 1
            if stat.S_ISLNK(info.st_mode):
                skipped["symlink"] += 1
                continue
            if stat.S_ISDIR(info.st_mode):  # a submodule's work tree, listed by git as a gitlink
                skipped["submodule"] += 1
                continue
            if not stat.S_ISREG(info.st_mode):
                files_total -= 1
                continue
            total_bytes += info.st_size
            reason = rules.reason(path, info.st_size)
            if reason is not None:
                skipped[reason] += 1
                continue
            content = _read_regular(full)
            if content is None:
                files_total -= 1
                continue
            entries.append(IndexEntry(path=path, blob_sha=git_blob_sha(content), size=len(content)))
        return SourceIndex(
            entries=entries,
            skipped=skipped,
            files_total=files_total,
            total_bytes=total_bytes,
            commit_sha=self.commit_sha,
        )

    async def read(self, entries: Sequence[IndexEntry]) -> AsyncGenerator[tuple[IndexEntry, bytes], None]:
        for entry in entries:
            content = await asyncio.to_thread(_read_regular, self.root / entry.path)
            if content is not None:
                yield entry, content


def _read_regular(path: Path) -> bytes | None:
    """A regular file's content, refusing to follow a symlink at the last component."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0))
    except OSError:
        return None
    try:
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                return None
            return handle.read()
    except OSError:
        return None
