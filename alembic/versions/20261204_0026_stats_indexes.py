"""indexes for the superusers' statistics

Revision ID: 0026
Revises: 0025
Create Date: 2026-12-04 17:00:00.000000

`GET /admin/stats` reads a range of days from tables no index served by date: accounts created
per day (`users.created_at`), sync batches per day and users who synced lately
(`usage_sync_batches`, never pruned: created_at with user_id, so the index alone answers), scans
queued per day (the existing indexes lead with the organization or repository; this one carries
the columns the figures read, so they come from the index alone), usage per day
(`usage_daily.day`; its primary key leads with the user); and unresolved findings per severity
across every repository (`findings.status, severity`).

Plain CREATE INDEX on both dialects (batch mode never copies a table here: `recreate="never"`, so
the trigger on `users` from migration 0008 stays).
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0026"
down_revision: str | None = "0025"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = (
    ("users", "ix_users_created_at", ["created_at"]),
    ("usage_sync_batches", "ix_usage_sync_batches_created_at_user_id", ["created_at", "user_id"]),
    ("scans", "ix_scans_queued_at_stats", ["queued_at", "status", "duration_ms", "engine_calls", "cache_hits"]),
    ("findings", "ix_findings_status_severity", ["status", "severity"]),
    ("usage_daily", "ix_usage_daily_day", ["day"]),
)


def upgrade() -> None:
    for table, name, columns in INDEXES:
        with op.batch_alter_table(table, schema=None, recreate="never") as batch_op:
            batch_op.create_index(name, columns, unique=False)


def downgrade() -> None:
    for table, name, _ in reversed(INDEXES):
        with op.batch_alter_table(table, schema=None, recreate="never") as batch_op:
            batch_op.drop_index(name)
