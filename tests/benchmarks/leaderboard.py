#!/usr/bin/env python
"""The leaderboard acceptance benchmark: a full recompute on 10 M daily aggregates, then the
board under wrk against liveness, in one run, on PostgreSQL.

1. load:      a fresh database (`cp_bench_<random>` on 127.0.0.1:5432, dropped at the end),
              migrated to head, then 100,000 users and 10,000,000 usage_daily rows (and a
              handful of leaderboard exclusions) generated in Python and streamed with COPY
              (`_usage_data.py`: the data's shape is printed), then VACUUM ANALYZE;
2. recompute: `recompute_rankings(database, settings, now)` twice, in this process (the second
              has a previous snapshot, so rank changes are computed), each timed against the
              10 s target; then `compute_benchmarks(database, settings, now)` once (the
              hourly community benchmarks), untargeted;
3. serve:     `codepulse serve --workers 1` on that database (scheduler off, rate limits off),
              a session token for a ranked public user, then for `--rounds` rounds, the order of
              the paths rotating,

                  wrk -t2 -c32 -d10s --latency [-H "Authorization: Bearer cp_..."] <url>

              on liveness, `GET /api/v1/leaderboard?period=week&metric=tokens&limit=50`
              anonymous, the same with the token (the answer then carries `me`), and the same
              with each request carrying the next of `--viewers` users' tokens (a crowd of
              distinct readers: neither the authentication nor `me` comes from a cache).

It prints each wrk run (requests/s, p50, p99), then per path the medians and the ratio of
requests/s to liveness (targets, for the anonymous board and the board with one token: >= 0.5 of
liveness, p99 < 20 ms at 32 connections; the crowd's figures are for comparison).

    uv run python tests/benchmarks/leaderboard.py
    uv run python tests/benchmarks/leaderboard.py --users 10000 --rows 1000000 -d 5
    uv run python tests/benchmarks/leaderboard.py --skip-http      # load and recompute only
    uv run python tests/benchmarks/leaderboard.py --keep           # then --reuse cp_bench_<...>: no reload

Needs wrk on PATH for step 3 (`apt-get install -y wrk`). Exit status 1 when a check failed (an
error answer, a board without `me`, a server that did not start or stop cleanly), 2 without wrk;
the targets are measurements and do not change it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg  # type: ignore[import-untyped]
import httpx
from sqlalchemy import text
from sqlalchemy.engine import make_url

from codepulse.config import Settings, load_settings
from codepulse.db.engine import Database, create_engine
from codepulse.leaderboard.benchmarks import compute_benchmarks
from codepulse.leaderboard.ranking import recompute_rankings
from codepulse.logging import configure_logging
from codepulse.migrations import upgrade
from codepulse.security import hash_token, new_session_token

if TYPE_CHECKING:  # mypy sees this folder as the package tests.benchmarks
    from tests.benchmarks._serve import (
        LIVENESS_PATH,
        WRK_MISSING,
        BenchmarkError,
        WrkResult,
        clean_exit,
        describe_exit,
        machine_line,
        run_wrk,
        serve_one_worker,
        stop_server,
        summarise_log,
    )
    from tests.benchmarks._usage_data import BenchDatabase, Shape, database_activity, describe_data, load
else:  # run as a script, this folder is sys.path[0]
    from _serve import (
        LIVENESS_PATH,
        WRK_MISSING,
        BenchmarkError,
        WrkResult,
        clean_exit,
        describe_exit,
        machine_line,
        run_wrk,
        serve_one_worker,
        stop_server,
        summarise_log,
    )
    from _usage_data import BenchDatabase, Shape, database_activity, describe_data, load

BOARD_PATH = "/api/v1/leaderboard?period=week&metric=tokens&limit=50"
DEFAULT_SERVER_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
RECOMPUTE_TARGET_SECONDS = 10.0
RATIO_TARGET = 0.5
# The targets; the many-viewers run is reported beside them, without one.
TARGETED = ("board anonymous", "board with token (me)")
P99_TARGET_MS = 20.0


# --- the database ----------------------------------------------------------------------------


def bench_settings(database: BenchDatabase, scratch: Path) -> Settings:
    # No .env: the developer's settings must not leak into the figures.
    settings = load_settings(
        _env_file=None, DATABASE_URL=database.url, VAR_DIR=scratch / "var", SCHEDULER_ENABLED=False, LOG_LEVEL="WARNING"
    )
    configure_logging(settings)  # the recompute's info lines would interleave with the figures
    return settings


async def migrate_and_load(database: BenchDatabase, settings: Settings, shape: Shape | None, now: datetime) -> None:
    """Migrate to head, then load `shape` (None: the data is there already)."""
    engine = create_engine(settings)
    started = time.perf_counter()
    try:
        async with engine.begin() as connection:
            await upgrade(connection)
    finally:
        await engine.dispose()
    print(f"migrated to head in {time.perf_counter() - started:.1f} s")
    if shape is None:
        return
    print(f"data: {shape.describe()}")
    connection = await asyncpg.connect(database.dsn)
    try:
        names = ("server_version", "shared_buffers", "work_mem", "max_parallel_workers_per_gather")
        shown = [f"{name} {await connection.fetchval(f'SHOW {name}')}" for name in names]
        print(f"PostgreSQL: {', '.join(shown)} (the server's own settings, untouched)")
        report = await load(connection, shape, now)
        rate = report.usage_rows / report.usage_seconds
        print(
            f"load: users planned and copied in {report.users_seconds:.1f} s; {report.usage_rows:,} usage_daily rows "
            f"generated and copied in {report.usage_seconds:.1f} s ({rate:,.0f} rows/s, one COPY per 10,000 users); "
            f"VACUUM ANALYZE {report.vacuum_seconds:.1f} s; "
            f"total {report.users_seconds + report.usage_seconds + report.vacuum_seconds:.1f} s"
        )
        for line in await describe_data(connection, now):
            print(f"  {line}")
    finally:
        await connection.close()


# --- the recompute ---------------------------------------------------------------------------


async def timed(label: str, call: Callable[[], Awaitable[Any]], target: float | None) -> Any:
    load = os.getloadavg()[0]
    started = time.perf_counter()
    result = await call()
    seconds = time.perf_counter() - started
    verdict = ""
    if target is not None:
        verdict = f" = {seconds / target:.2f}x the {target:g} s target -> "
        verdict += "PASS" if seconds < target else "ABOVE TARGET"
    print(f"{label}: {seconds:.2f} s{verdict} (load average before: {load:.2f})")
    return result


async def recompute(settings: Settings, now: datetime) -> None:
    """Time two recomputes and the community benchmarks."""
    database = Database.from_settings(settings)
    try:
        for run in ("first", "second"):
            async with database.transaction(write=False) as session:
                found = await session.execute(text("SELECT 1 FROM leaderboard_snapshots WHERE state = 'current'"))
                before = "a previous snapshot: rank changes" if found.first() else "no previous snapshot"
            result = await timed(
                f"recompute_rankings, {run} ({before})",
                lambda: recompute_rankings(database, settings, now),
                RECOMPUTE_TARGET_SECONDS,
            )
        ranked = ", ".join(f"{period} {counts['tokens']:,}" for period, counts in result.totals.items())
        print(f"  public profiles ranked on tokens: {ranked}")
        await timed("compute_benchmarks (7d, 30d, all)", lambda: compute_benchmarks(database, settings, now), None)
        async with database.transaction(write=False) as session:
            snapshots = (
                await session.execute(
                    text("SELECT state, duration_ms FROM leaderboard_snapshots ORDER BY computed_at, state")
                )
            ).all()
            standings = (await session.execute(text("SELECT count(*) FROM leaderboard_standings"))).scalar_one()
        shown = ", ".join(f"{state} ({ms:,} ms recorded)" for state, ms in snapshots)
        print(f"  snapshots now: {shown}; {standings:,} standing rows in all")
    finally:
        await database.dispose()


async def ranked_user_token(database: BenchDatabase, now: datetime) -> tuple[str, str]:
    """A session token for a public user ranked mid-board on the week's tokens (so `me` is not on
    the first page), as a sign-in would store it: (username, token)."""
    connection = await asyncpg.connect(database.dsn)
    try:
        row = await connection.fetchrow(
            """
            SELECT u.id, u.username FROM leaderboard_standings s
            JOIN leaderboard_snapshots n ON n.id = s.snapshot_id AND n.state = 'current'
            JOIN users u ON u.id = s.user_id
            WHERE s.period = 'week' AND s.tokens_rank IS NOT NULL
            ORDER BY s.tokens_position
            OFFSET (SELECT count(*) / 2 FROM leaderboard_standings s2 JOIN leaderboard_snapshots n2
                    ON n2.id = s2.snapshot_id AND n2.state = 'current'
                    WHERE s2.period = 'week' AND s2.tokens_rank IS NOT NULL)
            LIMIT 1
            """
        )
        if row is None:
            raise BenchmarkError("nobody is ranked on the week's tokens board")
        token = new_session_token()
        await connection.execute(
            "INSERT INTO auth_sessions (id, user_id, token_hash, kind, name, created_at, last_used_at, expires_at, "
            "absolute_expires_at) VALUES ($1, $2, $3, 'cli', 'leaderboard benchmark', $4, $4, $5, $5)",
            uuid.uuid4(),
            row["id"],
            hash_token(token),
            now,
            now + timedelta(days=30),
        )
        return str(row["username"]), token
    finally:
        await connection.close()


async def viewer_tokens(database: BenchDatabase, now: datetime, count: int) -> list[str]:
    """Session tokens of `count` public users with usage this week (one session each)."""
    connection = await asyncpg.connect(database.dsn)
    try:
        users = await connection.fetch(
            """
            SELECT s.user_id FROM leaderboard_standings s
            JOIN leaderboard_snapshots n ON n.id = s.snapshot_id AND n.state = 'current'
            WHERE s.period = 'week' AND s.tokens_rank IS NOT NULL
            ORDER BY s.user_id LIMIT $1
            """,
            count,
        )
        tokens = [new_session_token() for _ in users]
        await connection.executemany(
            "INSERT INTO auth_sessions (id, user_id, token_hash, kind, name, created_at, last_used_at, expires_at, "
            "absolute_expires_at) VALUES ($1, $2, $3, 'cli', 'leaderboard benchmark', $4, $4, $5, $5)",
            [
                (uuid.uuid4(), row["user_id"], hash_token(token), now, now + timedelta(days=30))
                for row, token in zip(users, tokens, strict=True)
            ],
        )
        return tokens
    finally:
        await connection.close()


# --- the server ------------------------------------------------------------------------------


@contextmanager
def running_server(database: BenchDatabase, directory: Path, args: argparse.Namespace) -> Iterator[tuple[Any, str]]:
    """`codepulse serve --workers 1` in `directory` (its own cwd: no .env), logging to a file."""
    settings = {
        "DATABASE_URL": database.url,
        "ENVIRONMENT": "development",
        "VAR_DIR": str(directory / "var"),
        "LOG_LEVEL": args.log_level,
        "LOG_JSON": "false",
        "WEB_CONCURRENCY": "1",
        "RATE_LIMIT_ENABLED": "false",
        "SCHEDULER_ENABLED": "false",  # no recompute behind the measurements
    }
    with serve_one_worker(directory, settings, args.timeout) as served:
        yield served


@dataclass
class Target:
    name: str
    path: str
    headers: tuple[str, ...] = ()
    script: tuple[str, ...] = ()


# Each request carries the next of many viewers' tokens (each wrk thread starts at its own offset),
# so neither the authentication cache nor the cached `me` of one viewer answers it.
ROTATING_TOKENS_LUA = """
local tokens = {}
local next_index = 1
function init(args)
  for line in io.lines(args[1]) do tokens[#tokens + 1] = line end
  next_index = math.random(#tokens)
end
function request()
  next_index = next_index % #tokens + 1
  return wrk.format(nil, nil, {["Authorization"] = "Bearer " .. tokens[next_index]})
end
"""


def check_board(base_url: str, username: str, token: str) -> None:
    """One answer of each kind before the load: 200, a full page, and `me` for the token."""
    with httpx.Client(base_url=base_url, timeout=30.0) as client:
        anonymous = client.get(BOARD_PATH)
        mine = client.get(BOARD_PATH, headers={"Authorization": f"Bearer {token}"})
    for label, response in (("anonymous", anonymous), ("with a token", mine)):
        if response.status_code != 200:
            raise BenchmarkError(f"GET {BOARD_PATH} {label} answered {response.status_code}: {response.text[:300]}")
    body, me = anonymous.json(), mine.json().get("me")
    if not me or me.get("rank") is None:
        raise BenchmarkError(f"the answer for {username} has no rank in `me`: {me!r}")
    print(
        f"board: {len(body.get('items', body.get('entries', [])))} entries on the page, total_ranked "
        f"{body.get('total_ranked')}, window {body.get('window')}, computed_at {body.get('computed_at')}; "
        f"me ({username}): rank {me.get('rank')}, percentile {me.get('percentile')}"
    )


def run_targets(base_url: str, targets: list[Target], args: argparse.Namespace) -> dict[str, list[WrkResult]]:
    runs: dict[str, list[WrkResult]] = {target.name: [] for target in targets}
    for target in targets:  # untimed warm-up: imports, pools, statement caches, the page cache
        run_wrk(base_url + target.path, args.threads, args.connections, args.warmup, target.headers, target.script)
    for number in range(args.rounds):
        for target in targets[number % len(targets) :] + targets[: number % len(targets)]:
            result = run_wrk(
                base_url + target.path, args.threads, args.connections, args.duration, target.headers, target.script
            )
            runs[target.name].append(result)
            errors = f", {result.non_2xx} non-2xx" if result.non_2xx else ""
            errors += f", socket errors {result.socket_errors}" if result.socket_error_count else ""
            print(
                f"  round {number + 1} {target.name:<22} {result.requests_per_second:>9,.0f} req/s  "
                f"p50 {result.p(50):6.2f} ms  p99 {result.p(99):6.2f} ms{errors}"
            )
    return runs


def report(runs: dict[str, list[WrkResult]], args: argparse.Namespace) -> bool:
    """Medians per path and the ratios to liveness; False when a run had errors."""
    print()
    wrk = f"wrk -t{args.threads} -c{args.connections} -d{args.duration:g}s"
    print(f"== result (medians of {args.rounds} rounds, {wrk})")
    liveness = statistics.median(r.requests_per_second for r in runs["liveness"])
    failed = []
    for name, results in runs.items():
        rps = statistics.median(r.requests_per_second for r in results)
        p50 = statistics.median(r.p(50) for r in results)
        p99 = statistics.median(r.p(99) for r in results)
        failed += [f"{name}: {r.non_2xx} non-2xx" for r in results if r.non_2xx]
        failed += [f"{name}: socket errors {r.socket_errors}" for r in results if r.socket_error_count]
        line = f"  {name:<22} {rps:>9,.0f} req/s  p50 {p50:6.2f} ms  p99 {p99:6.2f} ms"
        if name != "liveness":
            ratio = rps / liveness
            line += f"  ratio to liveness {ratio:.2f}"
        if name in TARGETED:
            line += (
                f" (>= {RATIO_TARGET:g}: {'PASS' if ratio >= RATIO_TARGET else 'BELOW'})"
                f"  p99 < {P99_TARGET_MS:g} ms: {'PASS' if p99 < P99_TARGET_MS else 'ABOVE'}"
            )
        print(line)
    for failure in failed:
        print(f"  CHECK FAILED: {failure}")
    return not failed


def serve_and_measure(database: BenchDatabase, scratch: Path, args: argparse.Namespace, now: datetime) -> bool:
    username, token = asyncio.run(ranked_user_token(database, now))
    with running_server(database, scratch, args) as (process, base_url):
        print()
        print(
            f"server: codepulse serve --workers 1 (pid {process.pid}), LOG_LEVEL={args.log_level}, scheduler and "
            f"rate limits off; bearer token of {username} (a session row, as a sign-in stores it)"
        )
        check_board(base_url, username, token)
        viewers = asyncio.run(viewer_tokens(database, now, args.viewers))
        tokens_file = scratch / "viewer_tokens.txt"
        tokens_file.write_text("\n".join(viewers) + "\n")
        script = scratch / "rotating_tokens.lua"
        script.write_text(ROTATING_TOKENS_LUA)
        targets = [
            Target("liveness", LIVENESS_PATH),
            Target("board anonymous", BOARD_PATH),
            Target("board with token (me)", BOARD_PATH, (f"Authorization: Bearer {token}",)),
            Target(f"board, {len(viewers):,} viewers", BOARD_PATH, script=(str(script), str(tokens_file))),
        ]
        print(
            f"'board, {len(viewers):,} viewers': each request with the next of {len(viewers):,} public users' "
            "tokens (as many sessions), so `me` and the authentication are read from the database, not "
            "from this process's caches, as for a crowd of distinct readers (no target: for comparison)"
        )
        print(
            f"== wrk -t{args.threads} -c{args.connections} -d{args.duration:g}s --latency, {args.rounds} rounds, "
            f"order rotating, after {args.warmup:g} s of untimed warm-up per path; board = GET {BOARD_PATH}"
        )
        before = asyncio.run(database_activity(database))
        runs = run_targets(base_url, targets, args)
        after = asyncio.run(database_activity(database))
        exit_code, _ = stop_server(process)
    ok = report(runs, args)
    requests = sum(result.requests for results in runs.values() for result in results)
    opened, commits = after[0] - before[0] - 1, after[1] - before[1]  # - 1: the probe's own
    print(
        f"  PostgreSQL during the measured runs ({requests:,} requests of all paths, warm-ups not counted): "
        f"{opened:,} connections opened (a new backend each), {commits:,} commits"
    )
    log = summarise_log(scratch / "server.log")
    clean = clean_exit(exit_code)
    print(f"server stop: {describe_exit(exit_code)}; log: {log.lines:,} lines {dict(log.levels)}")
    for line in log.notable:
        print(f"    {line[:200]}")
    return ok and clean and not (log.levels["error"] or log.levels["critical"])


# --- main ------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=100_000, help="users (default 100,000)")
    parser.add_argument("--rows", type=int, default=10_000_000, help="usage_daily rows (default 10,000,000)")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--duration", "-d", type=float, default=10.0, help="seconds per wrk run (default 10)")
    parser.add_argument("--connections", "-c", type=int, default=32, help="wrk connections (default 32)")
    parser.add_argument("--threads", "-t", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--viewers", type=int, default=20_000, help="tokens of the many-viewers run (default 20,000)")
    parser.add_argument("--rounds", type=int, default=3, help="wrk runs per path, order rotating (default 3)")
    parser.add_argument("--warmup", type=float, default=2.0, help="untimed wrk seconds per path first")
    parser.add_argument("--log-level", default="WARNING", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    parser.add_argument("--database-url", default=DEFAULT_SERVER_URL, help="a PostgreSQL server (maintenance db)")
    parser.add_argument("--keep", action="store_true", help="keep the loaded database (for --reuse)")
    parser.add_argument("--reuse", metavar="NAME", help="a database kept by --keep: no load, recompute and serve")
    parser.add_argument("--skip-recompute", action="store_true", help="with --reuse: serve its snapshot as is")
    parser.add_argument("--skip-http", action="store_true", help="load and recompute only, no server and no wrk")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for readiness")
    args = parser.parse_args(argv)
    if args.skip_recompute and not args.reuse:
        parser.error("--skip-recompute needs --reuse (a fresh database has no snapshot to serve)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.skip_http and shutil.which("wrk") is None:
        print(WRK_MISSING, file=sys.stderr)
        return 2
    print("codepulse leaderboard benchmark: load, recompute, then GET /leaderboard under wrk (one worker)")
    print(machine_line())
    now = datetime.now(UTC)
    shape = Shape(users=args.users, rows=args.rows, seed=args.seed)
    if args.reuse:
        database = BenchDatabase.existing(args.database_url, args.reuse)
        fate = "loaded by an earlier --keep run, kept"
    else:
        database = BenchDatabase.create(args.database_url)
        fate = "kept (--keep)" if args.keep else "dropped at the end"
    print(f"database: {database.name} on {make_url(database.url).host} ({fate}); now = {now:%c} UTC")
    ok = True
    try:
        with tempfile.TemporaryDirectory(prefix="codepulse-leaderboard-") as raw:
            scratch = Path(raw)
            settings = bench_settings(database, scratch)
            asyncio.run(migrate_and_load(database, settings, None if args.reuse else shape, now))
            if args.skip_recompute:
                print("recompute: skipped (--skip-recompute), serving the snapshot in the database")
            else:
                asyncio.run(recompute(settings, now))
            if args.skip_http:
                print("HTTP: skipped (--skip-http)")
            else:
                ok = serve_and_measure(database, scratch, args, now)
    except BenchmarkError as error:
        print(f"FAILED: {error}")
        ok = False
    finally:
        if args.keep or args.reuse:
            print(f"database kept: {database.name} (--reuse {database.name} runs again on it without a reload)")
        else:
            database.drop()
    print(f"load average at the end: {' '.join(f'{value:.2f}' for value in os.getloadavg())}")
    print("result: all checks passed" if ok else "result: some checks FAILED (see above)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
