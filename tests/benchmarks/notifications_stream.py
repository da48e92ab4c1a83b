#!/usr/bin/env python
"""The live notification stream under load: 1,000 open SSE streams on one `codepulse serve` worker.

It creates a fresh PostgreSQL database (`cp_bench_<random>` on 127.0.0.1:5432, dropped at the
end), starts `codepulse serve --migrate --workers 1` on it (scheduler and in-process workers off,
LOG_LEVEL=WARNING), creates the users and their session tokens directly in the database, then:

1. measures the server's memory (VmRSS) and the database connections it holds, idle;
2. opens `--streams` streams (one per user, 1,000 by default) from this process and waits for each
   one's `ready` event, then measures memory and connections again;
3. from this process (another process than the server, as a worker or replica would be), creates
   `--notifications` notifications (2,000) for random users at `--rate` per second (200), each in
   its own transaction through `notify()`, noting the time each commit returned;
4. waits until every stream received every notification of its user, and measures again.

Prints the delivery latency (commit -> event read by the client) p50/p95/p99/max (target p99 under
1 s), the server's memory per open stream ((RSS with streams - idle RSS) / streams), and the
database connections the server holds idle, with the streams open and after the burst (target: a
constant, not one per stream).

    uv run python tests/benchmarks/notifications_stream.py
    uv run python tests/benchmarks/notifications_stream.py --streams 200 --notifications 500 --rate 100

Exit status 1 when a check failed (a stream that did not open, a notification not delivered, a
server that did not start or stop cleanly); the targets are measurements and do not change it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg  # type: ignore[import-untyped]
import httpx
from sqlalchemy import text

from codepulse.auth.models import AuthSession, User
from codepulse.config import load_settings
from codepulse.db import Database
from codepulse.logging import configure_logging
from codepulse.notifications.service import notify
from codepulse.security import hash_token, new_session_token

if TYPE_CHECKING:  # mypy sees this folder as the package tests.benchmarks
    from tests.benchmarks._serve import (
        BenchmarkError,
        clean_exit,
        describe_exit,
        machine_line,
        serve_one_worker,
        stop_server,
        summarise_log,
    )
    from tests.benchmarks._usage_data import BenchDatabase
else:  # run as a script, this folder is sys.path[0]
    from _serve import (
        BenchmarkError,
        clean_exit,
        describe_exit,
        machine_line,
        serve_one_worker,
        stop_server,
        summarise_log,
    )
    from _usage_data import BenchDatabase

DEFAULT_SERVER_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
STREAM_PATH = "/api/v1/notifications/stream"
P99_TARGET_MS = 1000.0


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise BenchmarkError(f"no VmRSS for {pid}")


async def server_connections(database: BenchDatabase, own_pids: set[int]) -> int:
    """Connections to the bench database that are not this process's."""
    connection = await asyncpg.connect(database.dsn)
    try:
        pids = await connection.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()", database.name
        )
    finally:
        await connection.close()
    return len([row["pid"] for row in pids if row["pid"] not in own_pids])


async def seed_users(app_database: Database, count: int) -> list[tuple[uuid.UUID, str]]:
    now = datetime.now(UTC)
    users = []
    async with app_database.transaction() as session:
        for number in range(count):
            user = User(
                id=uuid.uuid4(),
                username=f"bench{number}",
                email=f"bench{number}@example.com",
                name=f"Bench {number}",
                email_verified_at=now,
                is_superuser=False,
                timezone="UTC",
                profile_public=False,
            )
            token = new_session_token()
            session.add(user)
            session.add(
                AuthSession(
                    user_id=user.id,
                    token_hash=hash_token(token),
                    kind="cli",
                    name="bench",
                    created_at=now,
                    last_used_at=now,
                    expires_at=now.replace(year=now.year + 1),
                    absolute_expires_at=now.replace(year=now.year + 1),
                )
            )
            users.append((user.id, token))
    return users


@dataclass
class Stream:
    user_id: uuid.UUID
    token: str
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    received: list[tuple[str, float]] = field(default_factory=list)  # (notification title, time read)
    error: str | None = None


async def follow(client: httpx.AsyncClient, stream: Stream, changed: asyncio.Event) -> None:
    try:
        async with client.stream("GET", STREAM_PATH, headers={"Authorization": f"Bearer {stream.token}"}) as answer:
            if answer.status_code != 200:
                stream.error = f"{answer.status_code}: {(await answer.aread())[:200]!r}"
                stream.ready.set()
                return
            event = None
            async for line in answer.aiter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: ") and event == "ready":
                    stream.ready.set()
                elif line.startswith("data: ") and event == "notification":
                    stream.received.append((json.loads(line[6:])["title"], time.time()))
                    changed.set()
    except (httpx.HTTPError, asyncio.CancelledError) as error:
        if not isinstance(error, asyncio.CancelledError):
            stream.error = f"{type(error).__name__}: {error}"
        stream.ready.set()
        raise


async def create_notifications(
    app_database: Database, users: list[tuple[uuid.UUID, str]], count: int, rate: float, seed: int
) -> dict[str, tuple[uuid.UUID, float]]:
    """title -> (recipient, wall time its commit returned)."""
    rng = random.Random(seed)
    sent: dict[str, tuple[uuid.UUID, float]] = {}
    started = time.perf_counter()
    for number in range(count):
        due = started + number / rate
        if (delay := due - time.perf_counter()) > 0:
            await asyncio.sleep(delay)
        user_id = rng.choice(users)[0]
        title = f"n{number}"
        async with app_database.transaction() as session:
            await notify(session, [user_id], "scan_completed", title, "bench", {}, title, now=datetime.now(UTC))
        sent[title] = (user_id, time.time())
    return sent


