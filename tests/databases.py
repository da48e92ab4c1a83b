"""Test databases: a migrated template per run, cloned for each place that needs one.

SQLite by default (files under a temporary directory); PostgreSQL when TEST_DATABASE_URL is set.
On PostgreSQL every database this module creates is new and named `cp_test_<run>_...`; the
server named by TEST_DATABASE_URL is only used to CREATE and DROP those, never to hold data.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import create_async_engine

from codepulse import migrations
from codepulse.config import Settings, load_settings
from codepulse.db import create_engine

DROPPERS = 4  # connections dropping the run's databases at the end
TEST_SECRET_KEY = "test-secret-key-" + "k3y" * 16


def build_settings(database_url: str, **overrides: object) -> Settings:
    """Settings for tests: never read the developer's .env, no scheduler unless asked."""
    values: dict[str, object] = {
        "_env_file": None,
        "ENVIRONMENT": "test",
        "DATABASE_URL": database_url,
        "SECRET_KEY": TEST_SECRET_KEY,
        "SCHEDULER_ENABLED": False,
        # Workers only where a test starts them.
        "WORKER_CONCURRENCY": 0,
        "LOG_LEVEL": "DEBUG",
        # argon2 at its cheapest: tests hash many passwords; production cost is a setting.
        "PASSWORD_HASH_TIME_COST": 1,
        "PASSWORD_HASH_MEMORY_KIB": 1024,
        "PASSWORD_HASH_PARALLELISM": 1,
        # Tests change users behind the API's back; the cache has tests of its own.
        "AUTH_CACHE_SECONDS": 0,
        # Most tests connect made-up remotes: asking them would reach out. The probe's own tests
        # (tests/repositories/test_first_hour.py) turn it on for repositories they create.
        "REPOSITORY_PROBE_SECONDS": 0,
    }
    values.update(overrides)
    return load_settings(**values)


@dataclass
class DatabaseServer:
    """Creates, migrates, clones and finally drops the run's test databases."""

    base_url: str | None
    workdir: Path
    run_id: str = field(default_factory=lambda: f"{os.getpid()}_{secrets.token_hex(3)}")
    created: list[str] = field(default_factory=list)
    _counter: int = 0

    @property
    def dialect(self) -> str:
        return "postgresql" if self.base_url else "sqlite"

    def _url(self, name: str) -> str:
        if self.base_url is None:
            return f"sqlite+aiosqlite:///{self.workdir / (name + '.db')}"
        return make_url(self.base_url).set(database=name).render_as_string(hide_password=False)

    def _next_name(self, label: str) -> str:
        self._counter += 1
        return f"cp_test_{self.run_id}_{label}{self._counter}"

    async def _admin_execute(self, sql: str) -> None:
        assert self.base_url is not None
        admin: URL = make_url(self.base_url)
        engine = create_async_engine(admin, isolation_level="AUTOCOMMIT")
        try:
            async with engine.connect() as connection:
                await connection.execute(text(sql))
        finally:
            await engine.dispose()

    @property
    def template_name(self) -> str:
        return f"cp_test_{self.run_id}_template"

    async def create_template(self) -> None:
        """An empty database upgraded to head, which `clone` copies."""
        url = await self.create_empty(name=self.template_name)
        engine = create_engine(build_settings(url))
        try:
            async with engine.begin() as connection:
                await migrations.upgrade(connection)
        finally:
            await engine.dispose()

    async def create_empty(self, name: str | None = None) -> str:
        name = name or self._next_name("empty")
        if self.base_url is not None:
            await self._admin_execute(f'CREATE DATABASE "{name}"')
        self.created.append(name)
        return self._url(name)

    async def clone(self, label: str = "db") -> str:
        """A new database at head, with real commits of its own."""
        name = self._next_name(label)
        if self.base_url is None:
            shutil.copyfile(self.workdir / f"{self.template_name}.db", self.workdir / f"{name}.db")
        else:
            await self._admin_execute(f'CREATE DATABASE "{name}" TEMPLATE "{self.template_name}"')
        self.created.append(name)
        return self._url(name)

    async def drop_all(self) -> None:
        if self.base_url is None:
            return  # the temporary directory goes with pytest's tmp_path_factory
        # A few connections dropping at once: each DROP waits for a checkpoint, and concurrent
        # drops share theirs (about five times faster than one after another).
        engine = create_async_engine(make_url(self.base_url), isolation_level="AUTOCOMMIT")
        clones = [name for name in reversed(self.created) if name != self.template_name]

        async def drop(names: list[str]) -> None:
            async with engine.connect() as connection:
                for name in names:
                    await connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

        try:
            await asyncio.gather(*(drop(clones[start::DROPPERS]) for start in range(DROPPERS)))
            await drop([name for name in self.created if name == self.template_name])
        finally:
            await engine.dispose()
