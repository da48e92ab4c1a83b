#!/usr/bin/env python
"""Start-up-to-ready time of the real `codepulse serve` on SQLite.

Each run makes a fresh temporary directory, starts the server there twice and times, from
process spawn, until `GET /api/v1/health/ready` answers 200 (polled every 10 ms):

* cold: a fresh database file, so the start includes creating it and migrating to head;
* warm: the same database again, already at head.

Each server is then stopped with SIGTERM and must finish within 10 s: exit 0, or uvicorn's
re-raised SIGTERM after a completed graceful shutdown (returncode -15).

Python's bytecode cache changes the figure a lot (FastAPI, SQLAlchemy and Alembic are big), so
by default the runs are made twice: with the environment as inherited (when
PYTHONDONTWRITEBYTECODE is set, as in some sandboxes, every start compiles every module from
source) and with a private, primed bytecode cache (PYTHONPYCACHEPREFIX under the temp dir),
which is what a deployed image with compiled bytecode sees. The repository and .venv are
never written to.

    uv run python tests/benchmarks/startup.py            # 5 runs, both bytecode modes
    uv run python tests/benchmarks/startup.py 10 --bytecode cached
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:  # mypy sees this folder as the package tests.benchmarks
    from tests.benchmarks._serve import (
        READY_PATH,
        SHUTDOWN_LIMIT_SECONDS,
        clean_exit,
        describe_exit,
        free_port,
        stop_server,
    )
else:  # run as a script, this folder is sys.path[0]
    from _serve import READY_PATH, SHUTDOWN_LIMIT_SECONDS, clean_exit, describe_exit, free_port, stop_server

POLL_INTERVAL_SECONDS = 0.010

# Run in a child interpreter: the phases of `codepulse serve` before uvicorn binds its socket.
_IMPORT_PROBE = """
import json, time
t0 = time.perf_counter()
import codepulse.cli
t1 = time.perf_counter()
import codepulse.app
t2 = time.perf_counter()
from codepulse.config import load_settings
settings = load_settings()
app = codepulse.app.create_app(settings)
t3 = time.perf_counter()
print(json.dumps({"cli": t1 - t0, "app": t2 - t1, "factory": t3 - t2}))
"""


@dataclass
class Sample:
    ready: float  # spawn -> first 200 from /health/ready
    first_answer: float  # spawn -> first HTTP answer of any status (the socket is listening)
    shutdown: float  # SIGTERM -> exit
    exit_code: int | None  # None: still running after the limit (then killed)
    log_lines: list[str] = field(default_factory=list)  # WARNING and above, as LOG_LEVEL=WARNING


@dataclass
class ImportProfile:
    interpreter: float
    cli: float
    app: float
    factory: float
    wall: float


@dataclass
class ModeResult:
    name: str
    description: str
    imports: ImportProfile | None
    cold: list[Sample] = field(default_factory=list)
    warm: list[Sample] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


class StartFailed(Exception):
    pass


def server_env(base: dict[str, str], directory: Path, log_level: str = "WARNING") -> dict[str, str]:
    env = dict(base)
    env.update(
        DATABASE_URL=f"sqlite+aiosqlite:///{directory / 'codepulse.db'}",
        VAR_DIR=str(directory / "var"),
        LOG_LEVEL=log_level,
    )
    return env


def run_server_once(directory: Path, env: dict[str, str], timeout: float) -> Sample:
    """Start `codepulse serve` in `directory`, time it to ready, stop it with SIGTERM."""
    port = free_port()
    log_path = directory / f"server-{port}.log"
    command = [sys.executable, "-m", "codepulse", "serve", "--port", str(port)]
    url = f"http://127.0.0.1:{port}{READY_PATH}"
    with log_path.open("w") as log, httpx.Client(timeout=1.0) as client:
        started = time.perf_counter()
        # cwd = the temp dir, so a developer's .env or ./var cannot leak into the measurement.
        process = subprocess.Popen(command, cwd=directory, env=env, stdout=log, stderr=subprocess.STDOUT)
        first_answer: float | None = None
        ready: float | None = None
        try:
            while True:
                elapsed = time.perf_counter() - started
                if process.poll() is not None:
                    raise StartFailed(f"server exited with {describe_exit(process.returncode)} before ready")
                if elapsed > timeout:
                    raise StartFailed(f"not ready within {timeout:g} s")
                try:
                    response = client.get(url)
                except httpx.TransportError:
                    pass
                else:
                    now = time.perf_counter() - started
                    if first_answer is None:
                        first_answer = now
                    if response.status_code == 200:
                        ready = now
                        break
                time.sleep(POLL_INTERVAL_SECONDS)
        except BaseException:
            process.kill()
            process.wait()
            raise
        exit_code, shutdown = stop_server(process)
    lines = [line.rstrip() for line in log_path.read_text(errors="replace").splitlines() if line.strip()]
    return Sample(
        ready=ready,
        first_answer=first_answer if first_answer is not None else ready,
        shutdown=shutdown,
        exit_code=exit_code,
        log_lines=lines,
    )


def profile_imports(env: dict[str, str], directory: Path, repeat: int = 3) -> ImportProfile:
    """Median of `repeat` child interpreters: bare start-up, then the imports and create_app."""
    bare: list[float] = []
    profiles: list[dict[str, float]] = []
    walls: list[float] = []
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], env=env, cwd=directory, check=True)
        bare.append(time.perf_counter() - started)
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", _IMPORT_PROBE],
            env=env,
            cwd=directory,
            check=True,
            capture_output=True,
            text=True,
        )
        walls.append(time.perf_counter() - started)
        profiles.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return ImportProfile(
        interpreter=statistics.median(bare),
        cli=statistics.median(p["cli"] for p in profiles),
        app=statistics.median(p["app"] for p in profiles),
        factory=statistics.median(p["factory"] for p in profiles),
        wall=statistics.median(walls),
    )


@contextmanager
def bytecode_env(mode: str, scratch: Path) -> Iterator[tuple[dict[str, str], str]]:
    env = dict(os.environ)
    if mode == "as-is":
        dont_write = env.get("PYTHONDONTWRITEBYTECODE")
        prefix = env.get("PYTHONPYCACHEPREFIX")
        if dont_write:
            note = f"PYTHONDONTWRITEBYTECODE={dont_write}: .pyc files are not written, existing ones are used"
        elif prefix:
            note = f"PYTHONPYCACHEPREFIX={prefix}"
        else:
            note = "default __pycache__ directories (written on first import)"
        yield env, f"environment as inherited ({note})"
        return
    cache = scratch / "pycache"
    cache.mkdir(exist_ok=True)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(cache)
    yield env, f"private primed bytecode cache (PYTHONPYCACHEPREFIX={cache})"


def run_mode(mode: str, runs: int, timeout: float, scratch: Path) -> ModeResult:
    with bytecode_env(mode, scratch) as (env, description):
        result = ModeResult(name=mode, description=description, imports=None)
        if mode == "cached":
            # One untimed start fills the cache with everything serve imports (alembic env, uvicorn loops).
            with tempfile.TemporaryDirectory(prefix="codepulse-prime-", dir=scratch) as prime:
                try:
                    run_server_once(Path(prime), server_env(env, Path(prime)), timeout)
                except StartFailed as error:
                    result.failures.append(f"priming start: {error}")
        with tempfile.TemporaryDirectory(prefix="codepulse-imports-", dir=scratch) as probe_dir:
            result.imports = profile_imports(server_env(env, Path(probe_dir)), Path(probe_dir))
        for index in range(1, runs + 1):
            with tempfile.TemporaryDirectory(prefix=f"codepulse-run{index}-", dir=scratch) as raw:
                directory = Path(raw)
                run_env = server_env(env, directory)
                for kind, bucket in (("cold", result.cold), ("warm", result.warm)):
                    try:
                        sample = run_server_once(directory, run_env, timeout)
                    except StartFailed as error:
                        log_tail = _log_tail(directory)
                        result.failures.append(f"run {index} {kind}: {error}{log_tail}")
                        continue
                    bucket.append(sample)
                    print(
                        f"  [{mode}] run {index} {kind}: ready {sample.ready:.3f} s "
                        f"(first answer {sample.first_answer:.3f} s), "
                        f"SIGTERM -> {describe_exit(sample.exit_code)} in {sample.shutdown:.2f} s",
                        flush=True,
                    )
        return result


def _log_tail(directory: Path) -> str:
    logs = sorted(directory.glob("server-*.log"), key=lambda p: p.stat().st_mtime)
    if not logs:
        return ""
    tail = logs[-1].read_text(errors="replace").splitlines()[-15:]
    return "\n      " + "\n      ".join(tail)


def _stats(values: Sequence[float], budget: float) -> str:
    median = statistics.median(values)
    return (
        f"min {min(values):.3f} s  median {median:.3f} s  max {max(values):.3f} s"
        f"  -> median {median:.2f} s = {median / budget:.2f}x the {budget:g} s budget"
    )


def report(result: ModeResult, budget: float) -> bool:
    """Print one mode's figures; True when every check passed."""
    ok = not result.failures
    print()
    print(f"== bytecode: {result.name} — {result.description}")
    if result.imports is not None:
        imp = result.imports
        print(
            f"  imports (median of 3 child interpreters): interpreter start {imp.interpreter:.3f} s, "
            f"import codepulse.cli {imp.cli:.3f} s, + codepulse.app {imp.app:.3f} s, "
            f"create_app() {imp.factory:.3f} s; process wall {imp.wall:.3f} s"
        )
    for kind, samples in (("cold (fresh db, migrates)", result.cold), ("warm (db at head)        ", result.warm)):
        if samples:
            print(f"  {kind}  n={len(samples)}  {_stats([s.ready for s in samples], budget)}")
    if result.cold and result.warm:
        migrate = statistics.median(s.ready for s in result.cold) - statistics.median(s.ready for s in result.warm)
        print(f"  cold - warm median (≈ creating the db + migrating): {migrate:.3f} s")
    samples = result.cold + result.warm
    if samples:
        gap = statistics.median(s.ready - s.first_answer for s in samples)
        print(f"  first HTTP answer -> ready, median: {gap * 1000:.1f} ms")
        exits: dict[str, int] = {}
        for sample in samples:
            key = describe_exit(sample.exit_code)
            exits[key] = exits.get(key, 0) + 1
        shutdown = statistics.median(s.shutdown for s in samples)
        summary = ", ".join(f"{key} x{count}" for key, count in exits.items())
        clean = all(clean_exit(s.exit_code) for s in samples)
        ok = ok and clean
        print(
            f"  SIGTERM: {summary}; median {shutdown:.2f} s to exit -> "
            f"{'OK' if clean else f'CHECK FAILED (expected a clean stop within {SHUTDOWN_LIMIT_SECONDS:g} s)'}"
        )
        logged = [line for s in samples for line in s.log_lines]
        if logged:
            ok = False
            print(f"  server logged {len(logged)} line(s) at WARNING or above, e.g.:")
            for line in list(dict.fromkeys(logged))[:5]:
                print(f"    {line}")
        else:
            print("  server log at LOG_LEVEL=WARNING: empty (no warnings or errors)")
    for failure in result.failures:
        print(f"  FAILED: {failure}")
    return ok


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="?", type=int, default=5, help="runs per mode (each: one cold + one warm start)")
    parser.add_argument("--budget", type=float, default=2.0, help="start-up target in seconds (default 2)")
    parser.add_argument("--timeout", type=float, default=60.0, help="give up on a start after this many seconds")
    parser.add_argument(
        "--bytecode",
        choices=("as-is", "cached", "both"),
        default="both",
        help="as-is: inherited environment; cached: private primed .pyc cache; both (default)",
    )
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("runs must be at least 1")

    modes = ["as-is", "cached"] if args.bytecode == "both" else [args.bytecode]
    load = os.getloadavg()
    print(f"codepulse start-up benchmark: SQLite, {args.runs} run(s) per mode, budget {args.budget:g} s")
    print(
        f"python {sys.version.split()[0]} ({sys.executable}), {os.cpu_count()} CPU(s), "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    with tempfile.TemporaryDirectory(prefix="codepulse-startup-") as scratch:
        results = [run_mode(mode, args.runs, args.timeout, Path(scratch)) for mode in modes]
    all_ok = True
    for result in results:
        all_ok = report(result, args.budget) and all_ok
    print()
    print("result: all checks passed" if all_ok else "result: some checks FAILED (see above)")
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
