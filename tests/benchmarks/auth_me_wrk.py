#!/usr/bin/env python
"""`GET /api/v1/auth/me` with a valid bearer token against liveness, under wrk, in one run.

The auth acceptance benchmark: one `codepulse serve --migrate` worker on a fresh PostgreSQL
database (`cp_bench_<random>` on 127.0.0.1:5432, dropped at the end), one registered user, then
for each concurrency (default 50, then 10) an untimed warm-up of both paths and `--rounds` rounds of

    wrk -t<threads> -c<connections> -d<duration>s --latency [-H "Authorization: Bearer cp_..."] <url>

alternating which path goes first. It prints requests/s, p50/p90/p99, non-2xx and socket errors,
and the CPU of the server, of the database's backends and of wrk for every run, then per
concurrency the means and the ratio auth/me ÷ liveness of requests/s (target >= 0.6: PASS or
BELOW TARGET; a measurement, so the exit status does not depend on it).

Then, to show where the time of /auth/me goes:

* server profile: a second server, started under pyinstrument (or cProfile) and profiled only
  during one wrk run per path; prints its main thread's time per request for liveness and
  /auth/me side by side, by stage of the request, by package and by function, most extra first;
* components, in-process: per-operation wall and CPU time of the full ASGI stack for both paths
  (httpx ASGITransport, no sockets), of the route's database work as it is and in cheaper
  variants (no pre-ping, autocommit, bare asyncpg), of one threadpool hop (what each sync
  dependency costs) and of the UserOut serialisation.

--database-url names the PostgreSQL server the run's database is created on (its database is
only used for CREATE/DROP DATABASE and statistics).

    uv run python tests/benchmarks/auth_me_wrk.py
    uv run python tests/benchmarks/auth_me_wrk.py -d 20 --connections 100,10 --log-level INFO
    uv run python tests/benchmarks/auth_me_wrk.py --database-url postgresql+asyncpg://u:p@db:5432/postgres
    uv run python tests/benchmarks/auth_me_wrk.py --sqlite      # the same on a temporary SQLite file

Needs wrk on PATH. The server profile needs pyinstrument in the environment
(`uv pip install pyinstrument`, not a project dependency); without it cProfile is used, which
distorts more (deterministic, and confused by SQLAlchemy's greenlets).
Exit status 1 when a check failed (a non-2xx answer or socket error, a server that did not
start or stop cleanly), 2 without wrk.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import inspect
import io
import json
import os
import pstats
import re
import resource
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache, partial
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import anyio.to_thread
import httpx
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.pool import NullPool

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

ME_PATH = "/api/v1/auth/me"
REGISTER_PATH = "/api/v1/auth/register"
TARGET_RATIO = 0.6
DEFAULT_SERVER_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
BENCH_USER = {
    "email": "bench@example.com",
    "password": "bench-password-2026-xyz",
    "username": "bench",
    "name": "Bench",
}

# Run as `python -c` with: <mode> <output file> serve ... . Starts the profiler on SIGUSR1 and
# stops it and writes the output on SIGUSR2, so only the load is profiled (not imports, not
# migrations). Signals are handled in the main thread, the one running the event loop.
_PROFILED_SERVE = r"""
import json, os, signal, sys, time
mode, out = sys.argv[1], sys.argv[2]
sys.argv = ["codepulse", *sys.argv[3:]]
from codepulse.cli import main
if mode == "pyinstrument":
    from pyinstrument import Profiler
else:
    import cProfile
state = {}

def _start(signum, frame):
    if mode == "pyinstrument":
        profiler = Profiler(interval=0.0005, async_mode="disabled")
        profiler.start()
    else:
        profiler = cProfile.Profile()
        profiler.enable()
    state.update(profiler=profiler, cpu=time.process_time(), wall=time.perf_counter())

def _stop(signum, frame):
    profiler = state["profiler"]
    cpu, wall = time.process_time() - state["cpu"], time.perf_counter() - state["wall"]
    if mode == "pyinstrument":
        session = profiler.stop()
        records = [[list(stack), seconds] for stack, seconds in session.frame_records]
        with open(out + ".tmp", "w") as handle:
            json.dump({"records": records, "cpu": cpu, "wall": wall}, handle)
    else:
        profiler.disable()
        profiler.dump_stats(out + ".tmp")
    os.replace(out + ".tmp", out)

