"""One linear Alembic history that upgrades, downgrades and upgrades again, and matches the models."""

from __future__ import annotations

import subprocess
import sys
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from codepulse import migrations
from codepulse.db import UTCDateTime, create_engine
from codepulse.migrations import alembic_config, head_revision, import_all_models
from tests.databases import DatabaseServer, build_settings


async def _tables(connection: AsyncConnection) -> set[str]:
    return set(await connection.run_sync(lambda sync: inspect(sync).get_table_names()))


async def test_upgrade_downgrade_upgrade(database_server: DatabaseServer) -> None:
    engine: AsyncEngine = create_engine(build_settings(await database_server.create_empty()))
    try:
        async with engine.begin() as connection:
            await migrations.upgrade(connection)
        async with engine.connect() as connection:
            assert "job_runs" in await _tables(connection)
            assert await connection.run_sync(migrations.current_revision) == head_revision()
        async with engine.begin() as connection:
            await migrations.downgrade(connection, "base")
        async with engine.connect() as connection:
            assert await _tables(connection) <= {"alembic_version"}
            assert await connection.run_sync(migrations.current_revision) is None
        async with engine.begin() as connection:
            await migrations.upgrade(connection)
        async with engine.connect() as connection:
            assert await connection.run_sync(migrations.current_revision) == head_revision()
    finally:
        await engine.dispose()


async def test_models_and_migrations_agree(engine: AsyncEngine) -> None:
    """Autogenerate against the migrated database finds nothing to do."""
    metadata = import_all_models().metadata

    def diff(sync_connection: object) -> list[object]:
        context = MigrationContext.configure(
            sync_connection,  # type: ignore[arg-type]
            opts={"compare_type": True, "compare_server_default": True},
        )
        return list(compare_metadata(context, metadata))

    async with engine.connect() as connection:
        assert await connection.run_sync(diff) == []


def test_history_is_linear() -> None:
    script = ScriptDirectory.from_config(alembic_config())
    assert len(script.get_heads()) == 1
    for revision in script.walk_revisions():
        assert not revision.is_merge_point


def test_head_read_from_the_files_is_alembics_head() -> None:
    """Start-up answers "what is head" without loading Alembic; it must agree with Alembic."""
    head_revision.cache_clear()
    assert head_revision() == migrations.alembic_head_revision()
    assert head_revision() is not None


