"""`GET /api/v1/admin/stats` on a year of data for 10,000 users: median and p95 of N calls per
range against the 200 ms target, on SQLite and on PostgreSQL.

    uv run python tests/benchmarks/admin_stats.py                      # both databases
    uv run python tests/benchmarks/admin_stats.py --only sqlite --calls 50
    uv run python tests/benchmarks/admin_stats.py --only postgresql --database-url postgresql+asyncpg://...

The data (deterministic from --seed): the leaderboard benchmark's users and usage_daily rows
(`_usage_data`: heavy-tailed usage over the last year, most users active lately, some churned);
one session per user, last used at a time that follows the user's activity; a sync batch per
active day (`usage_sync_batches`); an organization per five users (plans mixed, a few deleted),
2.5 repositories each (a tenth archived), ~550 scans a day for a year, findings, tasks (mostly
finished, some queued, running and dead) and 30 days of hourly job runs for 20 jobs. Written
with `db.bulk_insert` (COPY on PostgreSQL, executemany on SQLite); the platform's usage sums
(`usage_platform_daily` and `usage_platform_syncs`, which syncs keep) rebuilt from the usage_daily
and usage_sync_batches rows (`usage.service.rebuild_platform_sums`), the scans per day
(`scan_days`, which the scans' writers keep) from the scans (`scans.service.rebuild_scan_days`);
then ANALYZE.

Each database is migrated to head first (so the statistics' indexes and tables, migrations 0026
to 0028, are there).
The endpoint is timed in-process through httpx's ASGITransport (the app's full middleware and
request session, no socket), after untimed warm-up calls; the scheduler and task workers are off.
PostgreSQL: a new `cp_bench_<random>` database on the server named by --database-url, dropped at
the end (unless --keep).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
from sqlalchemy import Table, text

from codepulse.app import create_app
from codepulse.config import Settings, load_settings
from codepulse.db import Base, Database, bulk_insert
from codepulse.db.engine import create_engine
from codepulse.logging import configure_logging
from codepulse.migrations import upgrade
from codepulse.scans.service import rebuild_scan_days
from codepulse.security import hash_token, new_session_token
from codepulse.usage.service import rebuild_platform_sums

if TYPE_CHECKING:
    from tests.benchmarks._usage_data import USAGE_COLUMNS, USER_COLUMNS, BenchDatabase, Shape, plan_users, usage_rows
else:  # run as a script, this folder is sys.path[0]
    from _usage_data import USAGE_COLUMNS, USER_COLUMNS, BenchDatabase, Shape, plan_users, usage_rows

TARGET_MS = 200.0
DEFAULT_SERVER_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
CHUNK = 20_000
PLANS = ((None, 0.7), ("pro", 0.15), ("team", 0.1), ("enterprise", 0.05))
SEVERITIES = (("critical", 0, 0.05), ("high", 1, 0.2), ("medium", 2, 0.35), ("low", 3, 0.3), ("info", 4, 0.1))
FINDING_STATUSES = (("open", 0.55), ("in_history", 0.1), ("fixed", 0.25), ("ignored", 0.07), ("false_positive", 0.03))
TASK_KINDS = ("scans.run", "mail.deliver", "notifications.mail", "leaderboard.recompute", "usage.reprice", "repos.sync")


def _table(name: str) -> Table:
    return Base.metadata.tables[name]


def _defaults(table: Table) -> dict[str, Any]:
    """Each column's Python-side default, evaluated once (COPY applies none of them)."""
    values: dict[str, Any] = {}
    for column in table.columns:
        default = column.default
        if default is None:
            continue
        arg = getattr(default, "arg", None)
        values[column.name] = arg(None) if callable(arg) else arg
    return values


def _rows(table: Table, dicts: Iterable[dict[str, Any]]) -> tuple[list[str], list[tuple[Any, ...]]]:
    base = _defaults(table)
    materialised = [{**base, **values} for values in dicts]
    columns = list(dict.fromkeys(name for row in materialised for name in row))
    return columns, [tuple(row.get(name) for name in columns) for row in materialised]


def _pick(rng: random.Random, weighted: Sequence[tuple[Any, ...]]) -> tuple[Any, ...]:
    return rng.choices(weighted, weights=[item[-1] for item in weighted])[0]