signal.signal(signal.SIGUSR1, _start)
signal.signal(signal.SIGUSR2, _stop)
main()
"""


# --- the database --------------------------------------------------------------------------


@dataclass
class BenchDatabase:
    """A fresh database for the run: on a PostgreSQL server (created and dropped), or a SQLite file."""

    url: str
    label: str
    admin_url: str | None = None  # the server's maintenance database, for CREATE/DROP and statistics
    name: str | None = None

    @property
    def is_postgres(self) -> bool:
        return self.admin_url is not None

    @classmethod
    def create(cls, server_url: str | None, directory: Path) -> BenchDatabase:
        if server_url is None:
            path = directory / "codepulse.db"
            return cls(url=f"sqlite+aiosqlite:///{path}", label=f"SQLite, temporary file {path}")
        admin = make_url(server_url)
        if not admin.drivername.startswith("postgresql"):
            raise BenchmarkError(f"--database-url must name a PostgreSQL server, not {admin.drivername}")
        name = f"cp_bench_{secrets.token_hex(4)}"
        admin_url = admin.render_as_string(hide_password=False)
        version = asyncio.run(_admin(admin_url, f'CREATE DATABASE "{name}"', "SHOW server_version"))
        where = f"{admin.host or 'localhost'}:{admin.port or 5432}"
        return cls(
            url=admin.set(database=name).render_as_string(hide_password=False),
            label=f"PostgreSQL {version} at {where}, fresh database {name} (dropped at the end)",
            admin_url=admin_url,
            name=name,
        )

    def drop(self) -> None:
        if self.admin_url is not None and self.name is not None:
            asyncio.run(_admin(self.admin_url, f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))

    def totals(self) -> dict[str, float] | None:
        """pg_stat_database for this database (complete once its connections have closed)."""
        if self.admin_url is None:
            return None
        query = (
            "SELECT xact_commit, xact_rollback, sessions, active_time, tup_returned "
            "FROM pg_stat_database WHERE datname = :name"
        )
        try:
            row = asyncio.run(_admin_row(self.admin_url, query, {"name": self.name}))
        except Exception:  # statistics are a bonus: an older server lacks `sessions`
            return None
        keys = ("xact_commit", "xact_rollback", "sessions", "active_time_ms", "tup_returned")
        return dict(zip(keys, map(float, row), strict=True)) if row else None

    def backend_pids(self) -> list[int]:
        """Local server processes serving this database (their title names it), from /proc."""
        if self.name is None or make_url(self.url).host not in ("127.0.0.1", "localhost", "::1", None):
            return []
        pids = []
        marker = f" {self.name} ".encode()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                title = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if title.startswith(b"postgres:") and marker in title:
                pids.append(int(entry.name))
        return pids


async def _admin(admin_url: str, statement: str, then: str | None = None) -> str | None:
    engine = create_async_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            await connection.execute(text(statement))
            if then is not None:
                return str((await connection.execute(text(then))).scalar_one())
    finally:
        await engine.dispose()
    return None


async def _admin_row(admin_url: str, query: str, params: dict[str, Any]) -> Sequence[Any] | None:
    engine = create_async_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            row = (await connection.execute(text(query), params)).first()
            return tuple(row) if row is not None else None
    finally:
        await engine.dispose()


class BackendCpu:
    """CPU of the database's backend processes between two points (local PostgreSQL only).
    A backend that exits in between loses its share; connection churn shows as `new`."""

    def __init__(self, database: BenchDatabase) -> None:
        self.database = database
        self.before = self._sample()

    def _sample(self) -> dict[int, float]:
        return {pid: cpu for pid in self.database.backend_pids() if (cpu := cpu_seconds(pid)) is not None}

    def finish(self) -> tuple[float, int, int] | None:
        """(CPU seconds, backends now, backends that appeared) or None when not measurable."""
        if not self.database.is_postgres:
            return None
        after = self._sample()
        if not after and not self.before:
            return None
        used = sum(cpu - self.before.get(pid, 0.0) for pid, cpu in after.items())
        return used, len(after), len(set(after) - set(self.before))


# --- the server ----------------------------------------------------------------------------


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    base_url: str
    log_path: Path
    ready_seconds: float = 0.0


def server_env(database: BenchDatabase, directory: Path, log_level: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DATABASE_URL=database.url,
        ENVIRONMENT="development",
        VAR_DIR=str(directory / "var"),
        LOG_LEVEL=log_level,
        LOG_JSON="false",
        WEB_CONCURRENCY="1",
    )
    return env


@contextmanager
def running_server(
    database: BenchDatabase, directory: Path, args: argparse.Namespace, *, profile: tuple[str, Path] | None = None
) -> Iterator[Server]:
    """`codepulse serve --migrate --workers 1` in `directory` (logs to a file); killed on error."""
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    serve = ["serve", "--migrate", "--port", str(port), "--workers", "1"]
    if profile is None:
        command = [sys.executable, "-m", "codepulse", *serve]
    else:
        command = [sys.executable, "-c", _PROFILED_SERVE, profile[0], str(profile[1]), *serve]
    log_path = directory / f"server-{port}.log"
    with log_path.open("w") as log:
        # cwd = the temp dir, so a developer's .env or ./var cannot leak in; logs to a file, not a tty.
        process = subprocess.Popen(
            command,
            cwd=directory,
            env=server_env(database, directory, args.log_level),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            server = Server(process, f"http://127.0.0.1:{port}", log_path)
            server.ready_seconds = wait_ready(process, server.base_url, args.timeout)
            yield server
        except BaseException:
            if process.poll() is None:
                process.kill()
                process.wait()
            raise


def register(base_url: str) -> str:
    """Register the bench user; check the token works; return it."""
    with httpx.Client(base_url=base_url, timeout=30.0) as client:
        response = client.post(REGISTER_PATH, json=BENCH_USER)
        if response.status_code != 201:
            raise BenchmarkError(f"POST {REGISTER_PATH} answered {response.status_code}: {response.text[:500]}")
        token = str(response.json()["token"])
        me = client.get(ME_PATH, headers={"Authorization": f"Bearer {token}"})
        if me.status_code != 200 or me.json().get("email") != BENCH_USER["email"]:
            raise BenchmarkError(f"GET {ME_PATH} with the new token answered {me.status_code}: {me.text[:500]}")
    return token


# --- measured runs -------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    name: str
    path: str
    headers: tuple[str, ...] = ()


@dataclass
class Run:
    target: Target
    connections: int
    round: int
    wrk: WrkResult
    server_cpu: float | None
    backends: tuple[float, int, int] | None
    wrk_cpu: float

    @property
    def ok(self) -> bool:
        return self.wrk.non_2xx == 0 and self.wrk.socket_error_count == 0


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(
    server: Server, database: BenchDatabase, target: Target, connections: int, number: int, args: argparse.Namespace
) -> Run:
    backends = BackendCpu(database)
    server_before = cpu_seconds(server.process.pid)
    wrk_before = children_cpu()  # wrk is the only child that finishes in between
    wrk = run_wrk(server.base_url + target.path, args.threads, connections, args.duration, target.headers)
    wrk_cpu = children_cpu() - wrk_before
    server_after = cpu_seconds(server.process.pid)
    server_cpu = None if server_before is None or server_after is None else server_after - server_before
    return Run(target, connections, number, wrk, server_cpu, backends.finish(), wrk_cpu)


def per_request_us(seconds: float | None, requests: int) -> str:
    if seconds is None:
        return "n/a"
    return f"{seconds / max(requests, 1) * 1e6:,.0f} µs/req"


def print_run(run: Run) -> None:
    wrk = run.wrk
    errors = wrk.socket_error_count
    detail = ", ".join(f"{k} {v}" for k, v in wrk.socket_errors.items() if v)
    parts = [
        f"  round {run.round}  {run.target.name:<8}",
        f"{wrk.requests_per_second:>8,.0f} req/s",
        f"p50 {wrk.p(50):7.2f} ms  p90 {wrk.p(90):7.2f} ms  p99 {wrk.p(99):7.2f} ms  max {wrk.latency_max_ms:7.2f} ms",
        f"non-2xx {wrk.non_2xx}, socket errors {errors}{f' ({detail})' if detail else ''}",
    ]
    print(" | ".join(parts))
    cpu = []
    if run.server_cpu is not None:
        cpu.append(
            f"server {run.server_cpu / wrk.seconds * 100:.0f}% of a core "
            f"({per_request_us(run.server_cpu, wrk.requests)})"
        )
    if run.backends is not None:
        used, count, new = run.backends
        cpu.append(
            f"postgres backends {used / wrk.seconds * 100:.0f}% ({per_request_us(used, wrk.requests)}; "
            f"{count} connection(s), {new} new)"
        )
    cpu.append(f"wrk {run.wrk_cpu / wrk.seconds * 100:.0f}%")
    print(f"  {'':<17}CPU: " + ", ".join(cpu), flush=True)


@dataclass
class LevelSummary:
    connections: int
    liveness: list[Run]
    me: list[Run]

    @staticmethod
    def _mean(runs: list[Run], value: Callable[[Run], float]) -> float:
        return statistics.fmean(value(run) for run in runs)

    @property
    def ratio(self) -> float:
        return self._mean(self.me, lambda r: r.wrk.requests_per_second) / self._mean(
            self.liveness, lambda r: r.wrk.requests_per_second
        )

    def line(self, name: str, runs: list[Run]) -> str:
        rps = self._mean(runs, lambda r: r.wrk.requests_per_second)
        p50 = self._mean(runs, lambda r: r.wrk.p(50))
        p99 = self._mean(runs, lambda r: r.wrk.p(99))
        spread = ", ".join(f"{r.wrk.requests_per_second:,.0f}" for r in runs)
        p99s = ", ".join(f"{r.wrk.p(99):.2f}" for r in runs)
        cpu = [r.server_cpu / max(r.wrk.requests, 1) * 1e6 for r in runs if r.server_cpu is not None]
        server = f", server CPU {statistics.fmean(cpu):,.0f} µs/req" if cpu else ""
        return (
            f"{name:<9} {rps:>8,.0f} requests/s (runs: {spread})  p50 {p50:.2f} ms  "
            f"p99 {p99:.2f} ms (runs: {p99s}){server}"
        )


# --- profile of the server under load ------------------------------------------------------


@dataclass(frozen=True)
class Frame:
    function: str
    file: str

    @property
    def short(self) -> str:
        path = self.file.replace("\\", "/")
        for marker in ("/site-packages/", "/src/", "/lib/python3.11/", "/lib/python3.12/", "/lib/python3.13/"):
            if marker in path:
                path = path.split(marker, 1)[1]
                break
        return f"{self.function} ({path})"


Sample = tuple[tuple[Frame, ...], float]  # stack root -> leaf, seconds


def package_of(frame: Frame) -> str:
    path = frame.file.replace("\\", "/")
    if "/site-packages/" in path:
        parts = path.split("/site-packages/", 1)[1].split("/")
        top = parts[0].removesuffix(".py")
        if top in ("sqlalchemy", "fastapi", "starlette", "uvicorn") and len(parts) > 2:
            return f"{top}.{parts[1].removesuffix('.py')}"
        return top
    if "/codepulse/" in path:
        return "codepulse." + path.split("/codepulse/", 1)[1].removesuffix(".py").replace("/", ".")
    if "/lib/python3" in path:
        rest = path.split("/lib/python3", 1)[1].split("/", 1)[-1]
        return "stdlib " + rest.split("/", 1)[0].removesuffix(".py")
    return path or "?"


def _is_builtin(frame: Frame) -> bool:
    return frame.file in ("<built-in>", "~", "") or frame.file.startswith("<")  # "~": cProfile's C functions


def _in(frame: Frame, *fragments: str) -> bool:
    path = frame.file.replace("\\", "/")
    return any(fragment in path for fragment in fragments)


# A sample belongs to the first of STAGES that matches any frame of its stack; failing that, to the
# innermost of LAYERS (what every request passes through: routing, middleware, server, loop).
# SQLAlchemy's synchronous core runs in a greenlet whose stack starts at the Session method called
# through greenlet_spawn, so its stages are recognised by function names, not by the route above.
_SA = "/sqlalchemy/"
_SA_SESSION = ("sqlalchemy/orm/session.py", "sqlalchemy/ext/asyncio/session.py")
_COMMIT_CLOSE = ("commit", "_commit_impl", "close", "_close_impl", "_finalize_fairy", "_checkin", "reset")
_EXECUTE = ("execute", "_execute_internal", "orm_execute_statement", "scalar", "_prepare_and_execute")
_RESPONSE = ("serialize_response", "_prepare_response_content", "jsonable_encoder", "model_validate", "render")
_THREADPOOL = ("run_in_threadpool", "contextmanager_in_threadpool", "run_sync_in_worker_thread")
STAGES: list[tuple[str, Callable[[Frame], bool]]] = [
    ("db: pool pre-ping (BEGIN; ';'; ROLLBACK)", lambda f: f.function in ("do_ping", "_async_ping")),
    ("db: new connection", lambda f: f.function in ("connect", "__connect", "_connect_addr") and _in(f, "asyncpg")),
    ("db: pool checkout", lambda f: _in(f, "/sqlalchemy/pool/") and f.function in ("_checkout", "checkout")),
    ("db: BEGIN", lambda f: f.function in ("_start_transaction", "_begin_impl") and _in(f, _SA)),
    ("db: COMMIT, session close, pool return", lambda f: _in(f, _SA) and f.function in _COMMIT_CLOSE),
    (
        "db: the SELECT executed (ORM, compile cache, driver, rows)",
        lambda f: _in(f, _SA) and f.function in _EXECUTE,
    ),
    ("db: the SELECT statement built (select/join/where)", lambda f: f.function == "session_with_user"),
    ("db: Session/AsyncSession objects created", lambda f: _in(f, *_SA_SESSION) and f.function == "__init__"),
    ("db: SQLAlchemy, greenlet, driver (other)", lambda f: _in(f, _SA, "/greenlet/", "/asyncpg/", "/aiosqlite/")),
    ("auth: AuthService.authenticate (hash, checks)", lambda f: f.function == "authenticate"),
    ("auth: HTTPBearer", lambda f: _in(f, "fastapi/security/")),
    ("response: UserOut validation + JSON", lambda f: f.function in _RESPONSE or _in(f, "/pydantic")),
    ("fastapi: sync dependency -> threadpool (anyio)", lambda f: f.function in _THREADPOOL or _in(f, "/anyio/")),
    ("fastapi: dependency solving", lambda f: f.function in ("solve_dependencies", "_solve_generator")),
    ("logging (structlog/stdlib)", lambda f: _in(f, "/structlog/", "/logging/")),
]
LAYERS: list[tuple[str, Callable[[Frame], bool]]] = [
    ("fastapi/starlette: routing, request/response", lambda f: _in(f, "/fastapi/", "/starlette/routing")),
    ("middleware: request id + access log (codepulse.logging)", lambda f: _in(f, "codepulse/logging")),
    ("middleware: security headers, error guards (codepulse.middleware)", lambda f: _in(f, "codepulse/middleware")),
    ("middleware: starlette (sessions, CORS, gzip, exceptions)", lambda f: _in(f, "/starlette/")),
    ("uvicorn: HTTP protocol (httptools parse, write)", lambda f: _in(f, "/uvicorn/", "httptools")),
    ("event loop in C/stdlib (I/O, scheduling, GIL hand-offs)", lambda f: _in(f, "/asyncio/", "selectors.py")),
]
_NONE = len(STAGES)


@cache
def _frame_stage(frame: Frame) -> int:
    return next((index for index, (_, matches) in enumerate(STAGES) if matches(frame)), _NONE)


@cache
def _frame_layer(frame: Frame) -> str | None:
    return next((name for name, matches in LAYERS if matches(frame)), None)


def stage_of(stack: tuple[Frame, ...]) -> str:
    index = min((_frame_stage(frame) for frame in stack), default=_NONE)
    if index < _NONE:
        return STAGES[index][0]
    return next((name for frame in reversed(stack) if (name := _frame_layer(frame)) is not None), "other")


def is_idle(stack: tuple[Frame, ...], seconds: float) -> bool:
    """The event loop waiting for I/O: uvloop waits in C under asyncio.run (one long sample), the
    pure-Python loop in selectors."""
    leaf = stack[-1]
    waiting_in_c = leaf.function == "run" and leaf.file.endswith("runners.py") and seconds > 0.005
    return waiting_in_c or (_is_builtin(leaf) and len(stack) > 1 and stack[-2].file.endswith("selectors.py"))


@dataclass
class Window:
    """One profiled wrk run: where the server's main thread spent its time."""

    target: Target
    wrk: WrkResult
    cpu: float  # process CPU (all threads) while profiling
    wall: float
    idle: float  # sampled seconds the event loop waited for I/O
    stages: dict[str, float]
    packages: dict[str, float]
    functions: dict[str, float]

    def us(self, seconds: float) -> float:
        return seconds / max(self.wrk.requests, 1) * 1e6


