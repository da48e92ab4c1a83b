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
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

LIVENESS_PATH = "/api/v1/health"
READY_PATH = "/api/v1/health/ready"
SHUTDOWN_LIMIT_SECONDS = 10.0

_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_DURATION = re.compile(r"^([\d.]+)(us|ms|s|m|h)$")
_LEVEL = re.compile(r"\[(debug|info|warning|error|critical)\s*\]|\"level\": \"(\w+)\"")


@dataclass
class WrkResult:
    requests_per_second: float
    requests: int
    seconds: float
    latency_avg_ms: float
    latency_max_ms: float
    percentiles_ms: dict[int, float]
    non_2xx: int = 0
    socket_errors: dict[str, int] = field(default_factory=dict)
    raw: str = ""


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


class BenchmarkError(Exception):
    pass


def to_ms(value: str) -> float:
    match = _DURATION.match(value.strip())
    if match is None:
        raise BenchmarkError(f"cannot read wrk duration {value!r}")
    return float(match.group(1)) * _UNIT_MS[match.group(2)]


def parse_wrk(output: str) -> WrkResult:
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.MULTILINE)
    latency = re.search(r"^\s+Latency\s+(\S+)\s+(\S+)\s+(\S+)", output, re.MULTILINE)
    total = re.search(r"^\s+(\d+) requests in ([\d.]+\w+)", output, re.MULTILINE)
    if rps is None or latency is None or total is None:
        raise BenchmarkError(f"unexpected wrk output:\n{output}")
    percentiles = {
        int(match.group(1)): to_ms(match.group(2))
        for match in re.finditer(r"^\s+(\d+)%\s+(\S+)\s*$", output, re.MULTILINE)
    }
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return WrkResult(
        requests_per_second=float(rps.group(1)),
        requests=int(total.group(1)),
        seconds=to_ms(total.group(2)) / 1000,
        latency_avg_ms=to_ms(latency.group(1)),
        latency_max_ms=to_ms(latency.group(3)),
        percentiles_ms=percentiles,
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=(
            dict(zip(("connect", "read", "write", "timeout"), map(int, errors.groups()), strict=True)) if errors else {}
        ),
        raw=output,
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process from /proc (Linux); None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def wait_ready(process: subprocess.Popen[bytes], base_url: str, timeout: float) -> float:
    started = time.perf_counter()
    with httpx.Client(timeout=1.0) as client:
        while True:
            if process.poll() is not None:
                raise BenchmarkError(f"server exited with {process.returncode} before it was ready")
            try:
                if client.get(base_url + READY_PATH).status_code == 200:
                    return time.perf_counter() - started
            except httpx.TransportError:
                pass
            if time.perf_counter() - started > timeout:
                raise BenchmarkError(f"server not ready within {timeout:g} s")
            time.sleep(0.01)


def run_wrk(url: str, threads: int, connections: int, duration: float) -> WrkResult:
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration:g}s", "--latency", url]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BenchmarkError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return parse_wrk(done.stdout)


def describe_exit(code: int | None) -> str:
    if code is None:
        return f"still running after {SHUTDOWN_LIMIT_SECONDS:g} s (killed)"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name} (returncode {code})"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit {code}"


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
        stopping = time.perf_counter()
        process.send_signal(signal.SIGTERM)
        exit_code: int | None
        try:
            exit_code = process.wait(timeout=SHUTDOWN_LIMIT_SECONDS)
        except subprocess.TimeoutExpired:
            exit_code = None
            process.kill()
            process.wait()
        shutdown = time.perf_counter() - stopping
    lines = log_path.read_text(errors="replace").splitlines()
    levels: Counter[str] = Counter()
    notable: list[str] = []
    for line in lines:
        match = _LEVEL.search(line)
        name = (match.group(1) or match.group(2)).lower() if match else "other"
        levels[name] += 1
        if name not in ("info", "debug") and len(notable) < 5:
            notable.append(line)
    return RunResult(
        level=level,
        log_json=args.log_json,
        wrk=wrk,
        server_cpu_seconds=None if cpu_before is None or cpu_after is None else cpu_after - cpu_before,
        exit_code=exit_code,
        shutdown_seconds=shutdown,
        log_levels=levels,
        log_lines=len(lines),
        notable_lines=notable,
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
        print(
            "wrk is not installed (not on PATH).\n"
            "  Debian/Ubuntu: sudo apt-get install -y wrk\n"
            "  macOS:         brew install wrk\n"
            "then run this script again.",
            file=sys.stderr,
        )
        return 2

    levels = [level.strip().upper() for level in args.levels.split(",") if level.strip()]
    load = os.getloadavg()
    print(f"codepulse liveness benchmark: GET {LIVENESS_PATH}, one worker, SQLite")
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} CPU(s) shared by wrk and the server, "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
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
