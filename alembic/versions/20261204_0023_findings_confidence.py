"""findings confidence

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-04 12:00:00.000000

How sure the engine is of a finding (high, medium, low), on tracked findings and on what each
scan saw. Existing rows become `medium` (the default of findings recorded before it existed);
the server default is only for them, new rows always get a value from the application.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0023"
down_revision: str | None = "0022"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("findings", "scan_findings")


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("confidence", sa.String(length=10), nullable=False, server_default="medium"))
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.alter_column("confidence", existing_type=sa.String(length=10), server_default=None)


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("confidence")
