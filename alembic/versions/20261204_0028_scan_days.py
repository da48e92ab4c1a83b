"""scans: scans per UTC day and status (scan_days), backfilled; two indexes nothing reads dropped

Revision ID: 0028
Revises: 0027
Create Date: 2026-12-04 21:00:00.000000

`GET /admin/stats` grouped every scan of its range by UTC day of queueing and status (~200,000
for a year of 550 scans a day: ~100 ms on PostgreSQL, ~200 ms on SQLite, on every call).
`scan_days` holds those counts per (day, status), with the sums the statistics read alongside
(engine calls, cache hits, scans with a duration), kept in step by every write of a scan
(`codepulse.scans.models.ScanDayCount`). Backfilled here, in the migration's transaction, with one
INSERT ... SELECT ... GROUP BY.

Dropped, as nothing reads by them any more:
- `ix_scans_queued_at_stats` (0026) served that grouping, and nothing else (lists of scans use
  the indexes by organization or repository; the duration percentiles
  `ix_scans_duration_ms_queued_at`). Every status change and outcome of a scan rewrote it.
- `ix_usage_daily_day` (0026) served the statistics' sums of usage per day, read from
  `usage_platform_daily` since 0027. The other reads of usage_daily by day either lead with the
  user (dashboards, organization boards: the primary key) or read most of the table (the
  leaderboard's recompute, repricing since a day: a scan of the table, as before 0026), and every
  sync that adds a day paid for its upkeep.

Plain CREATE/DROP INDEX on both dialects (`recreate="never"`: batch mode never copies a table,
so the trigger on `users` from migration 0008 stays).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0028"
down_revision: str | None = "0027"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DROPPED = (
    ("scans", "ix_scans_queued_at_stats", ["queued_at", "status", "duration_ms", "engine_calls", "cache_hits"]),
    ("usage_daily", "ix_usage_daily_day", ["day"]),
)


def upgrade() -> None:
    op.create_table(
        "scan_days",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        *(
            sa.Column(name, sa.BigInteger(), nullable=False)
            for name in ("scans", "engine_calls", "cache_hits", "timed")
        ),
        sa.PrimaryKeyConstraint("day", "status", name=op.f("pk_scan_days")),
    )
    # The UTC date a scan was queued (SQLite stores UTC timestamps as text without an offset).
    utc_day = (
        "CAST(queued_at AT TIME ZONE 'UTC' AS DATE)"
        if op.get_bind().dialect.name == "postgresql"
        else "date(queued_at)"
    )
    op.execute(
        "INSERT INTO scan_days (day, status, scans, engine_calls, cache_hits, timed) "  # noqa: S608 - names only
        f"SELECT {utc_day}, status, count(*), coalesce(sum(engine_calls), 0), coalesce(sum(cache_hits), 0), "
        f"count(duration_ms) FROM scans GROUP BY {utc_day}, status"
    )
    for table, name, _ in DROPPED:
        with op.batch_alter_table(table, schema=None, recreate="never") as batch_op:
            batch_op.drop_index(name)


def downgrade() -> None:
    for table, name, columns in reversed(DROPPED):
        with op.batch_alter_table(table, schema=None, recreate="never") as batch_op:
            batch_op.create_index(name, columns, unique=False)
    op.drop_table("scan_days")