def test_start_at_head_does_not_load_alembic(tmp_path: Path) -> None:
    """`codepulse serve` on SQLite migrates first; at head that must not import Alembic (slow)."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'at-head.db'}"
    probe = (
        "import sys\n"
        "from codepulse import migrations\n"
        "from codepulse.config import load_settings\n"
        f"settings = load_settings(_env_file=None, DATABASE_URL={url!r}, VAR_DIR={str(tmp_path)!r})\n"
        "migrations.upgrade_database(settings)\n"
        "print('alembic' in sys.modules)\n"
    )

    def run() -> str:
        command = [sys.executable, "-c", probe]
        return subprocess.run(command, capture_output=True, text=True, timeout=60, check=True).stdout.strip()

    assert run() == "True"  # a new database: migrated with Alembic
    assert run() == "False"  # at head: one SELECT


async def test_0012_keeps_the_newest_open_invitation_per_email(database_server: DatabaseServer) -> None:
    """Duplicate open invitations left by the old race are revoked, all but the newest, before
    the unique index is built."""
    engine: AsyncEngine = create_engine(build_settings(await database_server.create_empty()))
    at = datetime(2026, 11, 1, tzinfo=UTC)
    org_id = uuid.uuid4()
    organizations = sa.table(
        "organizations",
        sa.column("id", sa.Uuid()),
        sa.column("name", sa.String()),
        sa.column("slug", sa.String()),
        sa.column("created_at", UTCDateTime()),
        sa.column("updated_at", UTCDateTime()),
    )
    invitations = sa.table(
        "invitations",
        *(sa.column(name, sa.Uuid()) for name in ("id", "org_id")),
        *(sa.column(name, sa.String()) for name in ("email", "role", "token_hash")),
        *(sa.column(name, UTCDateTime()) for name in ("created_at", "expires_at", "accepted_at", "revoked_at")),
    )
    rows = {  # name: (email, created, accepted)
        "old": ("grace@example.com", at, None),
        "newest": ("grace@example.com", at + timedelta(hours=1), None),
        "used": ("grace@example.com", at - timedelta(days=1), at),
        "alone": ("ada@example.com", at, None),
    }
    ids = {name: uuid.uuid4() for name in rows}
    try:
        async with engine.begin() as connection:
            await migrations.upgrade(connection, "0009")
            await connection.execute(
                organizations.insert().values(id=org_id, name="E", slug="e", created_at=at, updated_at=at)
            )
            for name, (email, created, accepted) in rows.items():
                await connection.execute(
                    invitations.insert().values(
                        id=ids[name],
                        org_id=org_id,
                        email=email,
                        role="member",
                        token_hash=name,
                        created_at=created,
                        expires_at=created + timedelta(days=7),
                        accepted_at=accepted,
                    )
                )
            await migrations.upgrade(connection, "0012")
            revoked = await connection.execute(sa.select(invitations.c.id, invitations.c.revoked_at))
            closed = {row.id for row in revoked if row.revoked_at is not None}
        assert closed == {ids["old"]}
    finally:
        await engine.dispose()


async def test_0015_allows_platform_audit_events_and_its_downgrade_drops_only_them(
    database_server: DatabaseServer,
) -> None:
    """Organizations' events survive the change of `audit_events.org_id` to nullable (a table
    rebuild on SQLite) both ways; a downgrade drops the platform events (org_id null), which the
    NOT NULL column cannot hold."""
    engine: AsyncEngine = create_engine(build_settings(await database_server.create_empty()))
    at = datetime(2026, 12, 1, tzinfo=UTC)
    org_id, org_event, platform_event = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    organizations = sa.table(
        "organizations",
        sa.column("id", sa.Uuid()),
        sa.column("name", sa.String()),
        sa.column("slug", sa.String()),
        sa.column("created_at", UTCDateTime()),
        sa.column("updated_at", UTCDateTime()),
    )
    events = sa.table(
        "audit_events",
        *(sa.column(name, sa.Uuid()) for name in ("id", "org_id")),
        sa.column("action", sa.String()),
        sa.column("metadata", sa.JSON()),
        sa.column("created_at", UTCDateTime()),
    )
    try:
        async with engine.begin() as connection:
            await migrations.upgrade(connection, "0013")
            await connection.execute(
                organizations.insert().values(id=org_id, name="E", slug="e", created_at=at, updated_at=at)
            )
            await connection.execute(
                events.insert().values(id=org_event, org_id=org_id, action="org.created", metadata={}, created_at=at)
            )
            await migrations.upgrade(connection, "0015")
            await connection.execute(
                events.insert().values(
                    id=platform_event, org_id=None, action="leaderboard.user_excluded", metadata={}, created_at=at
                )
            )
            stored = await connection.execute(sa.select(events.c.id, events.c.org_id))
            assert {row.id: row.org_id for row in stored} == {org_event: org_id, platform_event: None}
            await migrations.downgrade(connection, "0013")
            kept = await connection.execute(sa.select(events.c.id, events.c.org_id, events.c.action))
            assert [tuple(row) for row in kept] == [(org_event, org_id, "org.created")]
    finally:
        await engine.dispose()


async def test_0023_existing_findings_are_medium_confidence(database_server: DatabaseServer) -> None:
    """Findings recorded before confidence existed read as `medium`; new rows must say theirs
    (the server default is gone after the upgrade); a downgrade keeps the findings."""
    engine: AsyncEngine = create_engine(build_settings(await database_server.create_empty()))
    at = datetime(2026, 12, 4, tzinfo=UTC)
    org_id, repository_id, finding_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    stamps = {"created_at": at, "updated_at": at}

    def kind(key: str) -> sa.types.TypeEngine[Any] | None:
        if key.endswith("_at"):
            return UTCDateTime()
        return sa.Uuid() if key in ("id", "org_id", "repository_id") else None

    def table(name: str, values: dict[str, object]) -> sa.TableClause:
        return sa.table(name, *(sa.column(key, kind(key)) for key in values))

    organization = {"id": org_id, "name": "E", "slug": "e", **stamps}
    repository = {"id": repository_id, "org_id": org_id, "name": "app", "provider": "github",
                  "clone_url": "https://github.com/e/app", "canonical_url": "https://github.com/e/app",
                  "private": False, "scan_schedule": "none", "archived": False, "open_critical": 0, "open_high": 0,
                  "open_medium": 0, "open_low": 0, **stamps}  # fmt: skip
    finding = {"id": finding_id, "org_id": org_id, "repository_id": repository_id, "status": "open",
               "first_seen_at": at, "last_seen_at": at, "reopened_count": 0, "fingerprint": "f" * 64,
               "rule_id": "aws-access-key-id", "engine": "secrets", "severity": "high", "severity_rank": 1,
               "title": "t", "message": "m", "path": "a.py", "start_line": 1, "end_line": 1, "start_column": 1,
               "end_column": 2, "snippet": "s", **stamps}  # fmt: skip
    findings = sa.table("findings", sa.column("id", sa.Uuid()), sa.column("confidence", sa.String()))
    try:
        async with engine.begin() as connection:
            await migrations.upgrade(connection, "0022")
            for name, values in (("organizations", organization), ("repositories", repository), ("findings", finding)):
                await connection.execute(table(name, values).insert().values(**values))
            await migrations.upgrade(connection, "0023")
            stored = await connection.execute(sa.select(findings.c.id, findings.c.confidence))
            assert [tuple(row) for row in stored] == [(finding_id, "medium")]
            await migrations.downgrade(connection, "0022")
            kept = await connection.execute(sa.select(sa.table("findings", sa.column("id", sa.Uuid())).c.id))
            assert [row.id for row in kept] == [finding_id]
    finally:
        await engine.dispose()


async def test_0027_backfills_the_platform_sums_from_usage_daily_and_sync_batches(
    database_server: DatabaseServer,
) -> None:
    """The platform's daily usage is the sum of every user's rows per (day, source, model); its
    syncs the batches per UTC day of their creation (either side of a UTC midnight)."""
    engine: AsyncEngine = create_engine(build_settings(await database_server.create_empty()))
    at = datetime(2026, 11, 30, 23, 30, tzinfo=UTC)
    users = sa.table(
        "users",
        sa.column("id", sa.Uuid()),
        *(sa.column(name, sa.String()) for name in ("email", "username", "name", "timezone")),
        *(sa.column(name, sa.Boolean()) for name in ("is_superuser", "profile_public")),
        *(sa.column(name, UTCDateTime()) for name in ("created_at", "updated_at")),
    )
    sums: tuple[str, ...] = ("input_tokens", "output_tokens", "cache_creation_5m_tokens", "cache_creation_1h_tokens")
    sums += ("cache_read_tokens", "reasoning_tokens", "cost_nanousd", "records", "unpriced_records")
    daily = sa.table(
        "usage_daily",
        sa.column("user_id", sa.Uuid()),
        sa.column("day", sa.Date()),
        *(sa.column(name, sa.String()) for name in ("source", "model")),
        *(sa.column(name, sa.BigInteger()) for name in sums),
    )
    batches = sa.table(
        "usage_sync_batches", sa.column("user_id", sa.Uuid()), sa.column("digest", sa.String()),
        sa.column("created_at", UTCDateTime()),
    )  # fmt: skip
    ada, bob = uuid.uuid4(), uuid.uuid4()
    day = at.date()
    try:
        async with engine.begin() as connection:
            await migrations.upgrade(connection, "0026")
            for user_id, name in ((ada, "ada"), (bob, "bob")):
                await connection.execute(
                    users.insert().values(
                        id=user_id, email=f"{name}@example.com", username=name, name=name, timezone="UTC",
                        is_superuser=False, profile_public=False, created_at=at, updated_at=at,
                    )
                )  # fmt: skip
            for user_id, model, value in ((ada, "m1", 1), (bob, "m1", 10), (ada, "m2", 100)):
                await connection.execute(
                    daily.insert().values(
                        user_id=user_id, day=day, source="codex", model=model, **dict.fromkeys(sums, value)
                    )
                )
            for user_id, digest, created in ((ada, "a", at), (bob, "b", at), (ada, "c", at + timedelta(hours=1))):
                await connection.execute(batches.insert().values(user_id=user_id, digest=digest, created_at=created))
            await migrations.upgrade(connection, "0027")
            platform = await connection.execute(
                sa.text("SELECT day, source, model, records, cost_nanousd FROM usage_platform_daily ORDER BY model")
            )
            syncs = await connection.execute(sa.text("SELECT day, syncs FROM usage_platform_syncs ORDER BY day"))
            found = [tuple(row) for row in platform], [tuple(row) for row in syncs]
        as_dates = [(date.fromisoformat(d) if isinstance(d, str) else d, int(n)) for d, n in found[1]]
        assert [(str(d), s, m, int(r), int(c)) for d, s, m, r, c in found[0]] == [
            (str(day), "codex", "m1", 11, 11),
            (str(day), "codex", "m2", 100, 100),
        ]
        assert as_dates == [(day, 2), (day + timedelta(days=1), 1)]
    finally:
        await engine.dispose()


async def test_0028_backfills_scans_per_day_from_the_scans(database_server: DatabaseServer) -> None:
    """A scan counts on the UTC day it was queued (either side of a UTC midnight), per status,
    with its engine calls, cache hits and whether it has a duration; a downgrade keeps the scans."""
    engine: AsyncEngine = create_engine(build_settings(await database_server.create_empty()))
    at = datetime(2026, 11, 30, 23, 30, tzinfo=UTC)
    org_id, repository_id = uuid.uuid4(), uuid.uuid4()
    stamps = {"created_at": at, "updated_at": at}

    def table(name: str, values: dict[str, object]) -> sa.TableClause:
        kinds: dict[type, sa.types.TypeEngine[Any]] = {datetime: UTCDateTime(), uuid.UUID: sa.Uuid(), dict: sa.JSON()}
        return sa.table(name, *(sa.column(key, kinds.get(type(value))) for key, value in values.items()))

    organization = {"id": org_id, "name": "E", "slug": "e", **stamps}
    repository = {"id": repository_id, "org_id": org_id, "name": "app", "provider": "github",
                  "clone_url": "https://github.com/e/app", "canonical_url": "https://github.com/e/app",
                  "private": False, "scan_schedule": "none", "archived": False, "open_critical": 0, "open_high": 0,
                  "open_medium": 0, "open_low": 0, **stamps}  # fmt: skip

    def scan(queued_at: datetime, status: str, calls: int, hits: int, duration: int | None) -> dict[str, object]:
        return {"id": uuid.uuid4(), "org_id": org_id, "repository_id": repository_id, "trigger": "manual",
                "ref_key": "", "mode": "head", "status": status, "phase": "done", "files_total": 0, "files_done": 0,
                "bytes_total": 0, "bytes_done": 0, "new_counts": {}, "open_counts": {}, "fixed_counts": {},
                "skipped": {}, "files_scanned": 0, "engine_calls": calls, "cache_hits": hits,
                "engine_versions": {}, "duration_ms": duration, "queued_at": queued_at, **stamps}  # fmt: skip

    scans = [
        scan(at, "succeeded", 10, 1, 1000),
        scan(at + timedelta(minutes=29), "succeeded", 20, 2, 3000),
        scan(at + timedelta(minutes=30), "succeeded", 40, 4, 5000),  # the next UTC day
        scan(at, "failed", 1, 0, 200),
        scan(at, "canceled", 0, 0, None),  # canceled while queued: no duration
    ]
    day = at.date()
    try:
        async with engine.begin() as connection:
            await migrations.upgrade(connection, "0027")
            for name, values in (("organizations", organization), ("repositories", repository)):
                await connection.execute(table(name, values).insert().values(**values))
            for values in scans:
                await connection.execute(table("scans", values).insert().values(**values))
            await migrations.upgrade(connection, "0028")
            rows = await connection.execute(
                sa.text(
                    "SELECT day, status, scans, engine_calls, cache_hits, timed FROM scan_days ORDER BY day, status"
                )
            )
            found = [(_date(row[0]), row[1], *map(int, row[2:])) for row in rows]
            assert found == [
                (day, "canceled", 1, 0, 0, 0),
                (day, "failed", 1, 1, 0, 1),
                (day, "succeeded", 2, 30, 3, 2),
                (day + timedelta(days=1), "succeeded", 1, 40, 4, 1),
            ]
            await migrations.downgrade(connection, "0027")
            assert "scan_days" not in await _tables(connection)
            kept = await connection.execute(sa.text("SELECT count(*) FROM scans"))
            assert kept.scalar_one() == len(scans)
    finally:
        await engine.dispose()


def _date(value: date | str) -> date:
    return value if isinstance(value, date) else date.fromisoformat(value)  # SQLite answers text


async def test_0029_moves_declines_out_of_revoked_at_by_the_audit_log(database_server: DatabaseServer) -> None:
    """An invitation the audit log says was declined gets its time as declined_at (and revoked_at
    back to null); a revoked one stays revoked; a declined email can be invited again; the
    downgrade folds declines back into revoked_at."""
    engine: AsyncEngine = create_engine(build_settings(await database_server.create_empty()))
    at = datetime(2026, 11, 1, tzinfo=UTC)
    org_id = uuid.uuid4()
    organizations = sa.table(
        "organizations",
        sa.column("id", sa.Uuid()),
        *(sa.column(name, sa.String()) for name in ("name", "slug")),
        *(sa.column(name, UTCDateTime()) for name in ("created_at", "updated_at")),
    )
    invitations = sa.table(
        "invitations",
        *(sa.column(name, sa.Uuid()) for name in ("id", "org_id")),
        *(sa.column(name, sa.String()) for name in ("email", "role", "token_hash")),
        *(sa.column(name, UTCDateTime()) for name in ("created_at", "expires_at", "revoked_at")),
    )
    audit = sa.table(
        "audit_events",
        *(sa.column(name, sa.Uuid()) for name in ("id", "org_id")),
        *(sa.column(name, sa.String()) for name in ("action", "target_type", "target_id")),
        sa.column("metadata", sa.JSON()),
        sa.column("created_at", UTCDateTime()),
    )
    closed = {"declined": at + timedelta(hours=1), "revoked": at + timedelta(hours=2), "open": None}
    ids = {name: uuid.uuid4() for name in closed}
    try:
        async with engine.begin() as connection:
            await migrations.upgrade(connection, "0028")
            await connection.execute(
                organizations.insert().values(id=org_id, name="E", slug="e", created_at=at, updated_at=at)
            )
            for name, revoked_at in closed.items():
                await connection.execute(
                    invitations.insert().values(
                        id=ids[name],
                        org_id=org_id,
                        email=f"{name}@example.com",
                        role="member",
                        token_hash=name,
                        created_at=at,
                        expires_at=at + timedelta(days=7),
                        revoked_at=revoked_at,
                    )
                )
                if revoked_at is not None:
                    await connection.execute(
                        audit.insert().values(
                            id=uuid.uuid4(),
                            org_id=org_id,
                            action=f"invitation.{name}",
                            target_type="invitation",
                            target_id=str(ids[name]),
                            metadata={},
                            created_at=revoked_at,
                        )
                    )
            await migrations.upgrade(connection, "0029")
            declined_at = sa.column("declined_at", UTCDateTime())
            rows = await connection.execute(
                sa.select(invitations.c.token_hash, invitations.c.revoked_at, declined_at).select_from(invitations)
            )
            assert {row[0]: (row[1], row[2]) for row in rows} == {
                "declined": (None, closed["declined"]),
                "revoked": (closed["revoked"], None),
                "open": (None, None),
            }
            await connection.execute(
                invitations.insert().values(
                    id=uuid.uuid4(),
                    org_id=org_id,
                    email="declined@example.com",
                    role="member",
                    token_hash="again",
                    created_at=at,
                    expires_at=at + timedelta(days=7),
                )
            )
            await migrations.downgrade(connection, "0028")
            await connection.execute(invitations.delete().where(invitations.c.token_hash == "again"))
            rows = await connection.execute(sa.select(invitations.c.token_hash, invitations.c.revoked_at))
            assert {row[0]: row[1] for row in rows} == {
                "declined": closed["declined"],
                "revoked": closed["revoked"],
                "open": None,
            }
    finally:
        await engine.dispose()
