#!/usr/bin/env python
"""Throughput and latency of `GET /api/v1/health` (liveness, no I/O) under wrk, against a bare
FastAPI app doing the same work, in the same run.

It starts the bare app (`bare_app.py`: the same route and response, no middleware) and, for each
log level (default: WARNING, then INFO, since production writes an access line per request),
`codepulse serve` with one worker on a fresh SQLite database in a temporary directory; all are
served by uvicorn with the same options and one worker. After readiness and an untimed warm-up
of each, it runs, for a few rounds with the order of the servers rotating (so that a burst of
load from elsewhere on the machine does not land on one server only),

    wrk -t<threads> -c<connections> -d<duration>s --latency http://127.0.0.1:<port>/api/v1/health

and prints each run, then per server the median requests/s, latency and server CPU per
request, and the ratio of codepulse's requests/s to the bare app's (target: >= 0.85 at WARNING).
wrk and the servers share the machine: on 2 cores the figures are a floor, not a capacity.

    uv run python tests/benchmarks/liveness_wrk.py
    uv run python tests/benchmarks/liveness_wrk.py --levels WARNING --rounds 5
    uv run python tests/benchmarks/liveness_wrk.py --duration 30 --connections 100 --levels INFO --log-json

Needs wrk on PATH (Debian/Ubuntu: `apt-get install -y wrk`; macOS: `brew install wrk`).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # mypy sees this folder as the package tests.benchmarks
    from tests.benchmarks._serve import (
        LIVENESS_PATH,
        WRK_MISSING,
        BenchmarkError,
        WrkResult,
        clean_exit,
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
        clean_exit,
        cpu_seconds,
        describe_exit,
        free_port,
        machine_line,
        run_wrk,
        stop_server,
        summarise_log,
        wait_ready,
    )

TARGET_RATIO = 0.85  # codepulse's liveness requests/s at WARNING over the bare app's
BARE_APP = Path(__file__).with_name("bare_app.py")


@dataclass
class Run:
    wrk: WrkResult
    server_cpu_seconds: float | None

    @property
    def cpu_us_per_request(self) -> float | None:
        if self.server_cpu_seconds is None:
            return None
        return self.server_cpu_seconds / max(self.wrk.requests, 1) * 1_000_000


@dataclass
class Server:
    name: str
    level: str | None  # None: the bare app
    process: subprocess.Popen[bytes]
    base_url: str
    log_path: Path
    runs: list[Run] = field(default_factory=list)

    def median(self, value: str) -> float:
        values = [getattr(run.wrk, value) for run in self.runs]
        return statistics.median(values) if values else float("nan")

    def median_p(self, percentile: int) -> float:
        return statistics.median(run.wrk.p(percentile) for run in self.runs) if self.runs else float("nan")

    def median_cpu_us(self) -> float | None:
        values = [v for v in (run.cpu_us_per_request for run in self.runs) if v is not None]
        return statistics.median(values) if values else None


@contextmanager
def started(name: str, level: str | None, command: list[str], env: dict[str, str], directory: Path) -> Iterator[Server]:
    port = free_port()
    log_path = directory / "server.log"
    with log_path.open("w") as log:
        # Logs go to a file, as a container runtime would take them from a pipe: not a terminal.
        process = subprocess.Popen(
            [*command, "--port", str(port)], cwd=directory, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        yield Server(name, level, process, f"http://127.0.0.1:{port}", log_path)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def start_codepulse(stack: ExitStack, level: str, args: argparse.Namespace, scratch: Path) -> Server:
    directory = Path(tempfile.mkdtemp(prefix=f"codepulse-{level.lower()}-", dir=scratch))
    env = dict(os.environ)
    env.update(
        DATABASE_URL=f"sqlite+aiosqlite:///{directory / 'codepulse.db'}",
        VAR_DIR=str(directory / "var"),
        LOG_LEVEL=level,
        LOG_JSON="true" if args.log_json else "false",
        WEB_CONCURRENCY="1",
    )
    fmt = ", LOG_JSON=true" if args.log_json else ""
    command = [sys.executable, "-m", "codepulse", "serve", "--workers", "1"]
    return stack.enter_context(started(f"codepulse (LOG_LEVEL={level}{fmt})", level, command, env, directory))


def start_bare(stack: ExitStack, scratch: Path) -> Server:
    directory = Path(tempfile.mkdtemp(prefix="bare-", dir=scratch))
    command = [sys.executable, str(BARE_APP)]
    return stack.enter_context(started("bare FastAPI", None, command, dict(os.environ), directory))


def measure(server: Server, args: argparse.Namespace) -> Run:
    cpu_before = cpu_seconds(server.process.pid)
    wrk = run_wrk(server.base_url + LIVENESS_PATH, args.threads, args.connections, args.duration)
    cpu_after = cpu_seconds(server.process.pid)
    cpu = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
    return Run(wrk, cpu)


def print_run(number: int, server: Server, run: Run) -> None:
    wrk = run.wrk
    errors = wrk.non_2xx + wrk.socket_error_count
    cpu = run.cpu_us_per_request
    print(
        f"  round {number} {server.name:<32} {wrk.requests_per_second:>8,.0f} req/s  "
        f"p50 {wrk.p(50):6.2f} ms  p99 {wrk.p(99):6.2f} ms"
        + (f"  CPU {cpu:5.0f} µs/req" if cpu is not None else "")
        + (f"  ERRORS {errors}" if errors else "")
    )


def report(servers: list[Server], args: argparse.Namespace) -> bool:
    """The medians and ratios; whether every run was clean (no errors, no non-2xx)."""
    print()
    print(f"== medians of {args.rounds} round(s), wrk -t{args.threads} -c{args.connections} -d{args.duration:g}s")
    ok = True
    for server in servers:
        cpu = server.median_cpu_us()
        print(
            f"  {server.name:<32} {server.median('requests_per_second'):>8,.0f} req/s  "
            f"p50 {server.median_p(50):6.2f} ms  p90 {server.median_p(90):6.2f} ms  p99 {server.median_p(99):6.2f} ms"
            + (f"  server CPU {cpu:.0f} µs/req" if cpu is not None else "")
        )
        errors = sum(run.wrk.non_2xx + run.wrk.socket_error_count for run in server.runs)
        if errors:
            print(f"    {errors} non-2xx responses or socket errors")
            ok = False
    bare, ours = servers[0], servers[1:]
    print()
    for server in ours:
        ratio = server.median("requests_per_second") / bare.median("requests_per_second")
        rounds = ", ".join(
            f"{mine.wrk.requests_per_second / theirs.wrk.requests_per_second:.2f}"
            for mine, theirs in zip(server.runs, bare.runs, strict=True)
        )
        verdict = ""
        if server.level == "WARNING":
            verdict = f" (target >= {TARGET_RATIO:g}: {'PASS' if ratio >= TARGET_RATIO else 'BELOW TARGET'})"
        print(f"{server.name} / bare FastAPI: {ratio:.2f} of the requests/s{verdict}; per round: {rounds}")
    for other in ours[1:]:
        ratio = other.median("requests_per_second") / ours[0].median("requests_per_second")
        print(
            f"{other.name} vs {ours[0].name}: {ratio:.2f}x the requests/s, "
            f"p99 {other.median_p(99):.2f} ms vs {ours[0].median_p(99):.2f} ms"
        )
    return ok


def stop_and_summarise(server: Server) -> bool:
    exit_code, shutdown = stop_server(server.process)
    summary = summarise_log(server.log_path)
    levels = ", ".join(f"{name} {count:,}" for name, count in sorted(summary.levels.items())) or "none"
    print(
        f"  {server.name}: SIGTERM: {describe_exit(exit_code)} in {shutdown:.2f} s; "
        f"log: {summary.lines:,} line(s) ({levels})"
    )
    if server.level is not None:
        for line in summary.notable:
            print(f"    {line}")
    return clean_exit(exit_code)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", "-d", type=float, default=10.0, help="seconds per wrk run (default 10)")
    parser.add_argument("--connections", "-c", type=int, default=32, help="open connections (default 32)")
    parser.add_argument("--threads", "-t", type=int, default=1, help="wrk threads (default 1)")
    parser.add_argument("--rounds", type=int, default=3, help="runs per server, order rotating (default 3)")
    parser.add_argument("--warmup", type=float, default=2.0, help="untimed wrk seconds per server (default 2; 0: none)")
    parser.add_argument("--levels", default="WARNING,INFO", help="comma-separated LOG_LEVELs (default WARNING,INFO)")
    parser.add_argument("--log-json", action="store_true", help="LOG_JSON=true (production-style JSON lines)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for readiness")
    args = parser.parse_args(argv)
    if args.threads > args.connections:
        parser.error("--threads must not exceed --connections (wrk needs a connection per thread)")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    args.levels = [level.strip().upper() for level in args.levels.split(",") if level.strip()]
    if not args.levels:
        parser.error("--levels needs at least one level")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        print(WRK_MISSING, file=sys.stderr)
        return 2
    print(f"codepulse liveness benchmark: GET {LIVENESS_PATH}, codepulse vs a bare FastAPI app, one worker each")
    print(machine_line())
    with tempfile.TemporaryDirectory(prefix="codepulse-wrk-") as raw, ExitStack() as stack:
        scratch = Path(raw)
        try:
            servers = [start_bare(stack, scratch)]
            servers += [start_codepulse(stack, level, args, scratch) for level in args.levels]
            for server in servers:
                wait_ready(server.process, server.base_url, args.timeout)
                if args.warmup > 0:
                    run_wrk(server.base_url + LIVENESS_PATH, args.threads, args.connections, args.warmup)
            print()
            print(f"== wrk -t{args.threads} -c{args.connections} -d{args.duration:g}s --latency, order rotating")
            for number in range(1, args.rounds + 1):
                shift = (number - 1) % len(servers)
                for server in servers[shift:] + servers[:shift]:
                    run = measure(server, args)
                    server.runs.append(run)
                    print_run(number, server, run)
        except BenchmarkError as error:
            print(f"\nFAILED: {error}")
            return 1
        ok = report(servers, args)
        print()
        stopped = [stop_and_summarise(server) for server in servers]  # every one, even after a failure
        ok = all(stopped) and ok
    print(f"load average at the end: {' '.join(f'{value:.2f}' for value in os.getloadavg())}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
