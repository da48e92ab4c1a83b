"""`codepulse scan PATH_OR_URL`: the scan engines on a developer's machine or in CI, no server.

A directory is scanned as it is on disk: in a git work tree, the files git sees (tracked and
untracked, not ignored) with their current content; elsewhere every file (vendored directories
are not walked). A single file can be given too. A URL (https, SSH, file://) is cloned with the
same code as the server's workers, with the developer's own git credentials (SSH agent,
credential helpers) since it is their machine.

The engines run in a process pool (SCAN_PROCESSES, --processes); results are cached in memory
for the run. No database, no FastAPI: this module stays light to import.

Output: `table` (path:line, severity, rule, title; then a summary), `json`, or `sarif` (2.1.0),
to stdout or `--output FILE`. Exit codes: 0, or 1 when `--fail-on SEVERITY` is given and a
finding at or above it exists; 2 for a usage error or a scan that could not run.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import subprocess
import sys
import time
import warnings
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final

import structlog
from pydantic import ValidationError, create_model
from pydantic_settings import BaseSettings, SettingsConfigDict

from codepulse import __version__
from codepulse.config import Settings
from codepulse.scans.cache import MemoryCache
from codepulse.scans.engine import SEVERITIES, SEVERITY_RANK, Engine, RuleInfo
from codepulse.scans.errors import ScanCancelled, ScanFailure
from codepulse.scans.files import DirectorySource
from codepulse.scans.git import git_environment, run_git, work_tree_files
from codepulse.scans.history import GitHistorySource, HistoryFinding
from codepulse.scans.pipeline import scan_repository, scan_source
from codepulse.scans.pool import EnginePool
from codepulse.scans.results import LocatedFinding, PipelineResult
from codepulse.scans.sarif import build_sarif
from codepulse.scans.scratch import close_scratches

FORMATS: Final = ("table", "json", "sarif")
EXIT_OK: Final = 0
EXIT_FINDINGS: Final = 1
EXIT_ERROR: Final = 2
SCAN_SETTINGS: Final = (
    "SCAN_MAX_FILE_BYTES",
    "SCAN_MAX_REPOSITORY_BYTES",
    "SCAN_CLONE_TIMEOUT_SECONDS",
    "SCAN_PROCESSES",
)


class UsageError(Exception):
    """A mistake in the command line (exit code 2)."""


@dataclass
class LocalScan:
    target: str
    result: PipelineResult
    engines: Mapping[str, Engine]
    seconds: float
    # A history scan (`--history`): per finding, the commit that introduced it and whether HEAD
    # still has it, keyed by fingerprint (the result's findings are then one per fingerprint).
    history: dict[str, HistoryFinding] | None = None
    ref: str | None = None

    def rules(self) -> list[RuleInfo]:
        """The engines' rules (SARIF only: loading bandit's plugins takes a moment)."""
        with warnings.catch_warnings():
            # bandit's plugin loader trips a deprecation in stevedore: not the user's concern.
            warnings.simplefilter("ignore", DeprecationWarning)
            return [rule for engine in self.engines.values() for rule in engine.rules()]


class _ScanEnvironment(BaseSettings):
    model_config = SettingsConfigDict(env_file=None, extra="ignore", case_sensitive=False)


def scan_settings() -> Settings:
    """Settings for a local scan: defaults, plus the SCAN_* variables from the environment.

    Only those are read: a developer's or CI's environment may hold unrelated variables with
    codepulse's names (DATABASE_URL above all) that must not stop a scan. Local repositories
    (file://, paths) are allowed: it is the developer's own machine.
    """
    fields: dict[str, Any] = {
        name: (Settings.model_fields[name].annotation, Settings.model_fields[name]) for name in SCAN_SETTINGS
    }
    environment_model = create_model("ScanEnvironment", __base__=_ScanEnvironment, **fields)
    try:
        values = environment_model().model_dump()
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(str(part) for part in item['loc'])}: {item['msg']}" for item in error.errors())
        raise UsageError(f"configuration error: {problems}") from None
    return Settings.model_construct().model_copy(update={**values, "ALLOW_LOCAL_REPOSITORIES": True})


def _looks_like_url(target: str) -> bool:
    if "://" in target:
        return True
    # scp-like SSH (git@host:owner/repo): a colon before any slash, and not a Windows drive.
    head = target.split("/", 1)[0]
    return ":" in head and len(head.split(":", 1)[0]) > 1


def _classify(target: str) -> tuple[Path, str]:
    path = Path(target).expanduser()
    if not path.exists():
        return path, "missing"
    if path.is_file():
        return path, "file"
    return path, "directory" if path.is_dir() else "other"


async def scan_target(
    target: str,
    *,
    settings: Settings,
    pool: EnginePool,
    ref: str | None = None,
    cache: MemoryCache | None = None,
) -> PipelineResult:
    """Scan a directory, a file or a URL (see the module docstring). Raises UsageError,
    ScanFailure."""
    cache = cache if cache is not None else MemoryCache()
    path, kind = await asyncio.to_thread(_classify, target)
    if kind != "missing" and ref is not None:
        raise UsageError("--ref applies to URLs; check the revision out to scan a local directory at it")
    if kind in ("file", "directory") or (kind == "missing" and _looks_like_url(target)):
        # The fork server loads the engines while the files are listed or the repository cloned,
        # not at the first chunk.
        pool.start()
    if kind == "file":
        source = DirectorySource(path.parent, listed=[path.name])
        return await scan_source(source, settings=settings, cache=cache, pool=pool)
    if kind == "directory":
        listing = await work_tree_files(path)
        source = (
            DirectorySource(path)
            if listing is None
            else DirectorySource(path, listed=listing[0], commit_sha=listing[1])
        )
        return await scan_source(source, settings=settings, cache=cache, pool=pool)
    if kind == "other":
        raise UsageError(f"{target} is neither a directory nor a regular file")
    if _looks_like_url(target):
        return await scan_repository(
            target,
            ref,
            settings=settings,
            cache=cache,
            progress=None,
            cancelled=None,
            pool=pool,
            allow_local=True,
            isolated=False,
        )
    raise UsageError(f"{target}: no such file or directory (and not a repository URL)")


async def scan_history(
    target: str, *, settings: Settings, pool: EnginePool, cache: MemoryCache | None = None
) -> tuple[PipelineResult, dict[str, HistoryFinding]]:
    """Every file version in the history of the Git repository holding the directory `target`
    (reachable from HEAD), each once; findings one per fingerprint, with where they came in."""
    path, kind = await asyncio.to_thread(_classify, target)
    if kind != "directory":
        raise UsageError("--history scans a local Git repository: give its directory")
    pool.start()  # while the history is read
    env = git_environment(inherit=True)
    top = await run_git(["rev-parse", "--show-toplevel"], env=env, cwd=path)
    if top.returncode != 0:
        raise UsageError(f"{target} is not in a Git repository (--history reads its commits)")
    source = GitHistorySource(Path(top.stdout.decode("utf-8", "surrogateescape").strip()), env=env)
    result = await scan_source(source, settings=settings, cache=cache or MemoryCache(), pool=pool)
    found = source.findings(result.findings)
    # Each finding carries its introduction itself too: SARIF reports it (introducedIn, atHead).
    result.findings = sorted(
        source.located(result.findings), key=lambda f: (f.path, f.start_line, f.start_column, f.rule_id)
    )
    return result, {item.finding.fingerprint: item for item in found}


def run(
    target: str,
    *,
    ref: str | None = None,
    history: bool = False,
    engines: Sequence[str] | None = None,
    processes: int | None = None,
    settings: Settings | None = None,
    pool_factory: Callable[[Settings, Sequence[str] | None], EnginePool] | None = None,
) -> LocalScan:
    """Scan synchronously (a fresh event loop and engine pool). Raises UsageError, ScanFailure."""
    settings = settings if settings is not None else scan_settings()
    if processes is not None:
        settings = settings.model_copy(update={"SCAN_PROCESSES": processes})
    factory = pool_factory or EnginePool.from_settings
    pool = factory(settings, list(engines) if engines else None)
    try:
        try:
            engine_map = pool.engines
        except ValueError as error:
            raise UsageError(str(error)) from None
        started = time.monotonic()
        if history:
            if ref is not None:
                raise UsageError("--history reads every commit: it takes no --ref")
            result, found = asyncio.run(scan_history(target, settings=settings, pool=pool))
            seconds = time.monotonic() - started
            return LocalScan(target=target, result=result, engines=engine_map, seconds=seconds, history=found)
        result = asyncio.run(scan_target(target, settings=settings, pool=pool, ref=ref))
        seconds = time.monotonic() - started
        return LocalScan(target=target, result=result, engines=engine_map, seconds=seconds, ref=ref)
    except BaseException:
        pool.kill()  # Ctrl-C or a failure: do not wait for running chunks
        raise
    finally:
        # Nothing runs any more (a failure killed the workers): waiting is only for the workers
        # to exit, which the interpreter's exit would wait for anyway. Not waiting races with it
        # in Python 3.11 (`concurrent.futures.process._python_exit` writes to the executor's
        # wake-up pipe while its thread closes it: "OSError: Bad file descriptor" at exit).
        pool.close()
        close_scratches()  # this process's (now empty) clone directory


# --- output ---------------------------------------------------------------------------------------


def at_or_above(scan: LocalScan, severity: str) -> int:
    """How many findings are at or above `severity`."""
    threshold = SEVERITY_RANK[severity]
    return sum(1 for finding in scan.result.findings if SEVERITY_RANK.get(finding.severity, 0) >= threshold)


def _by_severity(scan: LocalScan) -> dict[str, int]:
    counts = Counter(finding.severity for finding in scan.result.findings)
    return {severity: counts.get(severity, 0) for severity in SEVERITIES}


def render_table(scan: LocalScan) -> str:
    result = scan.result
    findings = sorted(
        result.findings,
        key=lambda f: (-SEVERITY_RANK.get(f.severity, 0), f.path, f.start_line, f.start_column, f.rule_id),
    )
    rows = [(f"{f.path}:{f.start_line}", f.severity, f.rule_id, f.title + _history_note(scan, f)) for f in findings]
    lines: list[str] = []
    if rows:
        widths = [max(len(row[column]) for row in rows) for column in range(3)]
        for location, severity, rule_id, title in rows:
            lines.append(
                f"{location.ljust(widths[0])}  {severity.ljust(widths[1])}  {rule_id.ljust(widths[2])}  {title}"
            )
        lines.append("")
    lines.append(summary_line(scan))
    lines.extend(f"warning: {warning}" for warning in result.warnings)
    return "\n".join(lines) + "\n"


def _history_note(scan: LocalScan, finding: LocatedFinding) -> str:
    seen = scan.history.get(finding.fingerprint) if scan.history is not None else None
    if seen is None or seen.introduced is None:
        return ""
    where = "still at HEAD" if seen.at_head else "only in history: rotate it"
    return f" (since {seen.introduced.commit_sha[:12]}, {seen.introduced.authored_at.date()}; {where})"


def _history_fields(scan: LocalScan, finding: LocatedFinding) -> dict[str, Any]:
    seen = scan.history.get(finding.fingerprint) if scan.history is not None else None
    if seen is None:
        return {}
    introduced = seen.introduced
    return {
        "introduced": None
        if introduced is None
        else {
            "commit_sha": introduced.commit_sha,
            "author": introduced.author,
            "authored_at": introduced.authored_at.isoformat(),
        },
        "at_head": seen.at_head,
    }


def summary_line(scan: LocalScan) -> str:
    result = scan.result
    counts = ", ".join(f"{count} {severity}" for severity, count in _by_severity(scan).items() if count)
    skipped = sum(result.skipped.values())
    summary = f"{len(result.findings)} finding{'s' if len(result.findings) != 1 else ''}"
    summary += f" ({counts})" if counts else ""
    summary += f" in {result.files_scanned} file{'s' if result.files_scanned != 1 else ''}"
    if skipped:
        reasons = ", ".join(f"{count} {reason.replace('_', ' ')}" for reason, count in result.skipped.items())
        summary += f", {skipped} skipped ({reasons})"
    return summary + f"; {scan.seconds:.2f} s"


def render_json(scan: LocalScan) -> str:
    result = scan.result
    document = {
        "target": scan.target,
        "commit_sha": result.commit_sha,
        "findings": [
            {
                "path": f.path,
                "rule_id": f.rule_id,
                "engine": f.engine,
                "severity": f.severity,
                "confidence": f.confidence,
                "title": f.title,
                "message": f.message,
                "start_line": f.start_line,
                "end_line": f.end_line,
                "start_column": f.start_column,
                "end_column": f.end_column,
                "snippet": f.snippet,
                "cwe": f.cwe,
                "fingerprint": f.fingerprint,
                **_history_fields(scan, f),
            }
            for f in result.findings
        ],
        "summary": {
            "by_severity": _by_severity(scan),
            "files_total": result.files_total,
            "files_scanned": result.files_scanned,
            "bytes_scanned": result.bytes_scanned,
            "skipped": result.skipped,
            "engine_versions": result.engine_versions,
            "seconds": round(scan.seconds, 3),
            "warnings": result.warnings,
        },
        "tool": {"name": "codepulse", "version": __version__},
    }
    return json.dumps(document, indent=2) + "\n"


def render_sarif(scan: LocalScan) -> str:
    repository_uri, branch = _provenance(scan)
    sarif = build_sarif(
        scan.result.findings,
        scan.rules(),
        tool_version=__version__,
        repository_uri=repository_uri,
        commit_sha=scan.result.commit_sha,
        branch=branch,
    )
    return json.dumps(sarif, indent=2) + "\n"


_SCP_LIKE: Final = re.compile(r"^(?:[^@/:]+@)?(?P<host>[^:/]+):(?P<path>.+)$")


def _provenance(scan: LocalScan) -> tuple[str | None, str | None]:
    """The repository (as a URI, credentials dropped by SARIF's builder) and branch a local scan
    looked at: a URL target and its `--ref`, or a work tree's `origin` and current branch."""
    if _looks_like_url(scan.target):
        match = None if "://" in scan.target else _SCP_LIKE.match(scan.target)
        uri = f"ssh://{match['host']}/{match['path']}" if match else scan.target
        ref = scan.ref
        return uri, ref if ref and not (scan.result.commit_sha or "").startswith(ref.lower()) else None
    path = Path(scan.target).expanduser()
    cwd = path if path.is_dir() else path.parent
    env = git_environment(inherit=True)

    def ask(*args: str) -> str | None:
        try:
            # Fixed arguments, git from PATH as every git call of the scanner.
            done = subprocess.run(  # noqa: S603
                ["git", *args],  # noqa: S607
                cwd=cwd,
                env=env,
                capture_output=True,
                timeout=5,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        value = done.stdout.decode("utf-8", "replace").strip()
        return value if done.returncode == 0 and value else None

    origin = ask("config", "--get", "remote.origin.url")
    if origin is not None and "://" not in origin:
        match = _SCP_LIKE.match(origin)
        origin = f"ssh://{match['host']}/{match['path']}" if match else None
    return origin, ask("symbolic-ref", "--quiet", "--short", "HEAD")


RENDERERS: Final = {"table": render_table, "json": render_json, "sarif": render_sarif}


def _configure_logging() -> None:
    """Warnings and errors to stderr only: stdout carries the report."""
    structlog.configure(
        processors=[structlog.processors.add_log_level, structlog.dev.ConsoleRenderer(colors=False)],
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )


def main(
    target: str,
    *,
    output_format: str = "table",
    fail_on: str | None = None,
    output: Path | None = None,
    ref: str | None = None,
    engines: Sequence[str] | None = None,
    processes: int | None = None,
    history: bool = False,
    stderr: IO[str] | None = None,
) -> int:
    """The `codepulse scan` command; returns the exit code."""
    err = stderr or sys.stderr
    if output_format not in RENDERERS:
        err.write(f"codepulse: unknown format {output_format!r} (use {', '.join(FORMATS)})\n")
        return EXIT_ERROR
    if fail_on is not None and fail_on not in SEVERITY_RANK:
        err.write(f"codepulse: unknown severity {fail_on!r} (use {', '.join(SEVERITIES)})\n")
        return EXIT_ERROR
    _configure_logging()
    try:
        scan = run(target, ref=ref, engines=engines, processes=processes, history=history)
    except UsageError as error:
        err.write(f"codepulse: {error}\n")
        return EXIT_ERROR
    except ScanFailure as failure:
        err.write(f"codepulse: scan failed ({failure.code}): {failure.message}\n")
        return EXIT_ERROR
    except ScanCancelled:  # pragma: no cover - no cancel signal in the CLI
        return EXIT_ERROR
    report = RENDERERS[output_format](scan)
    if output is not None:
        try:
            output.write_text(report, encoding="utf-8")
        except OSError as error:
            err.write(f"codepulse: cannot write {output}: {error.strerror or error}\n")
            return EXIT_ERROR
        if output_format != "table":
            err.write(summary_line(scan) + "\n")
    else:
        sys.stdout.write(report)
        sys.stdout.flush()
    if fail_on is not None and at_or_above(scan, fail_on):
        return EXIT_FINDINGS
    return EXIT_OK
