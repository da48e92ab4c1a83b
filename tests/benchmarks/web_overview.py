#!/usr/bin/env python
"""The dashboard's overview page with a year of usage: its server time, and the JavaScript each
page ships (issue 19's targets: p50 < 50 ms; < 150 KB of JavaScript gzipped per page).

1. serve:   `codepulse serve --workers 1` on a fresh database — SQLite in a temporary directory
            (default), or with `--postgres` a new PostgreSQL database `cp_bench_web_<random>`
            on BENCH_POSTGRES_URL (default postgresql+asyncpg://postgres@127.0.0.1:5432/postgres),
            dropped at the end; scheduler and rate limits off, JSON access lines;
2. load:    a user registered through the API, then `--days` days (default 365) of usage synced
            through `POST /api/v1/sync` as the CLI does (`--per-day` records a day, over four
            tools and seven models, one of them unpriced), in batches of 5,000;
3. measure: the user signs in through the web form (the session cookie), then after
            `--warmup` untimed requests, `--requests` sequential `GET /` (the overview: four
            periods, streaks, 30 days of trends, models and tools) and as many `GET /?range=365d`;
            the server time of each is the `duration_ms` of its `http.request` access line (from
            the first byte in to the last byte out, inside the server); the loopback round trip
            measured by the client is printed beside it;
4. weight:  for the sign-in page, the empty overview and the overview with usage, every script
            the page loads, fetched as a browser does (Accept-Encoding: gzip): bytes on the wire.

    uv run python tests/benchmarks/web_overview.py
    uv run python tests/benchmarks/web_overview.py --postgres --requests 500

Exit status 1 when a check failed (an error answer, a server that did not start or stop
cleanly); the targets are measurements and do not change it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

if TYPE_CHECKING:  # mypy sees this folder as the package tests.benchmarks
    from tests.benchmarks._serve import (
        BenchmarkError,
        clean_exit,
        describe_exit,
        machine_line,
        serve_one_worker,
        stop_server,
    )
else:  # run as a script, this folder is sys.path[0]
    from _serve import BenchmarkError, clean_exit, describe_exit, machine_line, serve_one_worker, stop_server

PASSWORD = "correct-horse-battery-staple-42"
TARGET_P50_MS = 50.0
TARGET_JS_BYTES = 150 * 1024
PAIRS = (
    ("claude-code", "claude-sonnet-4-5", (40, 2_000, 60_000, 20_000, 900_000)),
    ("claude-code", "claude-opus-4-5", (30, 1_000, 30_000, 10_000, 400_000)),
    ("codex", "gpt-5-codex", (0, 50_000, 8_000, 0, 300_000)),
    ("codex", "gpt-5-1-codex-mini", (0, 20_000, 3_000, 0, 100_000)),
    ("gemini-cli", "gemini-2-5-pro", (0, 30_000, 4_000, 0, 80_000)),
    ("opencode", "glm-4-6", (0, 10_000, 2_000, 0, 20_000)),
    ("opencode", "qwen3-coder-local", (0, 5_000, 1_000, 0, 0)),  # unpriced
)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def year_of_records(days: int, per_day: int, now: datetime) -> list[dict[str, Any]]:
    records = []
    for day in range(days):
        at = now - timedelta(days=day)
        if day % 9 == 4:  # a day off now and then: streaks with gaps
            continue
        for n in range(per_day):
            source, model, (scale, inp, out, cache_w, cache_r) = PAIRS[(day + n) % len(PAIRS)]
            factor = 1 + (day * 7 + n * 13) % 5
            records.append(
                {
                    "source": source,
                    "message_id": f"msg-{day}-{n}",
                    "request_id": f"req-{day}-{n}",
                    "model": model,
                    "timestamp": (at - timedelta(minutes=n)).isoformat(),
                    "input_tokens": (inp + scale) * factor // 10,
                    "output_tokens": out * factor // 10,
                    "cache_creation_5m_tokens": cache_w * factor // 10,
                    "cache_creation_1h_tokens": 0,
                    "cache_read_tokens": cache_r * factor // 10,
                    "reasoning_tokens": 0,
                }
            )
    return records


async def create_postgres_database() -> tuple[str, str]:
    base = os.environ.get("BENCH_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres")
    name = f"cp_bench_web_{uuid.uuid4().hex[:10]}"
    engine = create_async_engine(base, isolation_level="AUTOCOMMIT")
    async with engine.connect() as connection:
        await connection.execute(text(f'CREATE DATABASE "{name}"'))
    await engine.dispose()
    return base, make_url(base).set(database=name).render_as_string(hide_password=False)


async def drop_postgres_database(base: str, url: str) -> None:
    name = make_url(url).database
    engine = create_async_engine(base, isolation_level="AUTOCOMMIT")
    async with engine.connect() as connection:
        await connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    await engine.dispose()


def register(client: httpx.Client) -> dict[str, str]:
    body = {"email": "bench@example.com", "password": PASSWORD, "username": "bench", "name": "Bench"}
    registered = client.post("/api/v1/auth/register", json=body)
    if registered.status_code != 201:
        raise BenchmarkError(f"register: {registered.status_code} {registered.text}")
    return {"Authorization": f"Bearer {registered.json()['token']}"}


def sync_all(client: httpx.Client, headers: dict[str, str], records: list[dict[str, Any]]) -> None:
    for start in range(0, len(records), 5_000):
        batch = {
            "client": {"name": "codepulse-cli", "version": "0.9.0"},
            "machine_id": "bench",
            "records": records[start : start + 5_000],
        }
        synced = client.post("/api/v1/sync", json=batch, headers=headers, timeout=120)
        if synced.status_code != 200 or synced.json()["rejected"]:
            raise BenchmarkError(f"sync: {synced.status_code} {synced.text[:500]}")


def sign_in(client: httpx.Client) -> None:
    page = client.get("/sign-in")
    token = re.search(r'name="csrf_token" value="([0-9a-f]+)"', page.text)
    if token is None:
        raise BenchmarkError("no CSRF token on the sign-in page")
    response = client.post("/sign-in", data={"csrf_token": token.group(1), "login": "bench", "password": PASSWORD})
    if response.status_code != 303:
        raise BenchmarkError(f"sign-in form: {response.status_code}")


def server_durations(log: Path, path: str, count: int) -> list[float]:
    durations = []
    for line in log.read_text(errors="replace").splitlines():
        if '"http.request"' not in line:
            continue
        entry = json.loads(line)
        if entry.get("path") == path and entry.get("status") == 200 and entry.get("method") == "GET":
            durations.append(float(entry["duration_ms"]))
    return durations[-count:]


def time_requests(client: httpx.Client, url: str, warmup: int, count: int) -> list[float]:
    for _ in range(warmup):
        client.get(url).raise_for_status()
    rounds = []
    for _ in range(count):
        started = time.perf_counter()
        response = client.get(url)
        rounds.append((time.perf_counter() - started) * 1000)
        if response.status_code != 200:
            raise BenchmarkError(f"GET {url}: {response.status_code}")
    return rounds


def scripts_weight(client: httpx.Client, path: str) -> tuple[int, int, list[str]]:
    """(bytes on the wire with gzip, bytes decoded) of every script the page loads."""
    page = client.get(path)
    page.raise_for_status()
    sources = re.findall(r'<script[^>]*\bsrc="([^"]+)"', page.text)
    wire = raw = 0
    for source in sources:
        with client.stream("GET", source, headers={"Accept-Encoding": "gzip"}) as response:
            response.raise_for_status()
            body = response.read()
            wire += response.num_bytes_downloaded
            raw += len(body)
    return wire, raw, sources


def report(label: str, server: list[float], rounds: list[float]) -> None:
    print(
        f"  {label:<22} server p50 {statistics.median(server):6.2f} ms  p95 {percentile(server, 0.95):6.2f} ms"
        f"  max {max(server):6.2f} ms   (round trip p50 {statistics.median(rounds):6.2f} ms,"
        f" p95 {percentile(rounds, 0.95):6.2f} ms; {len(server)} requests)"
        f"   target p50 < {TARGET_P50_MS:g} ms: {'met' if statistics.median(server) < TARGET_P50_MS else 'MISSED'}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postgres", action="store_true", help="PostgreSQL instead of SQLite")
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--per-day", type=int, default=30, help="records a day")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    args = parser.parse_args()
    print(machine_line())
    postgres: tuple[str, str] | None = asyncio.run(create_postgres_database()) if args.postgres else None
    try:
        with tempfile.TemporaryDirectory(prefix="cp-bench-web-") as tmp:
            directory = Path(tmp)
            url = postgres[1] if postgres else f"sqlite+aiosqlite:///{directory / 'bench.db'}"
            settings = {
                "DATABASE_URL": url,
                "VAR_DIR": str(directory / "var"),
                "ENVIRONMENT": "development",
                "SCHEDULER_ENABLED": "false",
                "WORKER_CONCURRENCY": "0",
                "RATE_LIMIT_ENABLED": "false",
                "LOG_JSON": "true",
                "LOG_LEVEL": "INFO",
            }
            extra = ["--migrate"] if postgres else []
            with serve_one_worker(directory, settings, timeout=60, extra_args=extra) as (process, base_url):
                try:
                    run(args, base_url, directory / "server.log", "PostgreSQL" if postgres else "SQLite")
                finally:
                    code, seconds = stop_server(process)
                    print(f"server stopped: {describe_exit(code)} in {seconds:.2f} s")
                return 0 if clean_exit(code) else 1
    finally:
        if postgres:
            asyncio.run(drop_postgres_database(*postgres))


def run(args: argparse.Namespace, base_url: str, log: Path, engine: str) -> None:
    now = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    records = year_of_records(args.days, args.per_day, now)
    with httpx.Client(base_url=base_url, timeout=30) as client:
        headers = register(client)
        weights = {"sign-in": scripts_weight(client, "/sign-in")}
        sign_in(client)
        weights["overview (empty)"] = scripts_weight(client, "/")
        started = time.perf_counter()
        sync_all(client, headers, records)
        print(
            f"{engine}: {len(records):,} records over {args.days} days synced in {time.perf_counter() - started:.1f} s"
        )
        weights["overview (usage)"] = scripts_weight(client, "/")
        if 'data-testid="cards"' not in client.get("/").text:
            raise BenchmarkError("the overview shows no cards")
        print("overview server time (sequential requests, one connection):")
        for label, url in (("GET / (30 days)", "/"), ("GET /?range=365d", "/?range=365d")):
            rounds = time_requests(client, url, args.warmup, args.requests)
            server = server_durations(log, "/", args.requests)
            report(label, server, rounds)
    print(f"JavaScript per page (gzip on the wire / decoded; target < {TARGET_JS_BYTES // 1024} KB gzipped):")
    for name, (wire, raw, sources) in weights.items():
        verdict = "met" if wire < TARGET_JS_BYTES else "MISSED"
        files = ", ".join(source.split("/")[-1].split("?")[0] for source in sources)
        print(f"  {name:<18} {wire / 1024:6.1f} KB gzipped / {raw / 1024:6.1f} KB  ({files})  {verdict}")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchmarkError as error:
        print(f"benchmark failed: {error}", file=sys.stderr)
        sys.exit(1)
