"""users disabled_at

Revision ID: 0025
Revises: 0024
Create Date: 2026-12-04 16:00:00.000000

A superuser may disable an account (`PATCH /admin/users/{id}`): `disabled_at` is when; null for
every existing account.

Never a table copy on SQLite (`recreate="never"`: SQLite adds and drops a plain column in place): a
copy of `users` would lose the trigger that deletes a user's usage records with it (migration 0008).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0025"
down_revision: str | None = "0024"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("users", schema=None, recreate="never") as batch_op:
        batch_op.add_column(sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("users", schema=None, recreate="never") as batch_op:
        batch_op.drop_column("disabled_at")