def load_window(target: Target, wrk: WrkResult, path: Path) -> Window:
    data = json.loads(path.read_text())
    stages: defaultdict[str, float] = defaultdict(float)
    packages: defaultdict[str, float] = defaultdict(float)
    functions: defaultdict[str, float] = defaultdict(float)
    idle = 0.0
    for identifiers, seconds in data["records"]:
        frames = []
        for identifier in identifiers:  # "function\x00file\x00line", attributes after "\x01"
            function, file, *_ = [*str(identifier).split("\x01", 1)[0].split("\x00"), "", ""]
            if file != "<thread>":
                frames.append(Frame(function, file))
        stack = tuple(frames)
        if not stack or any(f.file == "<string>" and f.function in ("_start", "_stop") for f in stack):
            continue  # the profiler's own start and stop (in the runner, a -c string)
        if is_idle(stack, seconds):
            idle += seconds
            continue
        leaf = stack[-1]
        owner = next((f for f in reversed(stack) if not _is_builtin(f)), leaf)  # C calls count for their caller
        stages[stage_of(stack)] += seconds
        packages[package_of(owner)] += seconds
        functions[leaf.short if not _is_builtin(leaf) else f"{leaf.function} [C] <- {owner.short}"] += seconds
    return Window(target, wrk, float(data["cpu"]), float(data["wall"]), idle, stages, packages, functions)


