"""usage: digests of applied sync batches; usage records leave the user with a trigger, not a foreign key

The foreign key from usage_records to users checked every inserted record against users (about
half the cost of COPYing a batch of records). Records still go with their user: a trigger on
users deletes them, and usage_daily keeps its foreign key, which every sync that writes records
also writes, so a sync racing an account deletion still waits for it or fails.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29 23:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TRIGGER = "usage_records_delete_with_user"


def upgrade() -> None:
    op.create_table(
        "usage_sync_batches",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_usage_sync_batches_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("user_id", "digest", name=op.f("pk_usage_sync_batches")),
    )
    with op.batch_alter_table("usage_records") as batch_op:
        batch_op.drop_constraint("fk_usage_records_user_id_users", type_="foreignkey")
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION usage_records_delete_with_user() RETURNS trigger LANGUAGE plpgsql AS $$ "
            "BEGIN DELETE FROM usage_records WHERE user_id = OLD.id; RETURN OLD; END $$"
        )
        op.execute(f"CREATE TRIGGER {TRIGGER} AFTER DELETE ON users FOR EACH ROW EXECUTE FUNCTION {TRIGGER}()")
    else:
        op.execute(
            "CREATE TRIGGER usage_records_delete_with_user AFTER DELETE ON users FOR EACH ROW "
            "BEGIN DELETE FROM usage_records WHERE user_id = OLD.id; END"
        )


def downgrade() -> None:
    op.execute(f"DROP TRIGGER {TRIGGER}" + (" ON users" if op.get_bind().dialect.name == "postgresql" else ""))
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP FUNCTION {TRIGGER}()")
    with op.batch_alter_table("usage_records") as batch_op:
        batch_op.create_foreign_key("fk_usage_records_user_id_users", "users", ["user_id"], ["id"], ondelete="CASCADE")
    op.drop_table("usage_sync_batches")
