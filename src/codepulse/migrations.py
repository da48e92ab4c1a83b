"""Alembic, driven from code: upgrade, downgrade, and "is the schema at head?".

Alembic is imported only to migrate. Importing it costs a third of a second or more (through
Mako it loads dozens of Pygments lexers), so the questions asked on every start — what is head,
what is the database at — are answered from the migration files and one SELECT.
"""

from __future__ import annotations

import asyncio
import importlib
import pkgutil
import re
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from codepulse.config import Settings
from codepulse.db import Base, create_engine

if TYPE_CHECKING:
    from alembic.config import Config

_REVISION_LINE = re.compile(r'^(revision|down_revision)\b[^=]*=\s*(None|"([^"]+)")\s*$', re.MULTILINE)


def _alembic_dir() -> Path:
    package = Path(__file__).resolve().parent
    # Source checkout (editable install): <repo>/alembic. Wheel: packaged as codepulse/_alembic.
    for candidate in (package.parent.parent / "alembic", package / "_alembic"):
        if (candidate / "env.py").exists():
            return candidate
    raise RuntimeError("alembic migrations directory not found")


def alembic_config(database_url: str | None = None) -> Config:
    from alembic.config import Config

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
    importlib.import_module("codepulse.tasks")
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
    """The newest revision, read from the migration files' `revision`/`down_revision` lines (one
    linear history, as our template writes them); Alembic itself when they say anything else."""
    return _head_from_files(_alembic_dir() / "versions") or alembic_head_revision()


def alembic_head_revision() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def _head_from_files(versions: Path) -> str | None:
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in versions.glob("*.py"):
        found = {name: value for name, _, value in _REVISION_LINE.findall(path.read_text("utf-8"))}
        if "revision" not in found or "down_revision" not in found or not found["revision"]:
            return None  # not our template's shape: let Alembic decide
        revisions.add(found["revision"])
        if found["down_revision"]:
            parents.add(found["down_revision"])
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 and parents <= revisions else None


def current_revision(connection: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()


def _run_with_connection(action: Callable[[Config], None]) -> Callable[[Connection], None]:
    def run(connection: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        action(config)

    return run


async def upgrade(connection: AsyncConnection, revision: str = "head") -> None:
    from alembic import command

    await connection.run_sync(_run_with_connection(lambda cfg: command.upgrade(cfg, revision)))


async def downgrade(connection: AsyncConnection, revision: str = "base") -> None:
    from alembic import command

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
    """The revision in alembic_version, or None (no such table or no row)."""
    async with engine.connect() as connection:
        try:
            result = await connection.execute(text("SELECT version_num FROM alembic_version"))
        except DBAPIError:
            return None
        return result.scalar()


async def _upgrade_database(settings: Settings) -> None:
    engine = create_engine(settings)
    try:
        if await schema_revision(engine) == head_revision():
            return  # already at head: no need to load Alembic at all
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