def compare_windows(base: Window, me: Window, title: str, rows: dict[str, tuple[float, float]], limit: int) -> None:
    print(f"  {title}:")
    print(f"    {'liveness':>10} {'auth/me':>10} {'extra':>10}  µs per request (main thread)")
    ordered = sorted(rows.items(), key=lambda item: base.us(item[1][0]) - me.us(item[1][1]))
    for name, (base_seconds, me_seconds) in ordered[:limit]:
        extra = me.us(me_seconds) - base.us(base_seconds)
        print(f"    {base.us(base_seconds):10,.0f} {me.us(me_seconds):10,.0f} {extra:+10,.0f}  {name}")


def report_windows(windows: list[Window], measured_cpu_us: dict[str, float], top: int) -> None:
    for window in windows:
        sampled = sum(window.stages.values())
        per_request = window.cpu / max(window.wrk.requests, 1) * 1e6
        unprofiled = measured_cpu_us.get(window.target.name)
        inflation = f" ({per_request / unprofiled:.1f}x the unprofiled {unprofiled:,.0f})" if unprofiled else ""
        print(
            f"  {window.target.name:<8}: {window.wrk.requests:,} requests at "
            f"{window.wrk.requests_per_second:,.0f} req/s, "
            f"non-2xx {window.wrk.non_2xx}, socket errors {window.wrk.socket_error_count}; "
            f"server CPU {per_request:,.0f} µs/req under the profiler{inflation}; "
            f"main thread busy {sampled:.2f} s, idle {window.idle:.2f} s, of {window.wall:.2f} s"
        )
    if len(windows) != 2:
        return
    base, me = windows
    stages = {name: (base.stages.get(name, 0.0), me.stages.get(name, 0.0)) for name in {*base.stages, *me.stages}}
    compare_windows(base, me, "by stage of the request, most extra first", stages, len(STAGES) + len(LAYERS) + 1)
    packages = {n: (base.packages.get(n, 0.0), me.packages.get(n, 0.0)) for n in {*base.packages, *me.packages}}
    compare_windows(base, me, "by package (self time), most extra first", packages, top)
    functions = {n: (base.functions.get(n, 0.0), me.functions.get(n, 0.0)) for n in {*base.functions, *me.functions}}
    compare_windows(base, me, "by function (self time), most extra first", functions, top)


