"""`codepulse seed`: the demo is made through the services, twice leaves the same data, its
printed users sign in, and production is refused."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from codepulse.app import create_app
from codepulse.cli import app as cli
from codepulse.config import Environment, Settings
from codepulse.db import Base, Database
from codepulse.seed import SeedError, seed
from tests.databases import TEST_SECRET_KEY, DatabaseServer
from tests.helpers import FakeClock

API = "/api/v1"
USERS = 5
DAYS = 7  # a week: every user has active days in it, whatever the date
# Each recompute keeps the boards' current and previous snapshots: a second run adds one, by design.
REWRITTEN_TABLES = frozenset(
    {
        "leaderboard_snapshots",
        "leaderboard_standings",
        "leaderboard_benchmark_snapshots",
        "leaderboard_benchmark_members",
        "leaderboard_benchmark_stats",
        "leaderboard_benchmark_shares",
    }
)


def _env(url: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "ENVIRONMENT": "test",
        "DATABASE_URL": url,
        "SECRET_KEY": TEST_SECRET_KEY,
        "VAR_DIR": str(tmp_path / "var"),
        "SCAN_WORK_DIR": str(tmp_path / "scans"),
        "SCAN_PROCESSES": "1",
        "LOG_LEVEL": "WARNING",
        # argon2 at its cheapest, as everywhere in the suite.
        "PASSWORD_HASH_TIME_COST": "1",
        "PASSWORD_HASH_MEMORY_KIB": "1024",
        "PASSWORD_HASH_PARALLELISM": "1",
        **extra,
    }


async def _invoke(*args: str, env: dict[str, str]) -> Any:
    # The command runs its own event loop: off this one, in a thread.
    return await asyncio.to_thread(CliRunner().invoke, cli, list(args), env=env)


async def _counts(database: Database) -> dict[str, int]:
    async with database.transaction(write=False) as session:
        return {
            table.name: int(await session.scalar(select(func.count()).select_from(table)) or 0)
            for table in Base.metadata.sorted_tables
            if table.name not in REWRITTEN_TABLES
        }


async def _sign_in(client: httpx.AsyncClient, login: str, password: str) -> dict[str, str]:
    response = await client.post(f"{API}/auth/login", json={"login": login, "password": password})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['token']}"}


async def _get(client: httpx.AsyncClient, path: str, headers: dict[str, str], **params: str) -> Any:
    response = await client.get(f"{API}{path}", headers=headers, params=params)
    assert response.status_code == 200, response.text
    return response.json()


async def test_seed_twice_leaves_the_same_data_and_its_users_sign_in(
    database_server: DatabaseServer, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    url = await database_server.clone("seed")
    env = _env(url, tmp_path)
    first = await _invoke("seed", "--users", str(USERS), "--days", str(DAYS), env=env)
    assert first.exit_code == 0, first.output
    settings = make_settings(DATABASE_URL=url)
    database = Database.from_settings(settings)
    try:
        counts = await _counts(database)
        again = await _invoke("seed", "--users", str(USERS), "--days", str(DAYS), env=env)
        assert again.exit_code == 0, again.output
        assert await _counts(database) == counts
        assert "(0 new, 0 updated," in again.output

        assert counts["users"] == USERS
        assert counts["organizations"] == 2
        assert counts["memberships"] == 2 * USERS  # everyone is in both
        assert counts["repositories"] == 1
        assert counts["scans"] == 2  # head and history
        assert counts["findings"] >= 4
        assert counts["usage_records"] > 0
        assert counts["mail_outbox"] == 0  # no invitation or verification mail to example.com

        app = create_app(settings, database=database, clock=FakeClock())
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as client,
        ):
            await _check_api(client, again.output)
    finally:
        await database.dispose()


async def _check_api(client: httpx.AsyncClient, output: str) -> None:
    # Every printed user signs in with the printed password.
    users = [line.split() for line in output.splitlines() if "@example.com" in line]
    assert len(users) == USERS
    headers = {username: await _sign_in(client, email, password) for username, email, password, *_ in users}
    owner = headers["demo-owner"]

    roles = {item["slug"]: item["role"] for item in (await _get(client, "/orgs", owner))["items"]}
    assert roles == {"acme-demo": "owner", "globex-demo": "member"}
    for org in ("acme-demo", "globex-demo"):
        members = (await _get(client, f"/orgs/{org}/members", owner))["items"]
        assert {member["role"] for member in members} == {"owner", "admin", "member", "viewer"}

    repositories = (await _get(client, "/orgs/acme-demo/repositories", owner))["items"]
    assert [repository["name"] for repository in repositories] == ["demo-service"]
    findings = await _get(client, f"/repositories/{repositories[0]['id']}/findings", owner, limit="100")
    by_rule = {finding["rule_id"]: finding["status"] for finding in findings["items"]}
    assert by_rule["aws-access-key-id"] == "open"
    assert by_rule["stripe-webhook-secret"] == "in_history"  # deleted in the last commit

    overview = await _get(client, "/dashboard/overview", owner)
    assert overview["periods"]["7d"]["tokens"]["total"] > 0
    board = await _get(client, "/leaderboard", owner, period="30d", metric="tokens")
    assert len(board["items"]) == USERS  # every demo profile is public
    benchmarks = await _get(client, "/benchmarks", owner, range="30d")
    assert benchmarks


async def test_seed_refuses_production(tmp_path: Path, db: Database, settings: Settings) -> None:
    database_file = tmp_path / "production.db"
    env = _env(
        f"sqlite+aiosqlite:///{database_file}",
        tmp_path,
        ENVIRONMENT="production",
        SECRET_KEY=secrets.token_urlsafe(48),
        MAIL_DISABLED="true",
    )
    refused = await _invoke("seed", env=env)
    assert refused.exit_code == 1
    assert "seed refuses to run with ENVIRONMENT=production" in refused.output
    assert not database_file.exists()  # not even migrated

    production = settings.model_copy(update={"ENVIRONMENT": Environment.PRODUCTION})
    with pytest.raises(SeedError, match="ENVIRONMENT=production"):
        await seed(db, production)
