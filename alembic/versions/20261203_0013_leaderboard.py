"""leaderboard snapshots, standings and exclusions

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03 18:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

METRICS = ("tokens", "cost", "active_days", "streak", "cache_efficiency")


def upgrade() -> None:
    op.create_table(
        "leaderboard_snapshots",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("today", sa.Date(), nullable=False),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.Column("totals", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_leaderboard_snapshots")),
    )
    rank_columns = []
    for metric in METRICS:
        rank_columns.append(sa.Column(f"{metric}_rank", sa.Integer(), nullable=True))
        rank_columns.append(sa.Column(f"{metric}_position", sa.Integer(), nullable=True))
    op.create_table(
        "leaderboard_standings",
        sa.Column("snapshot_id", sa.Uuid(), nullable=False),
        sa.Column("period", sa.String(length=8), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("public", sa.Boolean(), nullable=False),
        sa.Column("tokens", sa.BigInteger(), nullable=False),
        sa.Column("cost", sa.BigInteger(), nullable=False),
        sa.Column("active_days", sa.Integer(), nullable=False),
        sa.Column("streak", sa.Integer(), nullable=False),
        sa.Column("cache_efficiency", sa.Float(), nullable=True),
        *rank_columns,
        sa.ForeignKeyConstraint(
            ["snapshot_id"],
            ["leaderboard_snapshots.id"],
            name=op.f("fk_leaderboard_standings_snapshot_id_leaderboard_snapshots"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("snapshot_id", "period", "user_id", name=op.f("pk_leaderboard_standings")),
    )
    for metric in METRICS:
        op.create_index(
            f"ix_leaderboard_standings_{metric}",
            "leaderboard_standings",
            ["snapshot_id", "period", f"{metric}_position"],
        )
    op.create_table(
        "leaderboard_exclusions",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=True),
        sa.Column("excluded_by", sa.Uuid(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_leaderboard_exclusions_user_id_users"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["excluded_by"], ["users.id"], name=op.f("fk_leaderboard_exclusions_excluded_by_users"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_leaderboard_exclusions")),
    )


def downgrade() -> None:
    op.drop_table("leaderboard_exclusions")
    for metric in METRICS:
        op.drop_index(f"ix_leaderboard_standings_{metric}", table_name="leaderboard_standings")
    op.drop_table("leaderboard_standings")
    op.drop_table("leaderboard_snapshots")