def report_cprofile(path: Path, requests: int, top: int) -> None:
    stats = pstats.Stats(str(path))
    raw: dict[tuple[str, int, str], tuple[int, int, float, float, object]] = stats.stats  # type: ignore[attr-defined]
    total = sum(entry[2] for entry in raw.values()) or 1e-9
    packages: defaultdict[str, float] = defaultdict(float)
    functions: list[tuple[float, float, str]] = []
    for (file, _line, function), (_cc, calls, own, cumulative, _callers) in raw.items():
        frame = Frame(function, file)
        packages[package_of(frame) if not _is_builtin(frame) else "C functions"] += own
        functions.append((own, cumulative, f"{frame.short} x{calls / max(requests, 1):.1f}/req"))
    print(f"  cProfile (deterministic: call-heavy Python code looks dearer than it is): {total:.2f} s profiled")
    print("  by package (self time):")
    for name, seconds in sorted(packages.items(), key=lambda item: -item[1])[:top]:
        print(f"    {seconds / total * 100:5.1f}%  {seconds / max(requests, 1) * 1e6:7.1f} µs/req  {name}")
    print("  by function (self time; cumulative in brackets):")
    for own, cumulative, name in sorted(functions, reverse=True)[:top]:
        share = own / total * 100
        print(f"    {share:5.1f}%  {own / max(requests, 1) * 1e6:7.1f} µs/req  [{cumulative:6.2f} s]  {name}")


def profiler_mode(requested: str) -> str | None:
    if requested == "none":
        return None
    if requested in ("auto", "pyinstrument"):
        try:
            importlib.import_module("pyinstrument")
        except ImportError:
            if requested == "pyinstrument":
                raise BenchmarkError("pyinstrument is not installed: uv pip install pyinstrument") from None
            return "cprofile"
        return "pyinstrument"
    return "cprofile"


def profile_server(
    database: BenchDatabase,
    directory: Path,
    targets: Sequence[Target],
    measured_cpu_us: dict[str, float],
    args: argparse.Namespace,
    mode: str,
) -> bool:
    """Profile a second server during one wrk run per target; True when its answers were all 2xx."""
    extension = "json" if mode == "pyinstrument" else "pstats"
    output = directory / f"window.{extension}"
    connections = max(args.connections)
    print()
    print(
        f"== where the time goes: a second server under {mode}, profiled only during "
        f"wrk -t{args.threads} -c{connections} -d{args.duration:g}s per path (its throughput is not comparable)"
    )
    runs: list[tuple[Target, WrkResult, Path]] = []
    with running_server(database, directory, args, profile=(mode, output)) as server:
        for target in targets:
            url = server.base_url + target.path
            if args.warmup > 0:
                run_wrk(url, args.threads, connections, args.warmup, target.headers)
            server.process.send_signal(signal.SIGUSR1)
            time.sleep(0.05)
            wrk = run_wrk(url, args.threads, connections, args.duration, target.headers)
            server.process.send_signal(signal.SIGUSR2)
            deadline = time.monotonic() + 60
            while not output.exists() and time.monotonic() < deadline and server.process.poll() is None:
                time.sleep(0.1)
            if not output.exists():
                raise BenchmarkError(f"the profiled server wrote no profile for {target.name}")
            kept = directory / f"profile-{target.name.replace('/', '-')}.{extension}"
            output.replace(kept)
            runs.append((target, wrk, kept))
        stop_server(server.process)
    print_exceptions(server.log_path)
    if args.profile_out is not None:
        args.profile_out.mkdir(parents=True, exist_ok=True)
        for _, _, path in runs:
            shutil.copyfile(path, args.profile_out / path.name)
        print(f"  raw profiles saved in {args.profile_out}")
    if mode == "pyinstrument":
        report_windows([load_window(*run) for run in runs], measured_cpu_us, args.top)
    else:
        for target, wrk, path in runs:
            print(f"  {target.name}: {wrk.requests:,} requests at {wrk.requests_per_second:,.0f} req/s")
            report_cprofile(path, wrk.requests, args.top)
    # Under the profiler, wrk's 2 s timeouts are expected at high concurrency; error answers are not.
    return all(wrk.non_2xx == 0 for _, wrk, _ in runs)


