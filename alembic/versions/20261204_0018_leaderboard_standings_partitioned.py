"""leaderboard standings: one partition per snapshot on PostgreSQL

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-04 04:10:00.000000

A recompute wrote a snapshot's standings into one table, keeping its six indexes up to date row by
row, then deleted the stale snapshot's rows and vacuumed: most of its time. On PostgreSQL the table
is now partitioned by snapshot (`PARTITION BY LIST (snapshot_id)`): a recompute fills a bare table,
attaches it (the indexes built in bulk) and drops the stale partition whole. SQLite keeps the plain
table.

Standings are derived data: the existing ones and their snapshots are dropped, and the next
recompute (the scheduler's, within `LEADERBOARD_RECOMPUTE_MINUTES`) writes them again; until
then the boards answer as before the first computation.
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "leaderboard_standings"
METRICS = ("tokens", "cost", "active_days", "streak", "cache_efficiency")


def _create_table(*, partitioned: bool) -> None:
    options: dict[str, Any] = {"postgresql_partition_by": "LIST (snapshot_id)"} if partitioned else {}
    op.create_table(
        TABLE,
        sa.Column("snapshot_id", sa.Uuid(), nullable=False),
        sa.Column("period", sa.String(length=8, collation="C"), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("public", sa.Boolean(), nullable=False),
        sa.Column("tokens", sa.BigInteger(), nullable=False),
        sa.Column("cost", sa.BigInteger(), nullable=False),
        sa.Column("active_days", sa.Integer(), nullable=False),
        sa.Column("streak", sa.Integer(), nullable=False),
        sa.Column("cache_efficiency", sa.Float(), nullable=True),
        *(
            sa.Column(f"{metric}_{part}", sa.Integer(), nullable=True)
            for metric in METRICS
            for part in ("rank", "position")
        ),
        sa.PrimaryKeyConstraint("snapshot_id", "period", "user_id", name=op.f("pk_leaderboard_standings")),
        **options,
    )
    for metric in METRICS:
        where = sa.text(f"{metric}_position IS NOT NULL")
        op.create_index(
            op.f(f"ix_leaderboard_standings_{metric}"),
            TABLE,
            ["snapshot_id", "period", f"{metric}_position"],
            postgresql_where=where,
        )


def _replace(*, partitioned: bool) -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(sa.text("DELETE FROM leaderboard_snapshots"))
    op.drop_table(TABLE)  # with its partitions, when it has them
    _create_table(partitioned=partitioned)


def upgrade() -> None:
    _replace(partitioned=True)


def downgrade() -> None:
    _replace(partitioned=False)
