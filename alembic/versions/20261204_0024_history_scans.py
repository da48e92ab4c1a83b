"""history scans

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-04 15:30:00.000000

A scan's mode (`head`: the files of one commit; `history`: every file version reachable from it),
and on tracked findings and on what each scan saw, the commit that introduced a finding (sha,
author, author date; null when unknown) and whether the scanned commit still has it (`at_head`).
Existing rows: `head` scans, findings at the head; the server defaults are for them and for
inserts that leave the columns out.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0024"
down_revision: str | None = "0023"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("findings", "scan_findings")


def upgrade() -> None:
    with op.batch_alter_table("scans", schema=None) as batch_op:
        batch_op.add_column(sa.Column("mode", sa.String(length=10), nullable=False, server_default="head"))
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("introduced_commit_sha", sa.String(length=64), nullable=True))
            batch_op.add_column(sa.Column("introduced_by", sa.String(length=255), nullable=True))
            batch_op.add_column(sa.Column("introduced_at", sa.DateTime(timezone=True), nullable=True))
            batch_op.add_column(sa.Column("at_head", sa.Boolean(), nullable=False, server_default=sa.true()))


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("at_head")
            batch_op.drop_column("introduced_at")
            batch_op.drop_column("introduced_by")
            batch_op.drop_column("introduced_commit_sha")
    with op.batch_alter_table("scans", schema=None) as batch_op:
        batch_op.drop_column("mode")