# --- components, in-process ----------------------------------------------------------------


@dataclass
class Component:
    name: str
    wall_us: float
    cpu_us: float
    note: str = ""


async def _time(op: Callable[[], Awaitable[object]], n: int) -> tuple[float, float]:
    for _ in range(min(100, n)):
        await op()
    cpu = time.process_time()
    wall = time.perf_counter()
    for _ in range(n):
        await op()
    return (time.perf_counter() - wall) / n * 1e6, (time.process_time() - cpu) / n * 1e6


# The route's query, written out for the bare-driver floor (the app builds it with SQLAlchemy).
_RAW_AUTH_QUERY = (
    "SELECT auth_sessions.*, users.* FROM auth_sessions JOIN users ON users.id = auth_sessions.user_id "
    "WHERE auth_sessions.token_hash = $1"
)


async def measure_components(
    database: BenchDatabase, directory: Path, token: str, n: int, log_stream: IO[str]
) -> list[Component]:
    # Imported here: the rest of the script must not depend on the application's internals.
    # A dependency's import-time warning is already in the server log section (and authlib forces
    # its deprecation warnings on with a filter of its own), so the import's stderr is dropped.
    with contextlib.redirect_stderr(io.StringIO()):
        from codepulse.app import create_app
    from codepulse.auth.repository import AuthRepository
    from codepulse.auth.schemas import UserOut
    from codepulse.config import load_settings
    from codepulse.db import Database
    from codepulse.logging import configure_logging
    from codepulse.security import hash_token

    settings = load_settings(
        _env_file=None,
        DATABASE_URL=database.url,
        ENVIRONMENT="development",
        VAR_DIR=str(directory / "var"),
        LOG_LEVEL="WARNING",
        SCHEDULER_ENABLED=False,
    )
    configure_logging(settings, stream=log_stream)
    app = create_app(settings)
    headers = {"Authorization": f"Bearer {token}"}
    token_hash = hash_token(token)
    results: list[Component] = []
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:

            async def health() -> None:
                response = await client.get(LIVENESS_PATH)
                assert response.status_code == 200, response.text

            async def me() -> None:
                response = await client.get(ME_PATH, headers=headers)
                assert response.status_code == 200, response.text

            wall, cpu = await _time(health, n)
            results.append(Component(f"ASGI GET {LIVENESS_PATH} (whole app, httpx client included)", wall, cpu))
            wall, cpu = await _time(me, n)
            results.append(Component(f"ASGI GET {ME_PATH} (whole app, httpx client included)", wall, cpu))

        app_database: Database = app.state.database

        async def as_the_route() -> None:
            async with app_database.transaction(write=False) as session:
                found = await AuthRepository(session).session_with_user(token_hash)
                assert found is not None

        wall, cpu = await _time(as_the_route, n)
        round_trips = "checkout pre-ping (3 round trips) + BEGIN + SELECT + COMMIT" if database.is_postgres else ""
        results.append(Component("db: DbSession transaction + session_with_user, as the route", wall, cpu, round_trips))

        user = (await _first_user(app_database, token_hash))[1]

        async def serialise() -> None:
            UserOut.model_validate(user).model_dump_json()

        wall, cpu = await _time(serialise, n)
        results.append(Component("pydantic: UserOut.model_validate(user).model_dump_json()", wall, cpu))

        wall, cpu = await _time(lambda: anyio.to_thread.run_sync(_nothing), n)
        hops = "FastAPI runs each sync (def) dependency this way"
        results.append(Component("anyio.to_thread.run_sync(no-op): one threadpool hop", wall, cpu, hops))

    if database.is_postgres:
        results += await _postgres_variants(database.url, token_hash, n, AuthRepository)
    return results


def _nothing() -> None:
    return None


def route_dependencies() -> list[tuple[str, bool]]:
    """The dependencies of the /auth/me endpoint, innermost first: (name, runs on the event loop)."""
    from fastapi.dependencies.utils import get_dependant

    from codepulse.auth.router import me

    seen: set[int] = set()
    found: list[tuple[str, bool]] = []

    def visit(dependant: Any) -> None:
        for sub in dependant.dependencies:
            visit(sub)
            call = sub.call
            if call is None or id(call) in seen:
                continue
            seen.add(id(call))
            target = call.func if isinstance(call, partial) else call
            if not inspect.isroutine(target):
                target = type(target).__call__  # a callable instance, e.g. HTTPBearer
            on_loop = inspect.iscoroutinefunction(target) or inspect.isasyncgenfunction(target)
            found.append((getattr(call, "__qualname__", type(call).__name__), on_loop))

    visit(get_dependant(path=ME_PATH, call=me))
    return found


async def _first_user(database: Any, token_hash: str) -> tuple[Any, Any]:
    from codepulse.auth.repository import AuthRepository

    async with database.transaction(write=False) as session:
        found = await AuthRepository(session).session_with_user(token_hash)
    if found is None:
        raise BenchmarkError("the bench token is not in the database")
    auth_session, user = found
    return auth_session, user


