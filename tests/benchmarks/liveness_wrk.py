#!/usr/bin/env python
"""Throughput and latency of `GET /api/v1/health` (liveness, no I/O) under wrk.

For each log level (default: WARNING, then INFO, since production writes an access line per
request) it starts `codepulse serve` with one worker on a fresh SQLite database in a temporary
directory, waits for readiness, warms up, runs

    wrk -t<threads> -c<connections> -d<duration>s --latency http://127.0.0.1:<port>/api/v1/health

and prints requests/s, p50/p90/p99 latency, errors, the server's CPU use, and what it logged.
wrk and the server share the machine: on 2 cores the figures are a floor, not a capacity.

    uv run python tests/benchmarks/liveness_wrk.py
    uv run python tests/benchmarks/liveness_wrk.py --duration 30 --connections 100 --levels INFO --log-json

Needs wrk on PATH (Debian/Ubuntu: `apt-get install -y wrk`; macOS: `brew install wrk`).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # mypy sees this folder as the package tests.benchmarks
    from tests.benchmarks._serve import (
        LIVENESS_PATH,
        WRK_MISSING,
        BenchmarkError,
        WrkResult,
        cpu_seconds,
        describe_exit,
        free_port,
        machine_line,
        run_wrk,
        stop_server,
        summarise_log,
        wait_ready,
    )
else:  # run as a script, this folder is sys.path[0]
    from _serve import (
        LIVENESS_PATH,
        WRK_MISSING,
        BenchmarkError,
        WrkResult,
        cpu_seconds,
        describe_exit,
        free_port,
        machine_line,
        run_wrk,
        stop_server,
        summarise_log,
        wait_ready,
    )


@dataclass
class RunResult:
    level: str
    log_json: bool
    wrk: WrkResult
    server_cpu_seconds: float | None
    exit_code: int | None
    shutdown_seconds: float
    log_levels: Counter[str]
    log_lines: int
    notable_lines: list[str]


def bench_level(level: str, args: argparse.Namespace, scratch: Path) -> RunResult:
    directory = Path(tempfile.mkdtemp(prefix=f"codepulse-wrk-{level.lower()}-", dir=scratch))
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    env = dict(os.environ)
    env.update(
        DATABASE_URL=f"sqlite+aiosqlite:///{directory / 'codepulse.db'}",
        VAR_DIR=str(directory / "var"),
        LOG_LEVEL=level,
        LOG_JSON="true" if args.log_json else "false",
        WEB_CONCURRENCY="1",
    )
    log_path = directory / "server.log"
    command = [sys.executable, "-m", "codepulse", "serve", "--port", str(port), "--workers", "1"]
    with log_path.open("w") as log:
        # Logs go to a file, as a container runtime would take them from a pipe: not a terminal.
        process = subprocess.Popen(command, cwd=directory, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_ready(process, base_url, args.timeout)
            if args.warmup > 0:
                run_wrk(base_url + LIVENESS_PATH, args.threads, args.connections, args.warmup)
            cpu_before = cpu_seconds(process.pid)
            wrk = run_wrk(base_url + LIVENESS_PATH, args.threads, args.connections, args.duration)
            cpu_after = cpu_seconds(process.pid)
        except BaseException:
            process.kill()
            process.wait()
            raise
        exit_code, shutdown = stop_server(process)
    summary = summarise_log(log_path)
    return RunResult(
        level=level,
        log_json=args.log_json,
        wrk=wrk,
        server_cpu_seconds=None if cpu_before is None or cpu_after is None else cpu_after - cpu_before,
        exit_code=exit_code,
        shutdown_seconds=shutdown,
        log_levels=summary.levels,
        log_lines=summary.lines,
        notable_lines=summary.notable,
    )


def report(result: RunResult, args: argparse.Namespace) -> None:
    wrk = result.wrk
    pct = wrk.percentiles_ms
    fmt = " (LOG_JSON=true)" if result.log_json else ""
    print()
    print(f"== LOG_LEVEL={result.level}{fmt}: wrk -t{args.threads} -c{args.connections} -d{args.duration:g}s")
    print(f"  requests/s: {wrk.requests_per_second:,.0f}  ({wrk.requests:,} requests in {wrk.seconds:.2f} s)")
    print(
        f"  latency: p50 {pct.get(50, float('nan')):.2f} ms  p90 {pct.get(90, float('nan')):.2f} ms  "
        f"p99 {pct.get(99, float('nan')):.2f} ms  (avg {wrk.latency_avg_ms:.2f} ms, max {wrk.latency_max_ms:.2f} ms)"
    )
    errors = sum(wrk.socket_errors.values())
    detail = ", ".join(f"{k} {v}" for k, v in wrk.socket_errors.items() if v)
    print(f"  errors: non-2xx {wrk.non_2xx}, socket errors {errors}{f' ({detail})' if detail else ''}")
    if result.server_cpu_seconds is not None:
        busy = result.server_cpu_seconds / wrk.seconds * 100
        per_request = result.server_cpu_seconds / max(wrk.requests, 1) * 1_000_000
        print(f"  server CPU: {busy:.0f}% of one core, {per_request:.0f} µs CPU per request")
    levels = ", ".join(f"{name} {count:,}" for name, count in sorted(result.log_levels.items())) or "none"
    print(f"  server log: {result.log_lines:,} line(s) ({levels})")
    for line in result.notable_lines:
        print(f"    {line}")
    print(f"  SIGTERM: {describe_exit(result.exit_code)} in {result.shutdown_seconds:.2f} s")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", "-d", type=float, default=10.0, help="seconds per wrk run (default 10)")
    parser.add_argument("--connections", "-c", type=int, default=50, help="open connections (default 50)")
    parser.add_argument("--threads", "-t", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--warmup", type=float, default=2.0, help="untimed wrk seconds first (default 2; 0: none)")
    parser.add_argument("--levels", default="WARNING,INFO", help="comma-separated LOG_LEVELs (default WARNING,INFO)")
    parser.add_argument("--log-json", action="store_true", help="LOG_JSON=true (production-style JSON lines)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for readiness")
    args = parser.parse_args(argv)
    if args.threads > args.connections:
        parser.error("--threads must not exceed --connections (wrk needs a connection per thread)")

    if shutil.which("wrk") is None:
        print(WRK_MISSING, file=sys.stderr)
        return 2

    levels = [level.strip().upper() for level in args.levels.split(",") if level.strip()]
    print(f"codepulse liveness benchmark: GET {LIVENESS_PATH}, one worker, SQLite")
    print(machine_line())
    results: list[RunResult] = []
    failed = False
    with tempfile.TemporaryDirectory(prefix="codepulse-wrk-") as scratch:
        for level in levels:
            try:
                result = bench_level(level, args, Path(scratch))
            except BenchmarkError as error:
                print(f"\n== LOG_LEVEL={level}: FAILED: {error}")
                failed = True
                continue
            report(result, args)
            results.append(result)
    if len(results) > 1:
        print()
        base = results[0]
        for other in results[1:]:
            ratio = other.wrk.requests_per_second / base.wrk.requests_per_second
            print(
                f"LOG_LEVEL={other.level} vs {base.level}: {ratio:.2f}x the requests/s, "
                f"p99 {other.wrk.percentiles_ms.get(99, float('nan')):.2f} ms "
                f"vs {base.wrk.percentiles_ms.get(99, float('nan')):.2f} ms"
            )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
