"""Alembic environment: async engines, both dialects, batch mode on SQLite.

Called two ways: from the command line / `codepulse migrate` (opens its own engine from
DATABASE_URL), or from code with an open connection in `config.attributes["connection"]`.
"""

import asyncio
from typing import Any, Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy import Connection

from codepulse.config import load_settings
from codepulse.db import UTCDateTime, create_engine
from codepulse.migrations import import_all_models

target_metadata = import_all_models().metadata


def _render_item(type_: str, obj: Any, _autogen_context: AutogenContext) -> str | Literal[False]:
    # Migrations stay free of codepulse imports: UTCDateTime is a timestamptz to the database.
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def _configure_and_run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        compare_server_default=True,
        render_item=_render_item,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_online() -> None:
    url = context.config.get_main_option("sqlalchemy.url")
    settings = load_settings(DATABASE_URL=url) if url else load_settings()
    engine = create_engine(settings)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_configure_and_run)
    finally:
        await engine.dispose()


def _run_offline() -> None:
    url = context.config.get_main_option("sqlalchemy.url") or load_settings().DATABASE_URL
    context.configure(url=url, target_metadata=target_metadata, literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    _run_offline()
elif (connection := context.config.attributes.get("connection")) is not None:
    _configure_and_run(connection)
else:
    asyncio.run(_run_online())