async def _postgres_variants(url: str, token_hash: str, n: int, repository: Any) -> list[Component]:
    results: list[Component] = []
    engine = create_async_engine(url, pool_size=1, pool_pre_ping=False)
    autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
    plain = async_sessionmaker(engine, expire_on_commit=False)
    unwrapped = async_sessionmaker(autocommit, expire_on_commit=False)
    try:

        async def without_ping() -> None:
            async with plain() as session:
                assert await repository(session).session_with_user(token_hash) is not None
                await session.commit()

        async def autocommit_read() -> None:
            async with unwrapped() as session:
                assert await repository(session).session_with_user(token_hash) is not None

        wall, cpu = await _time(without_ping, n)
        results.append(Component("db: the same without pool_pre_ping", wall, cpu, "BEGIN + SELECT + COMMIT"))
        wall, cpu = await _time(autocommit_read, n)
        results.append(Component("db: the same in AUTOCOMMIT, no pre-ping", wall, cpu, "the SELECT alone"))
    finally:
        await engine.dispose()

    asyncpg = importlib.import_module("asyncpg")  # untyped driver: Any
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    connection = await asyncpg.connect(dsn)
    try:
        statement = await connection.prepare(_RAW_AUTH_QUERY)

        async def raw_query() -> None:
            assert await statement.fetchrow(token_hash) is not None

        async def raw_round_trip() -> None:
            await connection.fetchval("SELECT 1")

        wall, cpu = await _time(raw_query, n)
        results.append(Component("asyncpg alone: the same SELECT, prepared", wall, cpu, "driver floor"))
        wall, cpu = await _time(raw_round_trip, n)
        results.append(Component("asyncpg alone: SELECT 1", wall, cpu, "one round trip"))
    finally:
        await connection.close()
    return results


def report_components(components: list[Component], n: int) -> None:
    print()
    print(f"== components, in-process, sequential (one at a time), mean of {n:,} each, after 100 untimed")
    print("  wall µs = latency of one; CPU µs = this process only (the database's own CPU is not in it)")
    try:
        dependencies = route_dependencies()
    except Exception as error:  # the route moved: the timings below still stand
        print(f"  (the route's dependencies could not be listed: {type(error).__name__}: {error})")
    else:
        listed = ", ".join(f"{name} ({'async' if on_loop else 'SYNC: threadpool'})" for name, on_loop in dependencies)
        print(f"  {ME_PATH} dependencies: {listed}")
    width = max(len(c.name) for c in components)
    for component in components:
        note = f"  [{component.note}]" if component.note else ""
        print(f"  {component.name:<{width}}  wall {component.wall_us:8.1f} µs  CPU {component.cpu_us:8.1f} µs{note}")


# --- main ----------------------------------------------------------------------------------


@dataclass
class Outcome:
    ok: bool  # every check passed
    liveness: Target
    me: Target  # carries the bench user's token
    summaries: list[LevelSummary]

    def server_cpu_us(self) -> dict[str, float]:
        """Server CPU per request at the highest concurrency, by target name."""
        summary = max(self.summaries, key=lambda s: s.connections)
        found = {}
        for name, runs in (("liveness", summary.liveness), ("auth/me", summary.me)):
            values = [r.server_cpu / max(r.wrk.requests, 1) * 1e6 for r in runs if r.server_cpu is not None]
            if values:
                found[name] = statistics.fmean(values)
        return found


def run_benchmark(database: BenchDatabase, scratch: Path, args: argparse.Namespace) -> Outcome:
    """The measured runs."""
    ok = True
    with running_server(database, scratch / "server", args) as server:
        token = register(server.base_url)
        print(
            f"server: codepulse serve --migrate --workers 1 (pid {server.process.pid}), LOG_LEVEL={args.log_level}, "
            f"ready in {server.ready_seconds:.2f} s; registered {BENCH_USER['email']}, GET {ME_PATH} -> 200"
        )
        liveness = Target("liveness", LIVENESS_PATH)
        me = Target("auth/me", ME_PATH, (f"Authorization: Bearer {token}",))
        summaries: list[LevelSummary] = []
        requests = Counter[str]()
        for connections in args.connections:
            print()
            print(
                f"== wrk -t{args.threads} -c{connections} -d{args.duration:g}s --latency, {args.rounds} round(s), "
                f"order alternating; untimed warm-up {args.warmup:g} s per path"
            )
            if args.warmup > 0:
                for target in (liveness, me):
                    warm = run_wrk(
                        server.base_url + target.path, args.threads, connections, args.warmup, target.headers
                    )
                    requests[target.name] += warm.requests
                    ok = ok and warm.non_2xx == 0
            summary = LevelSummary(connections, [], [])
            for number in range(1, args.rounds + 1):
                order = (liveness, me) if number % 2 else (me, liveness)
                for target in order:
                    run = measure(server, database, target, connections, number, args)
                    print_run(run)
                    requests[target.name] += run.wrk.requests
                    ok = ok and run.ok
                    (summary.liveness if target is liveness else summary.me).append(run)
            summaries.append(summary)
            print_level(summary)
        exit_code, shutdown = stop_server(server.process)
    log = summarise_log(server.log_path)
    clean = clean_exit(exit_code)
    # Warnings are shown but do not fail the run; errors (a 500's traceback) do.
    ok = ok and clean and not (log.levels["error"] or log.levels["critical"])
    print()
    print(f"SIGTERM: {describe_exit(exit_code)} in {shutdown:.2f} s -> {'OK' if clean else 'CHECK FAILED'}")
    levels = ", ".join(f"{name} {count:,}" for name, count in sorted(log.levels.items())) or "none"
    print(f"server log: {log.lines:,} line(s) ({levels})")
    for line in log.notable:
        print(f"    {line}")
    print_exceptions(server.log_path)
    totals = database.totals()
    if totals is not None:
        me_requests = max(requests["auth/me"], 1)
        print(
            f"PostgreSQL over the server's life ({requests['auth/me']:,} /auth/me and {requests['liveness']:,} "
            f"liveness requests): {totals['sessions']:.0f} connections opened, "
            f"{totals['xact_commit'] / me_requests:.2f} commits and {totals['xact_rollback'] / me_requests:.2f} "
            f"rollbacks per /auth/me request (a pre-ping is a rolled-back transaction), "
            f"backends active {totals['active_time_ms'] / me_requests * 1000:.0f} µs per /auth/me request"
        )
    return Outcome(ok, liveness, me, summaries)


