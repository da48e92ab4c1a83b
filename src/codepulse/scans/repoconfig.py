"""A repository's own `.codepulse.yml`: parsing it and matching its `exclude:` globs, with limits.

```yaml
exclude: [fixtures/, "docs/**/*.md"]   # a glob or a list of globs
rules:                                  # see `ruleset` for the default profile
  enable: [B101]
  disable: [bandit.B311]
  severity: {generic-api-key: low}
  min_confidence: low
```

The file is written by whoever can push to the repository, so it is hostile input. It is parsed
and its globs are matched against the scan's paths in the engine pool's process, never on the
event loop (a worker inside `codepulse serve` shares its loop with the API):

- the file is read up to `CONFIG_MAX_BYTES`; larger, it is ignored;
- YAML aliases (`*name`, `<<: *name`) are refused (an alias chain doubles its size per level)
  and nesting is capped at `MAX_YAML_DEPTH`;
- at most `MAX_EXCLUDE_PATTERNS` globs of at most `MAX_GLOB_LENGTH` characters are used, and at
  most `MAX_RULE_ENTRIES` rule ids (`RULE_ID_MAX_LENGTH` characters) per `rules:` list;
- parsing and matching together get `SCAN_CONFIG_TIME_BUDGET_SECONDS` (a SIGALRM in the pool's
  process interrupts even a regex stuck backtracking); past it the globs are ignored and every
  file is scanned;

each limit hit, and each entry of `rules:` that is not valid, is a scan warning, never a failure:
a broken config must not stop secrets from being found. Warnings and logs describe what was
refused, never a `repr` of what was parsed.
"""

from __future__ import annotations

import asyncio
import re
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Final

import structlog
import yaml

from codepulse.scans.engine.base import CONFIDENCES, SEVERITIES
from codepulse.scans.ruleset import RuleOverrides, normalise_rule_id

if TYPE_CHECKING:
    from codepulse.scans.pool import EnginePool

log = structlog.get_logger("codepulse.scans")

CONFIG_FILES: Final = (".codepulse.yml", ".codepulse.yaml")
CONFIG_MAX_BYTES: Final = 65_536
MAX_YAML_DEPTH: Final = 16
MAX_EXCLUDE_PATTERNS: Final = 200
MAX_GLOB_LENGTH: Final = 256
MAX_RULE_ENTRIES: Final = 200
RULE_ID_MAX_LENGTH: Final = 100
_RULE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]*")
_RULES_KEYS: Final = ("enable", "disable", "severity", "min_confidence")
KILL_MARGIN_SECONDS: Final = 5.0
"""How long past the budget the parent waits for the pool before killing its workers (the
alarm in the worker normally answers first)."""


class _Refused(Exception):
    """The file uses something the loader refuses (the message says what)."""


class BudgetExceeded(Exception):
    """Parsing and matching took longer than the time budget."""


# --- parsing -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RepositoryConfig:
    exclude: tuple[str, ...] = ()
    rules: RuleOverrides = field(default_factory=RuleOverrides)
    warnings: tuple[str, ...] = ()