class Generator:
    """The benchmark's rows, table by table, from one seed."""

    def __init__(self, shape: Shape, now: datetime) -> None:
        self.shape = shape
        self.now = now
        self.rng = random.Random(shape.seed + 1)
        self.users = plan_users(shape, now)

    def sessions(self) -> list[dict[str, Any]]:
        rows = []
        for plan in self.users.plans:
            if plan.rows:  # used around the last active day
                used = datetime.combine(plan.last, datetime.min.time(), UTC) + timedelta(hours=self.rng.uniform(0, 20))
            else:
                used = self.now - timedelta(days=self.rng.uniform(0, 365))
            used = min(used, self.now)
            rows.append(
                {
                    "id": uuid.uuid4(),
                    "user_id": plan.user_id,
                    "token_hash": hash_token(new_session_token()),
                    "kind": "cli",
                    "name": "bench",
                    "created_at": used - timedelta(days=10),
                    "last_used_at": used,
                    "expires_at": used + timedelta(days=365),
                    "absolute_expires_at": used + timedelta(days=365),
                    "ip": None,
                    "user_agent": None,
                    "revoked_at": None,
                }
            )
        return rows

    def sync_batches(self) -> Iterator[dict[str, Any]]:
        for plan in self.users.plans:
            for _ in range(plan.days):  # a batch per active day, spread over the user's span
                day = plan.last - timedelta(days=self.rng.randrange(max(plan.span, 1)))
                at = datetime.combine(day, datetime.min.time(), UTC) + timedelta(seconds=self.rng.randrange(86_400))
                yield {"user_id": plan.user_id, "digest": uuid.uuid4().hex * 2, "created_at": min(at, self.now)}

    def organizations(self) -> list[dict[str, Any]]:
        rows = []
        for index, plan in enumerate(self.users.plans[::5]):
            created = self.now - timedelta(days=self.rng.uniform(0, 365))
            rows.append(
                {
                    "id": uuid.uuid4(),
                    "name": f"Org {index}",
                    "slug": f"org-{index}",
                    "avatar_url": None,
                    "created_by": plan.user_id,
                    "deleted_at": self.now if self.rng.random() < 0.02 else None,
                    "plan": _pick(self.rng, PLANS)[0],
                    "created_at": created,
                    "updated_at": created,
                }
            )
        return rows

    def repositories(self, orgs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for org in orgs:
            for _ in range(self.rng.choice((1, 2, 2, 3, 4))):
                name = f"octo/repo-{len(rows)}"
                rows.append(
                    {
                        "id": uuid.uuid4(),
                        "org_id": org["id"],
                        "name": name,
                        "provider": "github",
                        "canonical_url": f"https://github.com/{name}",
                        "clone_url": f"https://github.com/{name}.git",
                        "archived": self.rng.random() < 0.1,
                        "created_at": org["created_at"],
                        "updated_at": org["created_at"],
                    }
                )
        return rows

    def scans(self, repositories: Sequence[dict[str, Any]], per_day: int) -> Iterator[dict[str, Any]]:
        total = per_day * self.shape.history_days
        statuses = (("succeeded", 0.9), ("failed", 0.07), ("canceled", 0.03))
        for index in range(total):
            repository = repositories[self.rng.randrange(len(repositories))]
            queued = self.now - timedelta(seconds=self.rng.uniform(600, self.shape.history_days * 86_400))
            duration = int(self.rng.lognormvariate(9.5, 1.0))  # median ~13 s
            calls = self.rng.randrange(0, 400)
            yield {
                "id": uuid.uuid4(),
                "org_id": repository["org_id"],
                "repository_id": repository["id"],
                "trigger": "schedule",
                "commit_sha": f"{index:040x}",
                "status": _pick(self.rng, statuses)[0],
                "phase": "done",
                "queued_at": queued,
                "started_at": queued,
                "finished_at": queued + timedelta(milliseconds=duration),
                "duration_ms": duration,
                "engine_calls": calls,
                "cache_hits": self.rng.randrange(0, 4 * calls + 1),
                "created_at": queued,
                "updated_at": queued,
            }
        for repository in repositories[:30]:  # active ones: one per repository at most
            yield {
                "id": uuid.uuid4(),
                "org_id": repository["org_id"],
                "repository_id": repository["id"],
                "trigger": "manual",
                "status": "queued",
                "phase": "queued",
                "queued_at": self.now - timedelta(seconds=30),
                "created_at": self.now,
                "updated_at": self.now,
            }

    def findings(self, repositories: Sequence[dict[str, Any]], count: int) -> Iterator[dict[str, Any]]:
        for index in range(count):
            repository = repositories[self.rng.randrange(len(repositories))]
            severity, rank, _ = _pick(self.rng, SEVERITIES)
            seen = self.now - timedelta(days=self.rng.uniform(0, 365))
            yield {
                "id": uuid.uuid4(),
                "org_id": repository["org_id"],
                "repository_id": repository["id"],
                "fingerprint": f"{index:064x}",
                "rule_id": "aws-access-key-id",
                "engine": "secrets",
                "severity": severity,
                "severity_rank": rank,
                "title": "AWS access key ID",
                "message": "An AWS access key ID.",
                "path": "app/settings.py",
                "start_line": 3,
                "end_line": 3,
                "start_column": 1,
                "end_column": 20,
                "snippet": "AKIA************",
                "status": _pick(self.rng, FINDING_STATUSES)[0],
                "first_seen_at": seen,
                "last_seen_at": seen,
                "created_at": seen,
                "updated_at": seen,
            }

    def tasks(self, count: int) -> Iterator[dict[str, Any]]:
        statuses = (("succeeded", 0.95), ("queued", 0.02), ("dead", 0.01), ("failed", 0.015), ("running", 0.005))
        for _ in range(count):
            status = _pick(self.rng, statuses)[0]
            at = self.now - timedelta(days=self.rng.uniform(0, 14))
            if status == "queued":
                at = self.now + timedelta(seconds=self.rng.uniform(-600, 3600))
            yield {
                "id": uuid.uuid4(),
                "kind": self.rng.choice(TASK_KINDS),
                "payload": {},
                "status": status,
                "run_at": at,
                "attempts": 1,
                "finished_at": at if status in ("succeeded", "dead", "failed") else None,
                "created_at": at,
                "updated_at": at,
            }

    def job_runs(self, jobs: int, days: int) -> Iterator[dict[str, Any]]:
        first = self.now.replace(minute=0, second=0, microsecond=0)
        for job in range(jobs):
            for hour in range(days * 24):
                at = first - timedelta(hours=hour)
                failed = self.rng.random() < 0.02
                yield {
                    "id": uuid.uuid4(),
                    "job_id": f"bench.job_{job:02d}",
                    "scheduled_for": at,
                    "started_at": at,
                    "finished_at": at + timedelta(seconds=2),
                    "status": "failed" if failed else "succeeded",
                    "runner": "bench",
                    "error": "RuntimeError: upstream down" if failed else None,
                }


async def _insert(database: Database, name: str, rows: Iterable[dict[str, Any]]) -> int:
    table = _table(name)
    iterator = iter(rows)
    written = 0
    while chunk := list(islice(iterator, CHUNK)):
        columns, values = _rows(table, chunk)
        async with database.transaction() as session:
            written += await bulk_insert(session, table, columns, values)
    return written


async def _insert_tuples(database: Database, name: str, columns: Sequence[str], rows: Iterable[Any]) -> int:
    table = _table(name)
    iterator = iter(rows)
    written = 0
    while chunk := list(islice(iterator, CHUNK)):
        async with database.transaction() as session:
            written += await bulk_insert(session, table, columns, [tuple(row) for row in chunk])
    return written


async def load(database: Database, shape: Shape, now: datetime, scans_per_day: int) -> str:
    """Every table's rows; the superuser's token."""
    generator = Generator(shape, now)
    counts: dict[str, int] = {}
    started = time.perf_counter()
    counts["users"] = await _insert_tuples(database, "users", USER_COLUMNS, generator.users.rows)
    counts["usage_daily"] = await _insert_tuples(
        database, "usage_daily", USAGE_COLUMNS, usage_rows(generator.users, shape.seed)
    )
    counts["auth_sessions"] = await _insert(database, "auth_sessions", generator.sessions())
    counts["usage_sync_batches"] = await _insert(database, "usage_sync_batches", generator.sync_batches())
    async with database.transaction() as session:  # what the syncs would have kept, from their rows
        await rebuild_platform_sums(session)
    orgs = generator.organizations()
    counts["organizations"] = await _insert(database, "organizations", orgs)
    repositories = generator.repositories(orgs)
    counts["repositories"] = await _insert(database, "repositories", repositories)
    counts["scans"] = await _insert(database, "scans", generator.scans(repositories, scans_per_day))
    async with database.transaction() as session:  # what the scans' writers would have kept
        await rebuild_scan_days(session)
    counts["findings"] = await _insert(database, "findings", generator.findings(repositories, 20 * len(repositories)))
    counts["tasks"] = await _insert(database, "tasks", generator.tasks(100_000))
    counts["job_runs"] = await _insert(database, "job_runs", generator.job_runs(20, 30))
    admin_id, token = uuid.uuid4(), new_session_token()
    async with database.transaction() as session:
        await session.execute(
            _table("users").insert(),
            {
                "id": admin_id, "email": "root@example.com", "username": "root", "name": "Root", "is_superuser": True,
                "timezone": "UTC", "profile_public": False, "created_at": now, "updated_at": now,
            },
        )  # fmt: skip
        await session.execute(
            _table("auth_sessions").insert(),
            {
                "id": uuid.uuid4(), "user_id": admin_id, "token_hash": hash_token(token), "kind": "web",
                "name": "bench", "created_at": now, "last_used_at": now, "expires_at": now + timedelta(days=1),
                "absolute_expires_at": now + timedelta(days=1),
            },
        )  # fmt: skip
    loaded = time.perf_counter() - started
    started = time.perf_counter()
    async with database.transaction() as session:
        if session.get_bind().dialect.name == "sqlite":
            await session.execute(text("ANALYZE"))
    if database.engine.dialect.name == "postgresql":
        async with database.engine.connect() as connection:
            await connection.execution_options(isolation_level="AUTOCOMMIT")
            await connection.execute(text("VACUUM ANALYZE"))
    print(f"  loaded in {loaded:.1f} s, analyzed in {time.perf_counter() - started:.1f} s:")
    print("  " + ", ".join(f"{name} {count:,}" for name, count in counts.items()))
    return token


def _settings(url: str, scratch: Path) -> Settings:
    settings = load_settings(
        _env_file=None,
        DATABASE_URL=url,
        VAR_DIR=scratch / "var",
        SCHEDULER_ENABLED=False,
        WORKER_CONCURRENCY=0,
        LOG_LEVEL="WARNING",
    )
    configure_logging(settings)
    return settings


async def measure(settings: Settings, token: str, ranges: Sequence[str], calls: int, warmup: int) -> bool:
    app = create_app(settings)
    passed = True
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench") as client,
    ):
        headers = {"Authorization": f"Bearer {token}"}
        for range_ in ranges:
            for _ in range(warmup):
                response = await client.get("/api/v1/admin/stats", params={"range": range_}, headers=headers)
                response.raise_for_status()
            timings = []
            for _ in range(calls):
                started = time.perf_counter()
                response = await client.get("/api/v1/admin/stats", params={"range": range_}, headers=headers)
                timings.append((time.perf_counter() - started) * 1000)
                response.raise_for_status()
            timings.sort()
            median = statistics.median(timings)
            p95 = timings[min(len(timings) - 1, round(0.95 * (len(timings) - 1)))]
            verdict = "PASS" if p95 < TARGET_MS else "ABOVE TARGET"
            body = response.json()
            print(
                f"  range={range_}: {calls} calls, median {median:.1f} ms, p95 {p95:.1f} ms, max {timings[-1]:.1f} ms "
                f"= p95 {p95 / TARGET_MS:.2f}x the {TARGET_MS:g} ms target -> {verdict}"
            )
            print(
                f"    (users {body['users']['total']:,}, active 30d {body['users']['active_30d']:,}; "
                f"scans {body['scans']['total']:,}, median {body['scans']['median_duration_ms']} ms; "
                f"usage records {body['usage']['records']:,}, syncs {body['usage']['syncs']:,}; "
                f"tasks queued {body['tasks']['queued']:,})"
            )
            passed = passed and p95 < TARGET_MS
    return passed


