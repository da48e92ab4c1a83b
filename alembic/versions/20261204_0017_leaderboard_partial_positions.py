"""leaderboard standings: position indexes hold ranked rows only; `period` in byte order

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-04 00:05:00.000000

A recompute inserts every standing of a snapshot at once, and keeping the six indexes up to date is
the largest part of it. The five position indexes now leave out the rows without a position (the
private profiles, two in five), which no page reads; and on PostgreSQL `period` compares byte by
byte ("C") instead of through the database's locale, in every index that starts with it.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "leaderboard_standings"
METRICS = ("tokens", "cost", "active_days", "streak", "cache_efficiency")


def _create_indexes(*, partial: bool) -> None:
    for metric in METRICS:
        where = sa.text(f"{metric}_position IS NOT NULL") if partial else None
        op.create_index(
            op.f(f"ix_leaderboard_standings_{metric}"),
            TABLE,
            ["snapshot_id", "period", f"{metric}_position"],
            postgresql_where=where,
            sqlite_where=where,
        )


def _drop_indexes() -> None:
    for metric in METRICS:
        op.drop_index(op.f(f"ix_leaderboard_standings_{metric}"), table_name=TABLE)


def upgrade() -> None:
    _drop_indexes()
    if op.get_bind().dialect.name == "postgresql":
        op.execute(sa.text(f'ALTER TABLE {TABLE} ALTER COLUMN period TYPE varchar(8) COLLATE "C"'))
    _create_indexes(partial=True)


def downgrade() -> None:
    _drop_indexes()
    if op.get_bind().dialect.name == "postgresql":
        op.execute(sa.text(f'ALTER TABLE {TABLE} ALTER COLUMN period TYPE varchar(8) COLLATE "default"'))
    _create_indexes(partial=False)
