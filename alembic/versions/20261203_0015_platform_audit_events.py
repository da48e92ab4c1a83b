"""platform audit events: audit_events.org_id nullable

Revision ID: 0015
Revises: 0013
Create Date: 2026-12-03 18:40:00.000000

Superusers' platform-wide actions (a leaderboard exclusion) belong to no organization; they are
recorded in the same table with a null org_id, which no organization's audit log selects.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.alter_column("org_id", existing_type=sa.Uuid(), nullable=True)


def downgrade() -> None:
    # Platform events have no organization to keep them under: a downgrade drops them.
    op.execute(sa.text("DELETE FROM audit_events WHERE org_id IS NULL"))
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.alter_column("org_id", existing_type=sa.Uuid(), nullable=False)
