"""usage: the platform's daily sums (usage_platform_daily, usage_platform_syncs), backfilled

Revision ID: 0027
Revises: 0026
Create Date: 2026-12-04 18:00:00.000000

`GET /admin/stats` summed a range of `usage_daily` (a row per user, day, source and model: ~1
million a year for 10,000 users) and counted `usage_sync_batches` per UTC day (~600,000) on every
call. `usage_platform_daily` holds those sums per (day, source, model), a few dozen rows a day,
and `usage_platform_syncs` the batches per UTC day, kept in step by every writer of the two
tables (`codepulse.usage.models.UsagePlatformDaily`). Backfilled here, in the migration's
transaction, with an INSERT ... SELECT ... GROUP BY each (seconds for a million rows).

And `ix_scans_duration_ms_queued_at`: the median and p95 duration of a window of scans are read
along it (`db.ordered_percentiles`: two values per fraction at their offsets) instead of ranking
every scan of the window (SQLite's window functions took 0.75 s for a year of 550 scans a day).

And usage_sync_batches' index by time (0026; syncs per day now come from usage_platform_syncs)
becomes one by user and time: whether an account synced lately is one probe of it per account,
instead of collecting every batch of the last 30 days (100,000 of them).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0027"
down_revision: str | None = "0026"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SUMS = (
    "input_tokens",
    "output_tokens",
    "cache_creation_5m_tokens",
    "cache_creation_1h_tokens",
    "cache_read_tokens",
    "reasoning_tokens",
    "cost_nanousd",
    "records",
    "unpriced_records",
)


def upgrade() -> None:
    op.create_table(
        "usage_platform_daily",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        *(sa.Column(name, sa.BigInteger(), nullable=False) for name in SUMS),
        sa.PrimaryKeyConstraint("day", "source", "model", name=op.f("pk_usage_platform_daily")),
    )
    op.create_table(
        "usage_platform_syncs",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("syncs", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("day", name=op.f("pk_usage_platform_syncs")),
    )
    columns = ", ".join(SUMS)
    sums = ", ".join(f"sum({name})" for name in SUMS)
    op.execute(
        f"INSERT INTO usage_platform_daily (day, source, model, {columns}) "  # noqa: S608 - names only
        f"SELECT day, source, model, {sums} FROM usage_daily GROUP BY day, source, model"
    )
    # The UTC date of a batch (SQLite stores UTC timestamps as text without an offset).
    utc_day = (
        "CAST(created_at AT TIME ZONE 'UTC' AS DATE)"
        if op.get_bind().dialect.name == "postgresql"
        else "date(created_at)"
    )
    op.execute(
        f"INSERT INTO usage_platform_syncs (day, syncs) "  # noqa: S608 - names only
        f"SELECT {utc_day}, count(*) FROM usage_sync_batches GROUP BY {utc_day}"
    )

    with op.batch_alter_table("scans", schema=None, recreate="never") as batch_op:
        batch_op.create_index("ix_scans_duration_ms_queued_at", ["duration_ms", "queued_at"], unique=False)
    with op.batch_alter_table("usage_sync_batches", schema=None, recreate="never") as batch_op:
        batch_op.drop_index("ix_usage_sync_batches_created_at_user_id")
        batch_op.create_index("ix_usage_sync_batches_user_id_created_at", ["user_id", "created_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("usage_sync_batches", schema=None, recreate="never") as batch_op:
        batch_op.drop_index("ix_usage_sync_batches_user_id_created_at")
        batch_op.create_index("ix_usage_sync_batches_created_at_user_id", ["created_at", "user_id"], unique=False)
    with op.batch_alter_table("scans", schema=None, recreate="never") as batch_op:
        batch_op.drop_index("ix_scans_duration_ms_queued_at")
    op.drop_table("usage_platform_syncs")
    op.drop_table("usage_platform_daily")