def print_result(summaries: list[LevelSummary]) -> None:
    print()
    print(f"== result (target: /auth/me requests/s >= {TARGET_RATIO:g}x liveness, same server, same run)")
    for summary in summaries:
        verdict = "PASS" if summary.ratio >= TARGET_RATIO else "BELOW TARGET"
        print(f"  -c{summary.connections}: ratio auth/me / liveness requests/s {summary.ratio:.2f} -> {verdict}")
        print(f"    {summary.line('liveness', summary.liveness)}")
        print(f"    {summary.line('auth/me', summary.me)}")


_EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Timeout)): (.*)$")


def print_exceptions(log_path: Path) -> None:
    """The exceptions in a server log's tracebacks (the console renderer boxes the frames)."""
    found: Counter[str] = Counter()
    for line in log_path.read_text(errors="replace").splitlines():
        match = _EXCEPTION_LINE.match(line.strip())
        if match is not None:
            found[f"{match.group(1)}: {match.group(2)[:160]}"] += 1
    for exception, count in found.most_common(5):
        print(f"  server raised {count}x {exception}")


def print_level(summary: LevelSummary) -> None:
    verdict = "PASS" if summary.ratio >= TARGET_RATIO else "BELOW TARGET"
    print(f"  -> {summary.line('liveness', summary.liveness)}")
    print(f"  -> {summary.line('auth/me', summary.me)}")
    print(f"  -> ratio auth/me / liveness requests/s: {summary.ratio:.2f} (target >= {TARGET_RATIO:g}): {verdict}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", "-d", type=float, default=10.0, help="seconds per wrk run (default 10)")
    parser.add_argument(
        "--connections", "-c", default="50,10", help="comma-separated wrk connection counts (default 50,10)"
    )
    parser.add_argument("--threads", "-t", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--rounds", type=int, default=2, help="runs per path and concurrency, order alternating")
    parser.add_argument("--warmup", type=float, default=2.0, help="untimed wrk seconds per path first (0: none)")
    parser.add_argument("--log-level", default="WARNING", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    parser.add_argument(
        "--database-url",
        default=DEFAULT_SERVER_URL,
        help=f"PostgreSQL server to create the run's database on (default {DEFAULT_SERVER_URL})",
    )
    parser.add_argument("--sqlite", action="store_true", help="a temporary SQLite file instead of PostgreSQL")
    parser.add_argument(
        "--profile",
        choices=("auto", "pyinstrument", "cprofile", "none"),
        default="auto",
        help="profiler of the server under load (auto: pyinstrument when installed, else cProfile)",
    )
    parser.add_argument("--profile-out", type=Path, help="directory to keep the raw profiles in (JSON or pstats)")
    parser.add_argument("--components", type=int, default=2000, help="operations per in-process component (0: skip)")
    parser.add_argument("--top", type=int, default=15, help="rows per profile table")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for readiness")
    args = parser.parse_args(argv)
    try:
        args.connections = [int(value) for value in str(args.connections).split(",") if value.strip()]
    except ValueError:
        parser.error("--connections takes integers, e.g. 50,10")
    if not args.connections or min(args.connections) < args.threads:
        parser.error("every --connections value must be at least --threads (wrk needs a connection per thread)")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        print(WRK_MISSING, file=sys.stderr)
        return 2
    try:
        mode = profiler_mode(args.profile)
    except BenchmarkError as error:
        print(error, file=sys.stderr)
        return 2
    print(f"codepulse auth benchmark: GET {ME_PATH} (valid bearer token) vs GET {LIVENESS_PATH}, one worker")
    print(machine_line())
    ok = True
    with tempfile.TemporaryDirectory(prefix="codepulse-auth-me-") as raw:
        scratch = Path(raw)
        try:
            database = BenchDatabase.create(None if args.sqlite else args.database_url, scratch)
        except Exception as error:
            print(f"cannot create the database: {type(error).__name__}: {error}", file=sys.stderr)
            return 1
        print(f"database: {database.label}")
        try:
            try:
                outcome = run_benchmark(database, scratch, args)
            except BenchmarkError as error:
                print(f"FAILED: {error}")
                return 1
            ok = outcome.ok
            token = outcome.me.headers[0].removeprefix("Authorization: Bearer ")

            def profile() -> bool:
                assert mode is not None
                targets = (outcome.liveness, outcome.me)
                return profile_server(database, scratch / "profiled", targets, outcome.server_cpu_us(), args, mode)

            def components() -> bool:
                with (scratch / "in-process.log").open("a") as log_stream:
                    found = asyncio.run(measure_components(database, scratch, token, args.components, log_stream))
                report_components(found, args.components)
                return True

            sections: list[tuple[str, Callable[[], bool]]] = []
            if mode is not None:
                sections.append(("profile", profile))
            if args.components > 0:
                sections.append(("components", components))
            for name, section in sections:
                try:
                    ok = section() and ok
                except (BenchmarkError, AssertionError) as error:
                    print(f"  {name} FAILED: {type(error).__name__}: {error}")
                    ok = False
        finally:
            database.drop()
    print_result(outcome.summaries)
    print()
    print(f"load average at the end: {' '.join(f'{value:.2f}' for value in os.getloadavg())}")
    print("result: all checks passed" if ok else "result: some checks FAILED (see above)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