async def run(url: str, scratch: Path, args: argparse.Namespace, now: datetime) -> bool:
    settings = _settings(url, scratch)
    engine = create_engine(settings)
    try:
        async with engine.begin() as connection:
            await upgrade(connection)
    finally:
        await engine.dispose()
    database = Database.from_settings(settings)
    try:
        token = await load(database, Shape(users=args.users, rows=args.rows, seed=args.seed), now, args.scans_per_day)
    finally:
        await database.dispose()
    return await measure(settings, token, args.ranges.split(","), args.calls, args.warmup)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=("sqlite", "postgresql"), help="one database only (default both)")
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--rows", type=int, default=1_000_000, help="usage_daily rows (default 1,000,000)")
    parser.add_argument("--scans-per-day", type=int, default=550, help="scans a day over the year (default 550)")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--calls", type=int, default=30, help="timed calls per range (default 30)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls per range first (default 3)")
    parser.add_argument("--ranges", default="30d,365d", help="comma-separated (default 30d,365d)")
    parser.add_argument("--database-url", default=DEFAULT_SERVER_URL, help="a PostgreSQL server (maintenance db)")
    parser.add_argument("--keep", action="store_true", help="keep the PostgreSQL database")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    now = datetime.now(UTC).replace(microsecond=0)
    load = os.getloadavg()[0]
    print(f"CPUs {os.cpu_count()}, load average {load:.2f}; {args.users:,} users, {args.rows:,} usage_daily rows")
    passed = True
    with tempfile.TemporaryDirectory(prefix="cp-bench-stats-") as directory:
        scratch = Path(directory)
        if args.only in (None, "sqlite"):
            print("SQLite:")
            url = f"sqlite+aiosqlite:///{scratch / 'bench.db'}"
            passed = asyncio.run(run(url, scratch, args, now)) and passed
        if args.only in (None, "postgresql"):
            print("PostgreSQL:")
            database = BenchDatabase.create(args.database_url)
            try:
                passed = asyncio.run(run(database.url, scratch, args, now)) and passed
            finally:
                if args.keep:
                    print(f"  kept database {database.name}")
                else:
                    database.drop()
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