def percentile(ordered: list[float], fraction: float) -> float:
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


async def run(base_url: str, pid: int, database: BenchDatabase, args: argparse.Namespace) -> bool:
    settings = load_settings(_env_file=None, DATABASE_URL=database.url, ENVIRONMENT="development", LOG_LEVEL="WARNING")
    configure_logging(settings)
    app_database = Database.from_settings(settings)
    ok = True
    try:
        users = await seed_users(app_database, args.streams)
        async with app_database.transaction(write=False) as session:
            own = {int(await session.scalar(text("SELECT pg_backend_pid()")) or 0)}
        await asyncio.sleep(1)  # let the server settle after start-up before the idle figures
        idle_rss, idle_connections = rss_kib(pid), await server_connections(database, own)
        print(f"idle:             server RSS {idle_rss / 1024:7.1f} MiB, database connections {idle_connections}")

        limits = httpx.Limits(max_connections=args.streams + 10, max_keepalive_connections=0)
        timeout = httpx.Timeout(args.timeout, read=None)
        changed = asyncio.Event()
        async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=timeout) as client:
            streams = [Stream(user_id, token) for user_id, token in users]
            opened = time.perf_counter()
            tasks = [asyncio.create_task(follow(client, stream, changed)) for stream in streams]
            await asyncio.wait_for(asyncio.gather(*(s.ready.wait() for s in streams)), timeout=args.timeout)
            failed = [s.error for s in streams if s.error]
            if failed:
                raise BenchmarkError(f"{len(failed)} streams failed to open, e.g. {failed[0]}")
            open_seconds = time.perf_counter() - opened
            await asyncio.sleep(1)
            open_rss, open_connections = rss_kib(pid), await server_connections(database, own)
            per_stream = (open_rss - idle_rss) / len(streams)
            print(
                f"{len(streams):,} streams open in {open_seconds:.2f} s: server RSS {open_rss / 1024:7.1f} MiB "
                f"(+{per_stream:.1f} KiB per stream), database connections {open_connections}"
            )

            sent = await create_notifications(app_database, users, args.notifications, args.rate, args.seed)
            expected = len(sent)
            deadline = time.perf_counter() + args.timeout
            while sum(len(s.received) for s in streams) < expected and time.perf_counter() < deadline:
                changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), timeout=1)
            burst_rss, burst_connections = rss_kib(pid), await server_connections(database, own)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        latencies = []
        by_user = {stream.user_id: stream for stream in streams}
        missing = 0
        for title, (user_id, committed) in sent.items():
            found = [at for got, at in by_user[user_id].received if got == title]
            if len(found) != 1:
                missing += 1
                continue
            latencies.append((found[0] - committed) * 1000)
        misdelivered = sum(len(s.received) for s in streams) - len(latencies)
        ordered = sorted(latencies)
        print(
            f"{len(latencies):,} of {expected:,} notifications delivered ({args.rate:.0f}/s for random users): "
            f"latency p50 {statistics.median(ordered):.1f} ms, p95 {percentile(ordered, 0.95):.1f} ms, "
            f"p99 {percentile(ordered, 0.99):.1f} ms, max {ordered[-1]:.1f} ms "
            f"(p99 = {percentile(ordered, 0.99) / P99_TARGET_MS:.2f}x the 1 s target)"
        )
        print(f"after the burst:  server RSS {burst_rss / 1024:7.1f} MiB, database connections {burst_connections}")
        print(
            f"database connections idle / {len(streams):,} streams open / after the burst: "
            f"{idle_connections} / {open_connections} / {burst_connections} "
            f"(at most DB_POOL_SIZE + DB_MAX_OVERFLOW + the one listener, whatever the number of streams)"
        )
        if missing or misdelivered:
            print(f"FAILED: {missing} notifications not delivered exactly once, {misdelivered} extra events")
            ok = False
    finally:
        await app_database.dispose()
    return ok


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=1000, help="concurrent streams, one user each (1,000)")
    parser.add_argument("--notifications", type=int, default=2000, help="notifications created (2,000)")
    parser.add_argument("--rate", type=float, default=200.0, help="notifications per second (200)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--log-level", default="WARNING", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    parser.add_argument("--database-url", default=DEFAULT_SERVER_URL, help="a PostgreSQL server (maintenance db)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for readiness and delivery")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    print(machine_line())
    database = BenchDatabase.create(args.database_url)
    ok = True
    try:
        with tempfile.TemporaryDirectory(prefix="cp-bench-stream-") as temporary:
            directory = Path(temporary)
            environment = {
                "DATABASE_URL": database.url,
                "ENVIRONMENT": "development",
                "VAR_DIR": str(directory / "var"),
                "LOG_LEVEL": args.log_level,
                "LOG_JSON": "false",
                "RATE_LIMIT_ENABLED": "false",
                "SCHEDULER_ENABLED": "false",
                "WORKER_CONCURRENCY": "0",
            }
            try:
                with serve_one_worker(directory, environment, args.timeout, ["--migrate"]) as (process, base_url):
                    try:
                        ok = asyncio.run(run(base_url, process.pid, database, args))
                    finally:
                        code, seconds = stop_server(process)
                        print(f"server stopped: {describe_exit(code)} in {seconds:.1f} s")
                        ok = ok and clean_exit(code)
            finally:
                for line in summarise_log(directory / "server.log").notable:
                    print(f"  server log: {line}")
    except BenchmarkError as error:
        print(f"FAILED: {error}")
        ok = False
    finally:
        database.drop()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
