"""leaderboard community benchmarks: snapshots, stats, shares and members

Revision ID: 0014
Revises: 0015
Create Date: 2026-12-03 18:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SNAPSHOTS = "leaderboard_benchmark_snapshots"
METRICS = ("tokens_per_active_day", "cost_per_active_day", "active_days", "streak", "cache_efficiency")


def _snapshot_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["snapshot_id"], [f"{SNAPSHOTS}.id"], name=op.f(f"fk_{table}_snapshot_id_{SNAPSHOTS}"), ondelete="CASCADE"
    )


def upgrade() -> None:
    op.create_table(
        SNAPSHOTS,
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("today", sa.Date(), nullable=False),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.Column("community", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{SNAPSHOTS}")),
    )
    op.create_table(
        "leaderboard_benchmark_stats",
        sa.Column("snapshot_id", sa.Uuid(), nullable=False),
        sa.Column("range", sa.String(length=8), nullable=False),
        sa.Column("metric", sa.String(length=32), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        *(sa.Column(name, sa.Float(), nullable=False) for name in ("mean", "median", "p75", "p90", "p99")),
        _snapshot_fk("leaderboard_benchmark_stats"),
        sa.PrimaryKeyConstraint("snapshot_id", "range", "metric", name=op.f("pk_leaderboard_benchmark_stats")),
    )
    op.create_table(
        "leaderboard_benchmark_shares",
        sa.Column("snapshot_id", sa.Uuid(), nullable=False),
        sa.Column("range", sa.String(length=8), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("tokens", sa.BigInteger(), nullable=False),
        sa.Column("cost", sa.BigInteger(), nullable=False),
        _snapshot_fk("leaderboard_benchmark_shares"),
        sa.PrimaryKeyConstraint("snapshot_id", "range", "kind", "name", name=op.f("pk_leaderboard_benchmark_shares")),
    )
    op.create_table(
        "leaderboard_benchmark_members",
        sa.Column("snapshot_id", sa.Uuid(), nullable=False),
        sa.Column("range", sa.String(length=8), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("standing", sa.String(length=8), nullable=False),
        sa.Column("tokens_per_active_day", sa.Float(), nullable=False),
        sa.Column("cost_per_active_day", sa.Float(), nullable=False),
        sa.Column("active_days", sa.Integer(), nullable=False),
        sa.Column("streak", sa.Integer(), nullable=False),
        sa.Column("cache_efficiency", sa.Float(), nullable=True),
        *(sa.Column(f"{metric}_percentile", sa.Float(), nullable=True) for metric in METRICS),
        _snapshot_fk("leaderboard_benchmark_members"),
        sa.PrimaryKeyConstraint("snapshot_id", "range", "user_id", name=op.f("pk_leaderboard_benchmark_members")),
    )


def downgrade() -> None:
    op.drop_table("leaderboard_benchmark_members")
    op.drop_table("leaderboard_benchmark_shares")
    op.drop_table("leaderboard_benchmark_stats")
    op.drop_table(SNAPSHOTS)