class _Loader(yaml.SafeLoader):
    """SafeLoader without aliases and with bounded nesting."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            raise _Refused("uses a YAML alias (*name), which is not allowed")
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise _Refused(f"is nested more than {MAX_YAML_DEPTH} levels deep")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _kind(value: object) -> str:
    """What a YAML value is, for a warning (never its content)."""
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if value is None:
        return "empty"
    return "not a string"


def _load(raw: bytes) -> tuple[Any, str | None]:
    """The parsed document, or the warning that says why there is none."""
    if len(raw) > CONFIG_MAX_BYTES:
        return None, f".codepulse.yml is larger than {CONFIG_MAX_BYTES} bytes; ignored"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None, ".codepulse.yml is not UTF-8 text; ignored"
    try:
        return yaml.load(text, Loader=_Loader), None  # noqa: S506 - a SafeLoader subclass
    except _Refused as refused:
        return None, f".codepulse.yml {refused}; ignored"
    except (yaml.YAMLError, RecursionError, ValueError) as error:
        lines = str(error).splitlines()
        first_line = lines[0][:200] if lines else type(error).__name__
        return None, f".codepulse.yml is not valid YAML ({first_line}); ignored"


def parse_config(raw: bytes | None) -> RepositoryConfig:
    """`.codepulse.yml`: `exclude:` a glob or a list of globs; `rules:` overrides of the default
    profile. Problems become warnings (a part that is not valid is ignored, the rest applies)."""
    if raw is None:
        return RepositoryConfig()
    data, problem = _load(raw)
    if problem is not None:
        return RepositoryConfig(warnings=(problem,))
    if data is None:
        return RepositoryConfig()
    if not isinstance(data, dict):
        return RepositoryConfig(warnings=(".codepulse.yml must be a mapping; ignored",))
    warnings: list[str] = []
    patterns = _parse_exclude(data.get("exclude", []), warnings)
    rules = _parse_rules(data.get("rules"), warnings)
    return RepositoryConfig(exclude=tuple(patterns), rules=rules, warnings=tuple(warnings))


def _parse_exclude(raw_exclude: object, warnings: list[str]) -> list[str]:
    if isinstance(raw_exclude, str):
        raw_exclude = [raw_exclude]
    if not isinstance(raw_exclude, list):
        warnings.append(".codepulse.yml `exclude` must be a list of globs; ignored")
        return []
    patterns: list[str] = []
    for number, item in enumerate(raw_exclude[:MAX_EXCLUDE_PATTERNS], start=1):
        problem = _glob_problem(item)
        if problem is not None:
            warnings.append(f".codepulse.yml `exclude` entry {number}: {problem}; ignored")
        else:
            patterns.append(str(item).strip())
    if len(raw_exclude) > MAX_EXCLUDE_PATTERNS:
        warnings.append(f".codepulse.yml `exclude`: only the first {MAX_EXCLUDE_PATTERNS} globs are used")
    return patterns


def _parse_rules(raw: object, warnings: list[str]) -> RuleOverrides:
    """`rules:` {enable: [ids], disable: [ids], severity: {id: level}, min_confidence: level}."""
    if raw is None:
        return RuleOverrides()
    if not isinstance(raw, dict):
        warnings.append(".codepulse.yml `rules` must be a mapping; ignored")
        return RuleOverrides()
    for key in raw:
        if key not in _RULES_KEYS:
            name = f"`{key[:40]}`" if isinstance(key, str) and _RULE_ID.fullmatch(key) else _kind(key)
            warnings.append(f".codepulse.yml `rules`: unknown key {name} (expected {', '.join(_RULES_KEYS)}); ignored")
    return RuleOverrides(
        enable=_rule_ids(raw.get("enable"), "enable", warnings),
        disable=_rule_ids(raw.get("disable"), "disable", warnings),
        severity=_severities(raw.get("severity"), warnings),
        min_confidence=_level(raw.get("min_confidence"), "rules.min_confidence", CONFIDENCES, warnings),
    )


def _rule_id_problem(item: object) -> str | None:
    if not isinstance(item, str):
        return f"{_kind(item)}, not a rule id"
    if len(item.strip()) > RULE_ID_MAX_LENGTH:
        return f"a rule id longer than {RULE_ID_MAX_LENGTH} characters"
    if not _RULE_ID.fullmatch(item.strip()):
        return "not a rule id (letters, digits and . _ : / - only)"
    return None


def _rule_ids(raw: object, key: str, warnings: list[str]) -> tuple[str, ...]:
    if raw is None:
        return ()
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list):
        warnings.append(f".codepulse.yml `rules.{key}` must be a list of rule ids; ignored")
        return ()
    ids: list[str] = []
    for number, item in enumerate(raw[:MAX_RULE_ENTRIES], start=1):
        problem = _rule_id_problem(item)
        if problem is not None:
            warnings.append(f".codepulse.yml `rules.{key}` entry {number}: {problem}; ignored")
        else:
            ids.append(normalise_rule_id(str(item)))
    if len(raw) > MAX_RULE_ENTRIES:
        warnings.append(f".codepulse.yml `rules.{key}`: only the first {MAX_RULE_ENTRIES} rule ids are used")
    return tuple(dict.fromkeys(ids))


def _severities(raw: object, warnings: list[str]) -> tuple[tuple[str, str], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        warnings.append(".codepulse.yml `rules.severity` must be a mapping of rule ids to severities; ignored")
        return ()
    pairs: dict[str, str] = {}
    for number, (item, value) in enumerate(list(raw.items())[:MAX_RULE_ENTRIES], start=1):
        problem = _rule_id_problem(item)
        if problem is not None:
            warnings.append(f".codepulse.yml `rules.severity` entry {number}: {problem}; ignored")
            continue
        rule = normalise_rule_id(str(item))
        level = _level(value, f"rules.severity` for `{rule}", SEVERITIES, warnings)
        if level is not None:
            pairs[rule] = level
    if len(raw) > MAX_RULE_ENTRIES:
        warnings.append(f".codepulse.yml `rules.severity`: only the first {MAX_RULE_ENTRIES} rules are used")
    return tuple(sorted(pairs.items()))


def _level(raw: object, key: str, levels: tuple[str, ...], warnings: list[str]) -> str | None:
    """One of `levels` (case-insensitive), or None (a warning when something else was given)."""
    if raw is None:
        return None
    if isinstance(raw, str) and raw.strip().lower() in levels:
        return raw.strip().lower()
    what = f"`{raw[:20]}`" if isinstance(raw, str) and _RULE_ID.fullmatch(raw) else _kind(raw)
    warnings.append(f".codepulse.yml `{key}`: {what} is not one of {', '.join(levels)}; ignored")
    return None


def _glob_problem(item: object) -> str | None:
    if not isinstance(item, str):
        return f"{_kind(item)}, not a glob"
    pattern = item.strip()
    if not pattern:
        return "an empty glob"
    if len(pattern) > MAX_GLOB_LENGTH:
        return f"a glob longer than {MAX_GLOB_LENGTH} characters"
    try:
        compile_glob(pattern)
    except re.error:
        return f"{pattern!r} is not a valid glob"
    return None


# --- globs -------------------------------------------------------------------------------------


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
    # `**/**/` is `**/`: repeated, each would be a nested `(?:.*/)?` that backtracks
    # polynomially in the path's depth (a 10-fold `**/` stalled a scan for half a minute).
    while "**/**/" in body:
        body = body.replace("**/**/", "**/")
    while body.endswith("**/**"):
        body = body[:-3]
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
    prefix = "" if anchored or body.startswith("**/") else "(?:.*/)?"
    return re.compile(f"^{prefix}{''.join(out)}(?:/.*)?$", re.DOTALL)


def matches_any(path: str, patterns: Sequence[str]) -> bool:
    return any(compile_glob(pattern).match(path) for pattern in patterns)


# --- in the engine process ---------------------------------------------------------------------


@dataclass(frozen=True)
class Exclusions:
    """Which of the paths given the config excludes (their indices), and the warnings."""

    excluded: frozenset[int] = frozenset()
    warnings: tuple[str, ...] = ()
    rules: RuleOverrides = field(default_factory=RuleOverrides)
    """The config's `rules:` (also when its globs were cut short by the budget)."""


