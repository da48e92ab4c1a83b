"""repository clone credentials bound to the repository they were granted for

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 16:00:00

Until now a private GitHub repository was cloned with its connector's token (`created_by`),
whatever its URL had been changed to since. The credential becomes explicit and bound: existing
GitHub imports (they still carry GitHub's id, which changing the URL cleared) keep their
connector's credential, bound to their current id and canonical URL; anything else has none.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("repositories", schema=None) as batch_op:
        batch_op.add_column(sa.Column("credential_user_id", sa.Uuid(), nullable=True))
        batch_op.add_column(sa.Column("credential_external_id", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("credential_canonical_url", sa.String(length=2048), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_repositories_credential_user_id_users"),
            "users",
            ["credential_user_id"],
            ["id"],
            ondelete="SET NULL",
        )
    op.execute(
        "UPDATE repositories SET credential_user_id = created_by, credential_external_id = external_id, "
        "credential_canonical_url = canonical_url "
        "WHERE provider = 'github' AND external_id IS NOT NULL AND created_by IS NOT NULL"
    )


def downgrade() -> None:
    with op.batch_alter_table("repositories", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_repositories_credential_user_id_users"), type_="foreignkey")
        batch_op.drop_column("credential_canonical_url")
        batch_op.drop_column("credential_external_id")
        batch_op.drop_column("credential_user_id")
