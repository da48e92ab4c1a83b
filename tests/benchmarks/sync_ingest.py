#!/usr/bin/env python
"""Usage sync ingest: `POST /api/v1/sync` against a raw asyncpg COPY of the same rows, in one run.

The usage acceptance benchmark. It creates a fresh PostgreSQL database (`cp_bench_<random>` on
127.0.0.1:5432, dropped at the end), starts `codepulse serve --migrate --workers 1` on it (rate
limits off, LOG_LEVEL=WARNING unless told), registers one user, and builds 100,000 realistic,
distinct usage records (Claude Code, Codex, Gemini CLI and OpenCode over 60 days; 5-minute and
1-hour cache writes, reasoning tokens, fast mode, a few unknown models), in time order as a CLI
reads its logs, cut into gzip bodies of 1,000 before the clock starts. Then:

1. new:    every batch once, one request at a time (as a CLI uploads a first sync;
           `--concurrency N` keeps N requests in flight);
2. replay: the same batches again (every record already stored: nothing may change; the server
           knows each batch by its digest);
   re-cut: the same records again in batches cut elsewhere (half a batch later), which the server
           has not seen as such: every record is looked up and compared (for information);
3. COPY:   the rows the server stored, copied with asyncpg `copy_records_to_table` into a scratch
           table made `LIKE usage_records INCLUDING ALL` (the same primary-key index): in batches of
           1,000 (one transaction each, like the API: the reference for the target), as one single
           COPY, and in batches into a scratch table that also has a foreign key to users (checked
           per row; usage_records had one until migration 0008).

It prints records/s and per-request latency for each pass, the server's and the database
backends' CPU, and the ratios new ÷ COPY (target >= 0.40) and replay ÷ new (target >= 2), then
checks the stored data: every record stored once, daily aggregates equal to the sums of the
records, and the replay changed nothing.

    uv run python tests/benchmarks/sync_ingest.py
    uv run python tests/benchmarks/sync_ingest.py --records 20000 --batch 500 --concurrency 2
    uv run python tests/benchmarks/sync_ingest.py --database-url postgresql+asyncpg://u:p@db:5432/postgres

Exit status 1 when a check failed (a non-200 answer, wrong counts, inconsistent data, a server
that did not start or stop cleanly); the targets are measurements and do not change it.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import random
import secrets
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg  # type: ignore[import-untyped]
import httpx
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from codepulse.usage.pricing import price_table

if TYPE_CHECKING:  # mypy sees this folder as the package tests.benchmarks
    from tests.benchmarks._serve import (
        BenchmarkError,
        clean_exit,
        cpu_seconds,
        describe_exit,
        machine_line,
        serve_one_worker,
        stop_server,
        summarise_log,
    )
else:  # run as a script, this folder is sys.path[0]
    from _serve import (
        BenchmarkError,
        clean_exit,
        cpu_seconds,
        describe_exit,
        machine_line,
        serve_one_worker,
        stop_server,
        summarise_log,
    )

SYNC_PATH = "/api/v1/sync"
REGISTER_PATH = "/api/v1/auth/register"
DEFAULT_SERVER_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
NEW_TARGET = 0.40
REPLAY_TARGET = 2.0
BENCH_USER = {"email": "sync@example.com", "password": "bench-password-2026-xyz", "username": "syncer", "name": "S"}
TOKEN_COLUMNS = (
    "input_tokens",
    "output_tokens",
    "cache_creation_5m_tokens",
    "cache_creation_1h_tokens",
    "cache_read_tokens",
    "reasoning_tokens",
)


# --- data ------------------------------------------------------------------------------------


def make_records(count: int, now: datetime, seed: int) -> list[dict[str, Any]]:
    """Distinct records shaped like what the CLIs read from local logs."""
    rng = random.Random(seed)
    tools = [
        ("claude-code", ["claude-sonnet-4-5-20250929", "claude-opus-4-5-20251101", "claude-haiku-4-5-20251001"], 0.55),
        ("codex", ["gpt-5.1-codex", "gpt-5-codex", "gpt-5.1-codex-mini"], 0.2),
        ("gemini-cli", ["gemini-2.5-pro", "gemini-3-pro-preview", "gemini-2.5-flash"], 0.15),
        ("opencode", ["claude-sonnet-4-5", "qwen3-coder-local", "glm-4.6"], 0.1),
    ]
    weights = [tool[2] for tool in tools]
    sessions = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(400)]
    records = []
    for i in range(count):
        source, models, _ = rng.choices(tools, weights)[0]
        model = rng.choice(models)
        at = now - timedelta(seconds=rng.randint(0, 60 * 86400))
        cache_read = rng.choice([0, rng.randint(1_000, 180_000)])
        record: dict[str, Any] = {
            "source": source,
            "message_id": f"msg_{seed:02d}{i:07d}{rng.getrandbits(48):012x}",
            "request_id": f"req_{rng.getrandbits(80):020x}" if source == "claude-code" else None,
            "model": model,
            "timestamp": at.isoformat(timespec="milliseconds"),
            "input_tokens": rng.randint(1, 4_000),
            "output_tokens": rng.randint(1, 6_000),
            "cache_creation_5m_tokens": rng.choice([0, 0, rng.randint(100, 20_000)]) if source == "claude-code" else 0,
            "cache_creation_1h_tokens": rng.choice([0, 0, 0, rng.randint(100, 20_000)])
            if source == "claude-code"
            else 0,
            "cache_read_tokens": cache_read,
            "reasoning_tokens": rng.randint(0, 800) if source in ("codex", "gemini-cli") else 0,
            "session_id": rng.choice(sessions),
        }
        if source == "claude-code" and rng.random() < 0.02:
            record["speed"] = "fast"
        records.append(record)
    # A CLI reads its logs in order: a first sync goes from the oldest record to the newest.
    records.sort(key=lambda record: record["timestamp"])
    return records


def gzip_batches(records: list[dict[str, Any]], size: int) -> list[bytes]:
    bodies = []
    for start in range(0, len(records), size):
        body = {
            "client": {"name": "codepulse-cli", "version": "bench"},
            "machine_id": "bench-machine",
            "records": records[start : start + size],
        }
        bodies.append(gzip.compress(json.dumps(body).encode(), compresslevel=6))
    return bodies


# --- database and server ---------------------------------------------------------------------


async def _admin(admin_url: str, statement: str) -> None:
    engine = create_async_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            await connection.execute(text(statement))
    finally:
        await engine.dispose()


@dataclass
class BenchDatabase:
    url: str
    admin_url: str
    name: str

    @classmethod
    def create(cls, server_url: str) -> BenchDatabase:
        admin = make_url(server_url)
        name = f"cp_bench_{secrets.token_hex(4)}"
        admin_url = admin.render_as_string(hide_password=False)
        asyncio.run(_admin(admin_url, f'CREATE DATABASE "{name}"'))
        return cls(admin.set(database=name).render_as_string(hide_password=False), admin_url, name)

    @property
    def dsn(self) -> str:
        return make_url(self.url).set(drivername="postgresql").render_as_string(hide_password=False)

    def drop(self) -> None:
        asyncio.run(_admin(self.admin_url, f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))

    def backend_pids(self) -> list[int]:
        marker = f" {self.name} ".encode()
        pids = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    title = (entry / "cmdline").read_bytes()
                except OSError:
                    continue
                if title.startswith(b"postgres:") and marker in title:
                    pids.append(int(entry.name))
        return pids

    def backends_cpu(self) -> float:
        return sum(cpu for pid in self.backend_pids() if (cpu := cpu_seconds(pid)) is not None)


@contextmanager
def running_server(database: BenchDatabase, directory: Path, args: argparse.Namespace) -> Iterator[tuple[Any, str]]:
    settings = {
        "DATABASE_URL": database.url,
        "ENVIRONMENT": "development",
        "VAR_DIR": str(directory / "var"),
        "LOG_LEVEL": args.log_level,
        "LOG_JSON": "false",
        "RATE_LIMIT_ENABLED": "false",
        "SCHEDULER_ENABLED": "false",
    }
    with serve_one_worker(directory, settings, args.timeout, ["--migrate"]) as served:
        yield served


# --- passes ----------------------------------------------------------------------------------


@dataclass
class Pass:
    name: str
    records: int
    seconds: float
    server_cpu: float | None = None
    backends_cpu: float | None = None
    latencies_ms: list[float] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.records / self.seconds

    def line(self) -> str:
        parts = [f"{self.name:<16} {self.records:>8,} records in {self.seconds:7.2f} s = {self.rate:>9,.0f} records/s"]
        if self.latencies_ms:
            ordered = sorted(self.latencies_ms)
            p50 = statistics.median(ordered)
            p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
            parts.append(f"per request p50 {p50:6.1f} ms, p99 {p99:6.1f} ms")
        if self.server_cpu is not None:
            parts.append(f"server {self.server_cpu / self.seconds * 100:3.0f}% of a core")
        if self.backends_cpu is not None:
            parts.append(f"postgres {self.backends_cpu / self.seconds * 100:3.0f}%")
        return " | ".join(parts)


def post_batches(
    name: str, base_url: str, token: str, bodies: list[bytes], per_batch: list[int], concurrency: int, pid: int,
    database: BenchDatabase,
) -> Pass:  # fmt: skip
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json", "Content-Encoding": "gzip"}
    counts = {"inserted": 0, "updated": 0, "unchanged": 0, "rejected": 0}
    latencies: list[float] = []
    with httpx.Client(base_url=base_url, timeout=120.0, headers=headers) as client:

        def send(body: bytes) -> tuple[float, dict[str, Any]]:
            started = time.perf_counter()
            response = client.post(SYNC_PATH, content=body)
            elapsed = (time.perf_counter() - started) * 1000
            if response.status_code != 200:
                raise BenchmarkError(f"{name}: POST {SYNC_PATH} answered {response.status_code}: {response.text[:300]}")
            return elapsed, response.json()

        server_before = cpu_seconds(pid)
        backends_before = database.backends_cpu()
        started = time.perf_counter()
        if concurrency == 1:
            results = [send(body) for body in bodies]
        else:
            with ThreadPoolExecutor(concurrency) as pool:
                results = list(pool.map(send, bodies))
        seconds = time.perf_counter() - started
        server_after = cpu_seconds(pid)
        backends_after = database.backends_cpu()
    for (elapsed, answer), expected in zip(results, per_batch, strict=True):
        latencies.append(elapsed)
        for key in ("inserted", "updated", "unchanged"):
            counts[key] += answer[key]
        counts["rejected"] += len(answer["rejected"])
        if answer["received"] != expected:
            raise BenchmarkError(f"{name}: a batch of {expected} was received as {answer['received']}")
    server_cpu = None if server_before is None or server_after is None else server_after - server_before
    return Pass(name, sum(per_batch), seconds, server_cpu, backends_after - backends_before, latencies, counts)


async def stored_rows(database: BenchDatabase) -> tuple[list[str], list[tuple[Any, ...]]]:
    connection = await asyncpg.connect(database.dsn)
    try:
        rows = await connection.fetch("SELECT * FROM usage_records")
        columns = list(rows[0].keys()) if rows else []
        return columns, [tuple(row.values()) for row in rows]
    finally:
        await connection.close()


async def copy_baseline(
    database: BenchDatabase, columns: list[str], rows: list[tuple[Any, ...]], size: int
) -> list[Pass]:
    connection = await asyncpg.connect(database.dsn)
    results = []
    try:
        for name, batch, foreign_key in (
            (f"COPY x{size:,}", size, False),
            ("COPY single", len(rows), False),
            (f"COPY x{size:,} +FK", size, True),
        ):
            await connection.execute("DROP TABLE IF EXISTS bench_copy")
            await connection.execute("CREATE TABLE bench_copy (LIKE usage_records INCLUDING ALL)")
            if foreign_key:  # usage_records also checks user_id against users
                await connection.execute("ALTER TABLE bench_copy ADD FOREIGN KEY (user_id) REFERENCES users (id)")
            backends_before = database.backends_cpu()
            started = time.perf_counter()
            for start in range(0, len(rows), batch):
                async with connection.transaction():
                    await connection.copy_records_to_table(
                        "bench_copy", records=rows[start : start + batch], columns=columns
                    )
            seconds = time.perf_counter() - started
            results.append(Pass(name, len(rows), seconds, None, database.backends_cpu() - backends_before))
        await connection.execute("DROP TABLE bench_copy")
    finally:
        await connection.close()
    return results


async def consistency(database: BenchDatabase) -> dict[str, Any]:
    connection = await asyncpg.connect(database.dsn)
    try:
        sums = ", ".join(f"sum({name})" for name in (*TOKEN_COLUMNS, "cost_nanousd"))
        records = await connection.fetchrow(f"SELECT count(*), {sums} FROM usage_records")  # noqa: S608
        daily = await connection.fetchrow(f"SELECT sum(records), {sums} FROM usage_daily")  # noqa: S608
        stamp = await connection.fetchval("SELECT max(updated_at) FROM usage_records")
        return {"records": tuple(records), "daily": tuple(daily), "last_update": stamp}
    finally:
        await connection.close()


# --- main ------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=100_000, help="distinct records (default 100,000)")
    parser.add_argument("--batch", type=int, default=1_000, help="records per request (default 1,000)")
    parser.add_argument("--concurrency", type=int, default=1, help="requests in flight (default 1, as a CLI)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--log-level", default="WARNING", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    parser.add_argument("--database-url", default=DEFAULT_SERVER_URL, help="a PostgreSQL server (maintenance db)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for readiness")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    print(machine_line())
    now = datetime.now(UTC).replace(microsecond=0)
    records = make_records(args.records, now, args.seed)
    bodies = gzip_batches(records, args.batch)
    per_batch = [min(args.batch, args.records - i * args.batch) for i in range(len(bodies))]
    raw = sum(len(json.dumps(r)) for r in records)
    print(
        f"data: {args.records:,} records ({raw / args.records:.0f} bytes of JSON each), {len(bodies)} gzip bodies of "
        f"{args.batch:,} ({statistics.mean(map(len, bodies)) / 1024:.0f} KiB each); "
        f"{sum(price_table().model_key(r['model']) not in price_table().prices for r in records):,} of unknown models"
    )
    database = BenchDatabase.create(args.database_url)
    print(f"database: fresh {database.name} on {make_url(database.url).host}; server: codepulse serve, 1 worker")
    failures: list[str] = []
    try:
        with (
            tempfile.TemporaryDirectory(prefix="cp-sync-bench-") as tmp,
            running_server(database, Path(tmp), args) as (process, base_url),
        ):
            with httpx.Client(base_url=base_url, timeout=30.0) as client:
                registered = client.post(REGISTER_PATH, json=BENCH_USER)
                if registered.status_code != 201:
                    raise BenchmarkError(f"register answered {registered.status_code}: {registered.text[:300]}")
                token = registered.json()["token"]
                # Untimed warm-up: one small batch of other records (imports, pools, statement caches).
                warm = make_records(200, now, args.seed + 1)
                client.post(SYNC_PATH, headers={"Authorization": f"Bearer {token}"},
                            json={"client": {"name": "warmup"}, "machine_id": "w", "records": warm})  # fmt: skip
            new = post_batches("new", base_url, token, bodies, per_batch, args.concurrency, process.pid, database)
            after_new = asyncio.run(consistency(database))
            replay = post_batches("replay", base_url, token, bodies, per_batch, args.concurrency, process.pid, database)
            after_replay = asyncio.run(consistency(database))
            shift = args.batch // 2
            recut_bodies = gzip_batches(records[shift:] + records[:shift], args.batch)
            recut = post_batches(
                "replay re-cut", base_url, token, recut_bodies, per_batch, args.concurrency, process.pid, database
            )
            after_recut = asyncio.run(consistency(database))
            exit_code, stop_seconds = stop_server(process)
            log = summarise_log(Path(tmp) / "server.log")
        columns, rows = asyncio.run(stored_rows(database))
        rows = [row for row in rows if row[columns.index("machine_id")] == "bench-machine"]
        copies = asyncio.run(copy_baseline(database, columns, rows, args.batch))
    finally:
        database.drop()

    print()
    for result in (new, replay, recut, *copies):
        print(result.line())
    batched, single, with_fk = copies
    print()
    ratio = new.rate / batched.rate
    verdict = "PASS" if ratio >= NEW_TARGET else "BELOW TARGET"
    print(f"new ÷ COPY in batches of {args.batch:,}: {ratio:.2f} (target >= {NEW_TARGET:.2f}: {verdict})")
    print(
        f"  (new ÷ single COPY: {new.rate / single.rate:.2f}; "
        f"new ÷ COPY in batches into a table with usage_records' foreign key: {new.rate / with_fk.rate:.2f})"
    )
    replay_ratio = replay.rate / new.rate
    verdict = "PASS" if replay_ratio >= REPLAY_TARGET else "BELOW TARGET"
    print(f"replay ÷ new: {replay_ratio:.2f} (target >= {REPLAY_TARGET:.1f}: {verdict})")
    print(f"  (replay re-cut ÷ new: {recut.rate / new.rate:.2f})")

    expected_new = {"inserted": args.records, "updated": 0, "unchanged": 0, "rejected": 0}
    expected_replay = {"inserted": 0, "updated": 0, "unchanged": args.records, "rejected": 0}
    if new.counts != expected_new:
        failures.append(f"new pass counted {new.counts}, expected {expected_new}")
    if replay.counts != expected_replay:
        failures.append(f"replay pass counted {replay.counts}, expected {expected_replay}")
    if after_new["records"] != after_new["daily"]:
        failures.append(f"aggregates {after_new['daily']} differ from the records {after_new['records']}")
    if after_new["records"][0] != args.records + 200:
        failures.append(f"{after_new['records'][0]:,} records stored, expected {args.records + 200:,}")
    if after_replay != after_new:
        failures.append("the replay changed stored data")
    if recut.counts != expected_replay:
        failures.append(f"re-cut replay counted {recut.counts}, expected {expected_replay}")
    if after_recut != after_new:
        failures.append("the re-cut replay changed stored data")
    if len(rows) != args.records:
        failures.append(f"{len(rows):,} rows for the COPY baseline, expected {args.records:,}")
    if not clean_exit(exit_code):
        failures.append(f"server stop: {describe_exit(exit_code)}")
    print(
        f"checks: stored {after_new['records'][0]:,} records (incl. 200 warm-up), aggregates equal the records, "
        f"replay wrote nothing; server stopped in {stop_seconds:.1f} s ({describe_exit(exit_code)}); "
        f"server log: {log.lines} lines {dict(log.levels)}"
    )
    for line in log.notable:
        print(f"  log: {line[:200]}")
    for failure in failures:
        print(f"FAILED: {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchmarkError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
