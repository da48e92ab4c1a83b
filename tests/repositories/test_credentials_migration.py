"""Revision 0010 keeps the credential of GitHub imports that still carry GitHub's id, and grants
none to anything else (a repository whose URL an admin changed lost that id already)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from codepulse import migrations
from codepulse.db import create_engine
from tests.databases import DatabaseServer, build_settings

NOW = datetime(2026, 12, 1, tzinfo=UTC)


def _type(value: object) -> sa.types.TypeEngine[Any] | None:
    if isinstance(value, uuid.UUID):
        return sa.Uuid()
    return sa.DateTime(timezone=True) if isinstance(value, datetime) else None


def _insert(connection: Connection, table: str, **values: Any) -> None:
    """A row as revision 0009 had it (typed columns: SQLite keeps UUIDs as hex text)."""
    values = {"id": uuid.uuid4(), "created_at": NOW, "updated_at": NOW, **values}
    target = sa.table(table, *(sa.column(name, _type(value)) for name, value in values.items()))
    connection.execute(target.insert().values(**values))


def _before(connection: Connection, user: uuid.UUID, org: uuid.UUID) -> None:
    _insert(connection, "users", id=user, email="vic@example.com", username="vic", name="Vic", is_superuser=False,
            timezone="UTC", profile_public=False)  # fmt: skip
    _insert(connection, "organizations", id=org, name="Engines", slug="engines")
    common = {"org_id": org, "private": True, "scan_schedule": "none", "archived": False, "open_critical": 0,
              "open_high": 0, "open_medium": 0, "open_low": 0, "created_by": user}  # fmt: skip
    for name, provider, external_id in [
        ("imported", "github", "42"),
        ("moved", "github", None),
        ("lab", "gitlab", "7"),
    ]:
        url = f"https://github.com/vic/{name}"
        _insert(connection, "repositories", name=name, provider=provider, clone_url=url, canonical_url=url,
                external_id=external_id, **common)  # fmt: skip


async def test_existing_imports_keep_a_bound_credential(database_server: DatabaseServer) -> None:
    engine = create_engine(build_settings(await database_server.create_empty()))
    user, org = uuid.uuid4(), uuid.uuid4()
    try:
        async with engine.begin() as connection:
            await migrations.upgrade(connection, "0009")
            await connection.run_sync(_before, user, org)
            await migrations.upgrade(connection)
        async with engine.connect() as connection:
            query = sa.text(
                "SELECT name, credential_user_id, credential_external_id, credential_canonical_url "
                "FROM repositories ORDER BY name"
            )
            rows = [tuple(row) for row in (await connection.execute(query)).all()]
    finally:
        await engine.dispose()
    assert [(name, uuid.UUID(str(holder)) if holder else None, gid, url) for name, holder, gid, url in rows] == [
        ("imported", user, "42", "https://github.com/vic/imported"),
        ("lab", None, None, None),
        ("moved", None, None, None),
    ]
