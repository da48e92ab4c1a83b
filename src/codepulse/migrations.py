"""Alembic, driven from code: upgrade, downgrade, and "is the schema at head?"."""

from __future__ import annotations

import asyncio
import importlib
import pkgutil
from collections.abc import Callable
from functools import cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from codepulse.config import Settings
from codepulse.db import Base, create_engine


def _alembic_dir() -> Path:
    package = Path(__file__).resolve().parent
    # Source checkout (editable install): <repo>/alembic. Wheel: packaged as codepulse/_alembic.
    for candidate in (package.parent.parent / "alembic", package / "_alembic"):
        if (candidate / "env.py").exists():
            return candidate
    raise RuntimeError("alembic migrations directory not found")


def alembic_config(database_url: str | None = None) -> Config:
    directory = _alembic_dir()
    ini = directory.parent / "alembic.ini"
    config = Config(str(ini) if ini.exists() else None)
    config.set_main_option("script_location", str(directory))
    if database_url is not None:
        # ConfigParser interpolation treats % specially.
        config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def import_all_models() -> type[Base]:
    """Import every module that declares tables, so Base.metadata is complete."""
    importlib.import_module("codepulse.scheduler")
    package = importlib.import_module("codepulse")
    for module in pkgutil.iter_modules(package.__path__):
        if module.ispkg:
            try:
                importlib.import_module(f"codepulse.{module.name}.models")
            except ModuleNotFoundError as exc:
                if exc.name != f"codepulse.{module.name}.models":
                    raise
    return Base


@cache
def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def _run_with_connection(action: Callable[[Config], None]) -> Callable[[Connection], None]:
    def run(connection: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        action(config)

    return run


async def upgrade(connection: AsyncConnection, revision: str = "head") -> None:
    await connection.run_sync(_run_with_connection(lambda cfg: command.upgrade(cfg, revision)))


async def downgrade(connection: AsyncConnection, revision: str = "base") -> None:
    await connection.run_sync(_run_with_connection(lambda cfg: command.downgrade(cfg, revision)))


async def schema_version(session: AsyncSession) -> str | None:
    """The revision recorded in alembic_version, cheaply (readiness polls this); None if absent."""
    try:
        async with session.begin_nested():
            result = await session.execute(text("SELECT version_num FROM alembic_version"))
    except DBAPIError:
        return None
    return result.scalar()


async def schema_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as connection:
        return await connection.run_sync(current_revision)


async def _upgrade_database(settings: Settings) -> None:
    engine = create_engine(settings)
    try:
        async with engine.begin() as connection:
            await upgrade(connection)
    finally:
        await engine.dispose()


async def _schema_is_current(settings: Settings) -> bool:
    engine = create_engine(settings)
    try:
        return await schema_revision(engine) == head_revision()
    finally:
        await engine.dispose()


def upgrade_database(settings: Settings) -> None:
    """Upgrade the configured database to head (blocking; for the CLI)."""
    asyncio.run(_upgrade_database(settings))


def schema_is_current(settings: Settings) -> bool:
    return asyncio.run(_schema_is_current(settings))
