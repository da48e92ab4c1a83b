"""organizations: the plan billing put them on

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-04 04:00:00.000000

Null (every existing organization) is the deployment's `DEFAULT_PLAN`.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("organizations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("plan", sa.String(length=20), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("organizations", schema=None) as batch_op:
        batch_op.drop_column("plan")
