"""Shared pieces of the benchmark scripts: a free port, the server's exit and CPU, readiness, wrk.

Not a benchmark itself. The scripts are run as files (`uv run python tests/benchmarks/x.py`),
so this folder is on `sys.path` and they import it as `_serve`.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

LIVENESS_PATH = "/api/v1/health"
READY_PATH = "/api/v1/health/ready"
SHUTDOWN_LIMIT_SECONDS = 10.0

_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_DURATION = re.compile(r"^([\d.]+)(us|ms|s|m|h)$")
_LEVEL = re.compile(r"\[(debug|info|warning|error|critical)\s*\]|\"level\": \"(\w+)\"")


class BenchmarkError(Exception):
    pass


def machine_line() -> str:
    load = os.getloadavg()
    return (
        f"python {sys.version.split()[0]}, {os.cpu_count()} CPU(s) shared by the load generator and the server, "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process from /proc (Linux); None elsewhere or when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def describe_exit(code: int | None) -> str:
    if code is None:
        return f"still running after {SHUTDOWN_LIMIT_SECONDS:g} s (killed)"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"killed by {name} (returncode {code}, shell status {128 - code})"
    return f"exit {code}"


def wait_ready(process: subprocess.Popen[bytes], base_url: str, timeout: float) -> float:
    """Poll readiness every 10 ms; seconds until the first 200."""
    started = time.perf_counter()
    with httpx.Client(timeout=1.0) as client:
        while True:
            if process.poll() is not None:
                raise BenchmarkError(f"server exited with {describe_exit(process.returncode)} before it was ready")
            try:
                if client.get(base_url + READY_PATH).status_code == 200:
                    return time.perf_counter() - started
            except httpx.TransportError:
                pass
            if time.perf_counter() - started > timeout:
                raise BenchmarkError(f"server not ready within {timeout:g} s")
            time.sleep(0.01)


def stop_server(process: subprocess.Popen[bytes]) -> tuple[int | None, float]:
    """SIGTERM, then wait up to SHUTDOWN_LIMIT_SECONDS (then kill): (exit code or None, seconds)."""
    stopping = time.perf_counter()
    process.send_signal(signal.SIGTERM)
    exit_code: int | None
    try:
        exit_code = process.wait(timeout=SHUTDOWN_LIMIT_SECONDS)
    except subprocess.TimeoutExpired:
        exit_code = None
        process.kill()
        process.wait()
    return exit_code, time.perf_counter() - stopping


def clean_exit(code: int | None) -> bool:
    """0, or uvicorn's re-raised SIGTERM after a completed graceful shutdown."""
    return code in (0, -signal.SIGTERM)


@dataclass
class LogSummary:
    lines: int
    levels: Counter[str]
    notable: list[str]  # the first lines above INFO (or unparsed)


def summarise_log(path: Path, keep: int = 5) -> LogSummary:
    lines = path.read_text(errors="replace").splitlines()
    levels: Counter[str] = Counter()
    notable: list[str] = []
    for line in lines:
        match = _LEVEL.search(line)
        name = (match.group(1) or match.group(2)).lower() if match else "other"
        levels[name] += 1
        if name not in ("info", "debug") and len(notable) < keep:
            notable.append(line)
    return LogSummary(lines=len(lines), levels=levels, notable=notable)


# --- wrk -------------------------------------------------------------------------------------


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

    def p(self, percentile: int) -> float:
        return self.percentiles_ms.get(percentile, float("nan"))

    @property
    def socket_error_count(self) -> int:
        return sum(self.socket_errors.values())


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


def run_wrk(
    url: str,
    threads: int,
    connections: int,
    duration: float,
    headers: Sequence[str] = (),
    script: Sequence[str] = (),
) -> WrkResult:
    """`script`: a Lua script's path and its arguments (`wrk -s path url -- args`)."""
    seconds = max(1, round(duration))  # wrk takes whole seconds
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency"]
    for header in headers:
        command += ["-H", header]
    if script:
        command += ["-s", script[0]]
    command.append(url)
    if script:
        command += ["--", *script[1:]]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        shown = " ".join("<header>" if part in headers else part for part in command)  # no token in output
        raise BenchmarkError(f"{shown} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return parse_wrk(done.stdout)


WRK_MISSING = (
    "wrk is not installed (not on PATH).\n"
    "  Debian/Ubuntu: sudo apt-get install -y wrk\n"
    "  macOS:         brew install wrk\n"
    "then run this script again."
)


@contextmanager
def serve_one_worker(
    directory: Path, settings: Mapping[str, str], timeout: float, extra_args: Sequence[str] = ()
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`codepulse serve --workers 1` in `directory` (its own cwd: no .env) with `settings` added to
    the environment, logging to `directory/server.log`; yields (process, base URL) once it is
    ready. The caller stops it (`stop_server`); on an error here it is killed."""
    port = free_port()
    env = {**os.environ, **settings}
    with (directory / "server.log").open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "codepulse", "serve", *extra_args, "--port", str(port), "--workers", "1"],
            cwd=directory,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            base_url = f"http://127.0.0.1:{port}"
            wait_ready(process, base_url, timeout)
            yield process, base_url
        except BaseException:
            if process.poll() is None:
                process.kill()
                process.wait()
            raise