def _raise_budget_exceeded(signum: int, frame: object) -> None:
    raise BudgetExceeded


@contextmanager
def _alarm(seconds: float) -> Iterator[None]:
    """SIGALRM after `seconds` (raising BudgetExceeded), in a process's main thread; elsewhere
    (an in-process call in a test) only the checks between paths bound the time."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return
    previous = signal.signal(signal.SIGALRM, _raise_budget_exceeded)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def budget_warning(budget: float) -> str:
    return (
        f".codepulse.yml took longer than {budget:g} s to apply (SCAN_CONFIG_TIME_BUDGET_SECONDS); "
        "its exclude globs were ignored and every file was scanned"
    )


def evaluate(raw: bytes | None, paths: Sequence[str], budget: float) -> Exclusions:
    """Runs in an engine process: parse the config and match its globs against `paths` within
    `budget` seconds."""
    deadline = time.monotonic() + budget
    config = RepositoryConfig()
    try:
        with _alarm(budget):
            config = parse_config(raw)
            if not config.exclude:
                return Exclusions(warnings=config.warnings, rules=config.rules)
            matchers = [compile_glob(pattern).match for pattern in config.exclude]
            excluded: set[int] = set()
            for index, path in enumerate(paths):
                if index % 256 == 0 and time.monotonic() > deadline:
                    raise BudgetExceeded
                if any(match(path) for match in matchers):
                    excluded.add(index)
            return Exclusions(frozenset(excluded), config.warnings, config.rules)
    except BudgetExceeded:
        return Exclusions(warnings=(budget_warning(budget),), rules=config.rules)


async def exclusions(pool: EnginePool, raw: bytes | None, paths: Sequence[str], budget: float) -> Exclusions:
    """`evaluate` in the engine pool, awaited without blocking the event loop. Should the pool
    not answer well past the budget, its workers are killed and the globs ignored."""
    if raw is None:
        return Exclusions()
    items = list(paths)
    for attempt in (1, 2):
        try:
            async with asyncio.timeout(budget + KILL_MARGIN_SECONDS):
                return await asyncio.wrap_future(pool.call(evaluate, raw, items, budget))
        except BrokenProcessPool:
            if attempt == 2:  # another scan's cancel killed the workers under it, twice
                raise
        except TimeoutError:
            log.warning("scan.config_budget_killed", budget_seconds=budget)
            pool.kill()
            break
    return Exclusions(warnings=(budget_warning(budget),))
